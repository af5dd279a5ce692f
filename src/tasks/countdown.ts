/**
 * Countdown: reach a target from given numbers with + - * / and brackets, each number at most
 * once. The seeded generator (difficulty: how many numbers, their range, the target range; APR's
 * distribution is the "apr" preset), the train/test split by problem hash (splits.ts), the
 * verifier that grades a boxed expression (exact rational arithmetic, multiset check: never a
 * comparison with the target number, which a policy would learn to box), and the reference
 * traces in sequential and NPR parallel form from countdown-search.ts.
 * Knows strings and the Rng; nothing about models.
 */
import { ConfigError, invariant } from "../util/index.ts";
import { Rng } from "../util/index.ts";
import {
  DEFAULT_COUNTDOWN_SEARCH,
  VALUE_CAP,
  countdownMoves,
  parallelTrace,
  sequentialTrace,
  type CountdownSearchOptions,
  type CountdownTrace,
} from "./countdown-search.ts";
import { lastBoxed } from "./extract.ts";
import { exampleSeed, MAX_TEST_EXAMPLES, testProblems, trainProblem, type Split, type SplitSource } from "./splits.ts";
import type { Example, Outcome, PromptStyle, Task } from "./task.ts";
import { syntheticPrompt } from "./task.ts";

export interface CountdownDifficulty {
  /** Numbers shown, all of them used by the hidden construction. */
  count: number;
  /** Numbers are drawn from 1..maxNumber (with repetition). */
  maxNumber: number;
  /** Targets lie in minTarget..maxTarget. */
  minTarget: number;
  maxTarget: number;
}

/** `apr`: APR's and Stream of Search's distribution (4 numbers in 1-99, targets 10-100). */
export const COUNTDOWN_PRESETS: Readonly<Record<string, Readonly<CountdownDifficulty>>> = Object.freeze({
  small: Object.freeze({ count: 3, maxNumber: 20, minTarget: 5, maxTarget: 60 }),
  apr: Object.freeze({ count: 4, maxNumber: 99, minTarget: 10, maxTarget: 100 }),
  large: Object.freeze({ count: 5, maxNumber: 99, minTarget: 10, maxTarget: 500 }),
});

/** Valid ranges of each knob (inclusive). Values above VALUE_CAP would not be single tokens. */
export const COUNTDOWN_LIMITS = Object.freeze({
  count: [3, 6] as const,
  maxNumber: [2, VALUE_CAP] as const,
  minTarget: [1, VALUE_CAP] as const,
  maxTarget: [1, VALUE_CAP] as const,
});

export interface CountdownOptions extends Partial<CountdownDifficulty> {
  /** A preset to start from (default "apr"); the other fields override it. */
  preset?: string;
  /** Default "train". The test split is one fixed list; the seed does not change it. */
  split?: Split;
  search?: Partial<CountdownSearchOptions>;
}

export interface CountdownExample extends Example {
  numbers: number[];
  target: number;
}

/** A difficulty from a preset plus overrides; a ConfigError names the first knob out of range. */
export function countdownDifficulty(opts: CountdownOptions = {}): CountdownDifficulty {
  const preset = opts.preset ?? "apr";
  const base = COUNTDOWN_PRESETS[preset];
  if (!base) {
    throw new ConfigError(`countdown: unknown preset "${preset}"`, {
      code: "bad_preset",
      param: "preset",
      hint: `one of ${Object.keys(COUNTDOWN_PRESETS).join(", ")}`,
    });
  }
  const d: CountdownDifficulty = {
    count: opts.count ?? base.count,
    maxNumber: opts.maxNumber ?? base.maxNumber,
    minTarget: opts.minTarget ?? base.minTarget,
    maxTarget: opts.maxTarget ?? base.maxTarget,
  };
  for (const key of Object.keys(COUNTDOWN_LIMITS) as (keyof CountdownDifficulty)[]) {
    const [lo, hi] = COUNTDOWN_LIMITS[key];
    const v = d[key];
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new ConfigError(`countdown: ${key} must be an integer in ${lo}..${hi}, got ${v}`, { code: "bad_difficulty", param: key });
    }
  }
  if (d.minTarget > d.maxTarget) {
    throw new ConfigError(`countdown: minTarget ${d.minTarget} is above maxTarget ${d.maxTarget}`, {
      code: "bad_difficulty",
      param: "minTarget",
    });
  }
  return d;
}

/** One problem: numbers, target and the construction that made the target (a valid answer). */
interface Problem {
  numbers: number[];
  target: number;
  construction: string;
}

const ATTEMPTS = 2000;

