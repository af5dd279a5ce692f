/**
 * Countdown: reach a target from given numbers with + - * / and brackets, each number used at most
 * once. Seeded generator (difficulty knobs: how many numbers, how many of them the construction
 * uses, their range), an exact verifier (rational arithmetic, multiset check), a solver, and
 * reference solutions in sequential form and in NPR parallel form (one plan per candidate first
 * operation; the takeaway keeps the one that reaches the target).
 * Knows strings and the Rng; nothing about models.
 */
import { Rng } from "../util/rng.ts";
import { lastBoxed } from "./extract.ts";
import type { Example, Outcome, PromptStyle, Task } from "./task.ts";
import { withInstruction } from "./task.ts";

export interface CountdownOptions {
  /** Numbers shown (default 4). */
  count?: number;
  /** Numbers the hidden construction uses, <= count (default count). */
  uses?: number;
  /** Numbers are drawn from 1..maxNumber (default 25). */
  maxNumber?: number;
}

export interface CountdownExample extends Example {
  numbers: number[];
  target: number;
}

/** One step of a solution: a op b = result. */
interface Step {
  a: number;
  op: string;
  b: number;
  r: number;
}

function apply(a: number, op: string, b: number): number | null {
  if (op === "+") return a + b;
  if (op === "-") return a - b > 0 ? a - b : null; // positive intermediates only, as the game
  if (op === "*") return a * b;
  if (op === "/") return b !== 0 && a % b === 0 ? a / b : null;
  return null;
}

/** Depth-first search for steps reaching `target` from `nums`; null when none exists. */
export function solveCountdown(nums: readonly number[], target: number, budget = { nodes: 200000 }): Step[] | null {
  if (nums.includes(target)) return [];
  if (nums.length < 2 || budget.nodes-- <= 0) return null;
  for (let i = 0; i < nums.length; i++) {
    for (let j = 0; j < nums.length; j++) {
      if (i === j) continue;
      for (const op of ["+", "-", "*", "/"]) {
        if ((op === "+" || op === "*") && j < i) continue; // commutative: once
        const r = apply(nums[i]!, op, nums[j]!);
        if (r === null) continue;
        const rest = nums.filter((_, k) => k !== i && k !== j);
        const sub = solveCountdown([...rest, r], target, budget);
        if (sub) return [{ a: nums[i]!, op, b: nums[j]!, r }, ...sub];
      }
    }
  }
  return null;
}

/** Builds an expression string from solution steps ("(3 + 5) * 4"). */
function stepsToExpression(numbers: readonly number[], steps: readonly Step[]): string {
  const pool: { v: number; text: string; atom: boolean }[] = numbers.map((v) => ({ v, text: String(v), atom: true }));
  const take = (v: number) => {
    const i = pool.findIndex((p) => p.v === v);
    return pool.splice(i, 1)[0]!;
  };
  let last = pool[0]!;
  for (const s of steps) {
    const a = take(s.a);
    const b = take(s.b);
    const wrap = (x: typeof a) => (x.atom ? x.text : `(${x.text})`);
    last = { v: s.r, text: `${wrap(a)} ${s.op === "*" ? "*" : s.op} ${wrap(b)}`, atom: false };
    pool.push(last);
  }
  return last.text;
}

export class CountdownTask implements Task<CountdownExample> {
  readonly name = "countdown";
  readonly size: number;
  private readonly seed: number;
  private readonly count: number;
  private readonly uses: number;
  private readonly maxNumber: number;

  constructor(size: number, seed: number, opts: CountdownOptions = {}) {
    this.size = size;
    this.seed = seed;
    this.count = opts.count ?? 4;
    this.uses = Math.min(opts.uses ?? this.count, this.count);
    this.maxNumber = opts.maxNumber ?? 25;
  }

  /** Example i is a pure function of (seed, i, options). */
  get(i: number): CountdownExample {
    const rng = new Rng(this.seed * 1000003 + i);
    for (;;) {
      const numbers = Array.from({ length: this.count }, () => 1 + rng.int(this.maxNumber));
      // Combine `uses` of them in random order with random operations, keeping integers > 0.
      let vals = rng.shuffle([...numbers]).slice(0, this.uses);
      let ok = true;
      while (vals.length > 1 && ok) {
        const a = vals.pop()!;
        const b = vals.pop()!;
        const ops = ["+", "-", "*", "/"].filter((op) => apply(a, op, b) !== null);
        const op = ops[rng.int(ops.length)]!;
        vals.push(apply(a, op, b)!);
      }
      const target = vals[0]!;
      ok = target > 0 && target <= 1000 && !numbers.includes(target);
      if (!ok) continue;
      return { id: `countdown-${this.seed}-${i}`, numbers, target, problem: this.problemText(numbers, target), answer: String(target) };
    }
  }

  private problemText(numbers: number[], target: number): string {
    return `Using the numbers ${numbers.join(", ")}, make ${target}. You may use +, -, * and / with brackets; each number at most once. Give the expression in \\boxed{}.`;
  }

  renderPrompt(ex: CountdownExample, style: PromptStyle = "cot"): string {
    return withInstruction(ex.problem, style);
  }

  evaluate(ex: CountdownExample, text: string): Outcome {
    const expr = lastBoxed(text);
    if (expr === null) return { kind: "malformed", why: "no \\boxed{} expression" };
    const v = verifyCountdown(ex.numbers, ex.target, expr);
    return { kind: "graded", correct: v.ok, reward: v.ok ? 1 : 0, extracted: expr, detail: v.ok ? undefined : v.why };
  }