/** Draws problems of a difficulty: random numbers combined in random order with random valid operations. */
function problemSource(d: CountdownDifficulty): SplitSource<Problem> {
  return {
    drawKey(rng: Rng): Problem {
      for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
        const numbers = Array.from({ length: d.count }, () => 1 + rng.int(d.maxNumber));
        const vals = rng.shuffle(numbers.map((v) => ({ v, text: String(v), atom: true })));
        let ok = true;
        while (vals.length > 1 && ok) {
          const x = vals.pop()!;
          const y = vals.pop()!;
          const [a, b] = x.v >= y.v ? [x, y] : [y, x];
          // The same moves the search may take (same VALUE_CAP); their order does not matter here.
          const moves = countdownMoves([a.v, b.v], 0);
          if (moves.length === 0) ok = false;
          else {
            const m = moves[rng.int(moves.length)]!;
            const wrap = (e: typeof a) => (e.atom ? e.text : `(${e.text})`);
            vals.push({ v: m.r, text: `${wrap(a)}${m.op}${wrap(b)}`, atom: false });
          }
        }
        if (!ok) continue;
        const target = vals[0]!.v;
        if (target < d.minTarget || target > d.maxTarget || numbers.includes(target)) continue;
        if (countdownMoves(numbers, target).length < 2) continue; // the parallel form needs 2 first moves
        return { numbers, target, construction: vals[0]!.text };
      }
      throw new ConfigError(
        `countdown: no problem with ${d.count} numbers in 1..${d.maxNumber} reaches a target in ${d.minTarget}..${d.maxTarget} (${ATTEMPTS} tries)`,
        {
          code: "bad_difficulty",
          param: "maxTarget",
          hint: "widen the target range or the number range",
        },
      );
    },
    canonical: (p) => `countdown:${[...p.numbers].sort((x, y) => x - y).join(" ")}:${p.target}`,
    complete: (p) => p,
    identity: (p) => `${[...p.numbers].sort((x, y) => x - y).join(" ")}:${p.target}`,
  };
}

export class CountdownTask implements Task<CountdownExample> {
  readonly name = "countdown";
  readonly size: number;
  readonly split: Split;
  readonly difficulty: CountdownDifficulty;
  readonly search: CountdownSearchOptions;
  private readonly seed: number;
  private readonly source: SplitSource<Problem>;
  private testList: Problem[] | null = null;

  /**
   * `size` examples of stream `seed` (train split), or the first `size` of the fixed test list
   * (test split; the seed is not used). Example i is a pure function of (seed, i, difficulty).
   */
  constructor(size: number, seed: number, opts: CountdownOptions = {}) {
    this.size = size;
    this.seed = seed;
    this.split = opts.split ?? "train";
    this.difficulty = countdownDifficulty(opts);
    this.search = { ...DEFAULT_COUNTDOWN_SEARCH, ...opts.search };
    this.source = problemSource(this.difficulty);
    if (this.split === "test" && size > MAX_TEST_EXAMPLES) {
      throw new ConfigError(`countdown: the test split holds at most ${MAX_TEST_EXAMPLES} problems, ${size} asked`, {
        code: "too_many",
        param: "n",
      });
    }
  }

  get(i: number): CountdownExample {
    invariant(Number.isInteger(i) && i >= 0 && i < this.size, () => `CountdownTask.get(${i}) outside 0..${this.size - 1}`);
    let p: Problem;
    if (this.split === "test") {
      this.testList ??= testProblems(this.source, this.size, "countdown test split");
      p = this.testList[i]!;
    } else {
      p = trainProblem(this.source, this.seed, i, "countdown");
    }
    const id = this.split === "test" ? `countdown-test-${i}` : `countdown-${this.seed}-${i}`;
    return { id, numbers: p.numbers, target: p.target, problem: countdownProblemText(p.numbers, p.target), answer: p.construction };
  }

  /** The user message: the problem and the synthetic NPR instruction (style "npr", the default). */
  renderPrompt(ex: CountdownExample, style: PromptStyle = "npr"): string {
    return syntheticPrompt(ex.problem, style);
  }

  evaluate(ex: CountdownExample, text: string): Outcome {
    return evaluateCountdown(ex, text);
  }

  /** The sequential reference trace (a bounded depth-first search; may fail). */
  sequentialTrace(ex: CountdownExample): CountdownTrace {
    return sequentialTrace(ex.numbers, ex.target, this.search);
  }

  /** The parallel reference trace; `planSeed` picks the number of plans (2-5). */
  parallelTrace(ex: CountdownExample, planSeed = 0): CountdownTrace {
    const plans = 2 + new Rng(exampleSeed(planSeed, ex.target)).int(4);
    return parallelTrace(ex.numbers, ex.target, plans, this.search);
  }

  sequentialSolution(ex: CountdownExample): string {
    return this.sequentialTrace(ex).text;
  }

  parallelSolution(ex: CountdownExample, planSeed = 0): string {
    return this.parallelTrace(ex, planSeed).text;
  }
}

/**
 * Grades a response: its last non-empty \boxed{} must be an expression over the given numbers
 * (each at most once) whose value is the target. No box at all is malformed; `\boxed{84}` is
 * graded wrong (84 is not a given number), so the reward cannot be had by boxing the target.
 */
export function evaluateCountdown(ex: Pick<CountdownExample, "numbers" | "target">, text: string): Outcome {
  const expr = lastBoxed(text);
  if (expr === null) return { kind: "malformed", why: "no \\boxed{} expression" };
  const v = verifyCountdown(ex.numbers, ex.target, expr);
  return { kind: "graded", correct: v.ok, reward: v.ok ? 1 : 0, extracted: expr, detail: v.ok ? undefined : v.why };
}

/** "Make 84 from 64 18 28 9 with + - * /, each number at most once." */
export function countdownProblemText(numbers: readonly number[], target: number): string {
  return `Make ${target} from ${numbers.join(" ")} with + - * /, each number at most once.`;
}

/** Longest expression the verifier reads (a real answer has at most 6 numbers). */
const MAX_EXPRESSION_CHARS = 200;

/** Exact check of an expression: value equals target, numbers used at most as often as given. */
export function verifyCountdown(numbers: readonly number[], target: number, expr: string): { ok: true } | { ok: false; why: string } {
  if (expr.length > MAX_EXPRESSION_CHARS) return { ok: false, why: `expression longer than ${MAX_EXPRESSION_CHARS} characters` };
  const text = expr
    .replace(/\\times|\\cdot|×/g, "*")
    .replace(/\\div|÷/g, "/")
    .replace(/\\left|\\right/g, "")
    .replace(/=.*$/, "")
    .trim();
  const toks = text.match(/\d+|[-+*/()]|\S/g) ?? [];
  const avail = new Map<number, number>();
  for (const n of numbers) avail.set(n, (avail.get(n) ?? 0) + 1);
  let p = 0;
  // Values are exact rationals [num, den] so 7 / 2 * 2 is 7, not 6.999.
  type Q = [bigint, bigint];
  const norm = ([n, d]: Q): Q => {
    if (d === 0n) throw new Error("division by zero");
    const g = gcd(n < 0n ? -n : n, d < 0n ? -d : d) || 1n;
    return d < 0n ? [-n / g, -d / g] : [n / g, d / g];
  };
  const sum = (): Q => {
    let v = product();
    while (toks[p] === "+" || toks[p] === "-") {
      const op = toks[p++];
      const w = product();
      v = norm(op === "+" ? [v[0] * w[1] + w[0] * v[1], v[1] * w[1]] : [v[0] * w[1] - w[0] * v[1], v[1] * w[1]]);
    }
    return v;
  };
  const product = (): Q => {
    let v = atom();
    while (toks[p] === "*" || toks[p] === "/") {
      const op = toks[p++];
      const w = atom();
      v = norm(op === "*" ? [v[0] * w[0], v[1] * w[1]] : [v[0] * w[1], v[1] * w[0]]);
    }
    return v;
  };
  const atom = (): Q => {
    const t = toks[p++];
    if (t === "(") {
      const v = sum();
      if (toks[p++] !== ")") throw new Error("unbalanced brackets");
      return v;
    }
    if (t !== undefined && /^\d+$/.test(t)) {
      // Counted as it is read, so an expression can never hold more numbers than were given.
      const n = Number(t);
      const left = avail.get(n) ?? 0;
      if (left === 0) throw new Unavailable(n);
      avail.set(n, left - 1);
      return [BigInt(t), 1n];
    }
    throw new Error(`unexpected ${t === undefined ? "end" : `"${t}"`}`);
  };
  let value: Q;
  try {
    value = sum();
    if (p !== toks.length) throw new Error(`unexpected "${toks[p]}"`);
  } catch (err) {
    if (err instanceof Unavailable) return { ok: false, why: `${err.n} is not available (or used too often)` };
    return { ok: false, why: `cannot parse "${expr}": ${(err as Error).message}` };
  }
  if (value[1] !== 1n || value[0] !== BigInt(target))
    return { ok: false, why: `value is ${value[0]}${value[1] === 1n ? "" : `/${value[1]}`}, not ${target}` };
  return { ok: true };
}

class Unavailable extends Error {
  readonly n: number;
  constructor(n: number) {
    super(`${n} is not available`);
    this.n = n;
  }
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}