  /** Reference solution: numbered steps, then the boxed expression. */
  sequentialSolution(ex: CountdownExample): string {
    const steps = solveCountdown(ex.numbers, ex.target)!;
    const lines = steps.map((s, k) => `Step ${k + 1}: ${s.a} ${s.op} ${s.b} = ${s.r}.`);
    return `We need ${ex.target} from ${ex.numbers.join(", ")}.\n${lines.join("\n")}\nSo the expression is \\boxed{${stepsToExpression(ex.numbers, steps)}}.`;
  }

  /**
   * NPR parallel form: up to 3 plans, each a different first operation; each step searches on from
   * it independently; the takeaway keeps one that works. The true route is always among the plans.
   */
  parallelSolution(ex: CountdownExample, seed = 0): string {
    const steps = solveCountdown(ex.numbers, ex.target)!;
    const rng = new Rng(seed);
    const firsts: Step[] = steps.length > 0 ? [steps[0]!] : [];
    const cands: Step[] = [];
    ex.numbers.forEach((a, i) => ex.numbers.forEach((b, j) => {
      if (i === j) return;
      for (const op of ["+", "*", "-"]) {
        const r = apply(a, op, b);
        if (r !== null && !(op !== "-" && j < i)) cands.push({ a, op, b, r });
      }
    }));
    for (const c of rng.shuffle(cands)) {
      if (firsts.length >= 3) break;
      if (!firsts.some((f) => f.a === c.a && f.b === c.b && f.op === c.op)) firsts.push(c);
    }
    rng.shuffle(firsts);
    const plans = firsts.map((f, k) => `<plan>${k + 1}: Start with ${f.a} ${f.op} ${f.b} = ${f.r} and search for ${ex.target} with the remaining numbers.</plan>`);
    const results = firsts.map((f) => {
      const rest = [...ex.numbers];
      rest.splice(rest.indexOf(f.a), 1);
      rest.splice(rest.indexOf(f.b), 1);
      const sub = solveCountdown([...rest, f.r], ex.target);
      return { f, sub, rest };
    });
    const stepsText = results.map(({ f, sub, rest }, k) => {
      const body = sub
        ? `${f.a} ${f.op} ${f.b} = ${f.r}. ${sub.map((s) => `${s.a} ${s.op} ${s.b} = ${s.r}.`).join(" ")} This reaches ${ex.target}.`
        : `${f.a} ${f.op} ${f.b} = ${f.r}, leaving ${[...rest, f.r].join(", ")}. No combination of these reaches ${ex.target}.`;
      return `<step>${k + 1}: ${body}</step>`;
    });
    const win = results.findIndex((r) => r.sub !== null);
    const chosen = results[win]!;
    const expr = stepsToExpression(ex.numbers, [chosen.f, ...chosen.sub!]);
    return (
      `<guideline>${plans.join("")}</guideline>${stepsText.join("")}` +
      `<takeaway>Plan ${win + 1} reaches ${ex.target}; it uses each number at most once.</takeaway>\n` +
      `The expression is \\boxed{${expr}}.`
    );
  }
}

/** Exact check of an expression: value equals target, numbers used at most as often as given. */
export function verifyCountdown(numbers: readonly number[], target: number, expr: string): { ok: true } | { ok: false; why: string } {
  const text = expr.replace(/\\times|\\cdot|×/g, "*").replace(/\\div|÷/g, "/").replace(/\\left|\\right/g, "").replace(/=.*$/, "").trim();
  const toks = text.match(/\d+|[-+*/()]|\S/g) ?? [];
  const used: number[] = [];
  let p = 0;
  // Values are exact rationals [num, den] so 7 / 2 * 2 is 7, not 6.999.
  type Q = [bigint, bigint];
  const norm = ([n, d]: Q): Q => {
    if (d === 0n) throw new Error("division by zero");
    const g = gcd(n < 0n ? -n : n, d < 0n ? -d : d) || 1n;
    return d < 0n ? [-n / g, -d / g] : [n / g, d / g];
  };
  const expr0 = (): Q => {
    let v = term();
    while (toks[p] === "+" || toks[p] === "-") {
      const op = toks[p++];
      const w = term();
      v = norm(op === "+" ? [v[0] * w[1] + w[0] * v[1], v[1] * w[1]] : [v[0] * w[1] - w[0] * v[1], v[1] * w[1]]);
    }
    return v;
  };
  const term = (): Q => {
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
      const v = expr0();
      if (toks[p++] !== ")") throw new Error("unbalanced brackets");
      return v;
    }
    if (t !== undefined && /^\d+$/.test(t)) {
      used.push(Number(t));
      return [BigInt(t), 1n];
    }
    throw new Error(`unexpected ${t === undefined ? "end" : `"${t}"`}`);
  };
  let value: Q;
  try {
    value = expr0();
    if (p !== toks.length) throw new Error(`unexpected "${toks[p]}"`);
  } catch (err) {
    return { ok: false, why: `cannot parse "${expr}": ${(err as Error).message}` };
  }
  const avail = new Map<number, number>();
  for (const n of numbers) avail.set(n, (avail.get(n) ?? 0) + 1);
  for (const n of used) {
    const left = avail.get(n) ?? 0;
    if (left === 0) return { ok: false, why: `${n} is not available (or used too often)` };
    avail.set(n, left - 1);
  }
  if (value[1] !== 1n || value[0] !== BigInt(target)) return { ok: false, why: `value is ${value[0]}${value[1] === 1n ? "" : `/${value[1]}`}, not ${target}` };
  return { ok: true };
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}
