/**
 * Generated logic-grid (zebra) puzzles with a unique solution: a task where exploring alternatives
 * in parallel pays, since each hypothesis ("Alice lives in house k") can be checked on its own.
 * The seeded generator (difficulty: houses, attributes; presets small/medium/large), the
 * train/test split by puzzle hash (splits.ts), short clue sentences over single-word values, the
 * verifier that grades a boxed grid against the clues (never a comparison with a stored grid),
 * and the reference traces in sequential and NPR parallel form from logic-search.ts.
 * Knows strings and the Rng; nothing about models.
 */
import { ConfigError, invariant } from "../util/index.ts";
import { Rng } from "../util/index.ts";
import { lastBoxed } from "./extract.ts";
import {
  countSolutions,
  DEFAULT_LOGIC_SEARCH,
  logicParallelTrace,
  logicSequentialTrace,
  relationHolds,
  type Clue,
  type GridPuzzle,
  type Item,
  type LogicSearchOptions,
  type LogicTrace,
} from "./logic-search.ts";
import { MAX_TEST_EXAMPLES, testProblems, trainProblem, type Split, type SplitSource } from "./splits.ts";
import type { Example, Outcome, PromptStyle, Task } from "./task.ts";
import { syntheticPrompt } from "./task.ts";
import type { ZebraSolution } from "./zebra.ts";

/** Attributes in order; every value is one word, unique across attributes, so a word names its cell. */
export const LOGIC_ATTRIBUTES: readonly { name: string; values: readonly string[] }[] = [
  { name: "Name", values: ["Alice", "Bob", "Carol", "David", "Eve"] },
  { name: "Color", values: ["red", "green", "blue", "yellow", "white"] },
  { name: "Pet", values: ["cat", "dog", "bird", "fish", "horse"] },
  { name: "Drink", values: ["tea", "coffee", "milk", "juice", "water"] },
  { name: "Sport", values: ["tennis", "soccer", "golf", "chess", "rugby"] },
];

export interface LogicGridDifficulty {
  houses: number;
  attributes: number;
}

export const LOGIC_GRID_PRESETS: Readonly<Record<string, Readonly<LogicGridDifficulty>>> = Object.freeze({
  small: Object.freeze({ houses: 3, attributes: 3 }),
  medium: Object.freeze({ houses: 4, attributes: 4 }),
  large: Object.freeze({ houses: 5, attributes: 5 }),
});

/** Valid ranges (inclusive): at least 2 plans per split, at most the words listed above. */
export const LOGIC_GRID_LIMITS = Object.freeze({ houses: [2, 5] as const, attributes: [2, LOGIC_ATTRIBUTES.length] as const });

export interface LogicGridOptions extends Partial<LogicGridDifficulty> {
  /** A preset to start from (default "small"); the other fields override it. */
  preset?: string;
  /** Default "train". The test split is one fixed list; the seed does not change it. */
  split?: Split;
  search?: Partial<LogicSearchOptions>;
}

export interface LogicGridExample extends Example {
  houses: number;
  /** The attributes in play and their first `houses` values. */
  attributes: { name: string; values: string[] }[];
  /** Clue sentences, numbered from 1 in the problem text. */
  clues: string[];
  /** The unique solution as a table (header + one row per house), for people and ZebraLogic tools. */
  solution: ZebraSolution;
}

export function logicGridDifficulty(opts: LogicGridOptions = {}): LogicGridDifficulty {
  const preset = opts.preset ?? "small";
  const base = LOGIC_GRID_PRESETS[preset];
  if (!base) {
    throw new ConfigError(`logic-grid: unknown preset "${preset}"`, {
      code: "bad_preset",
      param: "preset",
      hint: `one of ${Object.keys(LOGIC_GRID_PRESETS).join(", ")}`,
    });
  }
  const d = { houses: opts.houses ?? base.houses, attributes: opts.attributes ?? base.attributes };
  for (const key of ["houses", "attributes"] as const) {
    const [lo, hi] = LOGIC_GRID_LIMITS[key];
    if (!Number.isInteger(d[key]) || d[key] < lo || d[key] > hi) {
      throw new ConfigError(`logic-grid: ${key} must be an integer in ${lo}..${hi}, got ${d[key]}`, { code: "bad_difficulty", param: key });
    }
  }
  return d;
}

/** "red is in house 2." and friends: the value words stand for their houses. */
export function clueText(c: Clue, words: readonly (readonly string[])[]): string {
  const w = (i: Item) => words[i[0]]![i[1]]!;
  switch (c.t) {
    case "at":
      return `${w(c.x)} is in house ${c.h + 1}.`;
    case "notAt":
      return `${w(c.x)} is not in house ${c.h + 1}.`;
    case "same":
      return `${w(c.x)} and ${w(c.y)} are in the same house.`;
    case "diff":
      return `${w(c.x)} and ${w(c.y)} are in different houses.`;
    case "leftOf":
      return `${w(c.x)} is directly left of ${w(c.y)}.`;
    case "next":
      return `${w(c.x)} and ${w(c.y)} are neighbours.`;
    case "before":
      return `${w(c.x)} is somewhere left of ${w(c.y)}.`;
  }
}

/** The clue a sentence of clueText spells, or null. */
export function parseClue(text: string, words: readonly (readonly string[])[]): Clue | null {
  const item = (s: string): Item | null => {
    for (let a = 0; a < words.length; a++) {
      const v = words[a]!.indexOf(s);
      if (v >= 0) return [a, v];
    }
    return null;
  };
  let m = /^(\w+) is (not )?in house (\d+)\.$/.exec(text);
  if (m) {
    const x = item(m[1]!);
    return x ? { t: m[2] ? "notAt" : "at", x, h: Number(m[3]) - 1 } : null;
  }
  const forms: [RegExp, Extract<Clue, { y: Item }>["t"]][] = [
    [/^(\w+) and (\w+) are in the same house\.$/, "same"],
    [/^(\w+) and (\w+) are in different houses\.$/, "diff"],
    [/^(\w+) is directly left of (\w+)\.$/, "leftOf"],
    [/^(\w+) and (\w+) are neighbours\.$/, "next"],
    [/^(\w+) is somewhere left of (\w+)\.$/, "before"],
  ];
  for (const [re, t] of forms) {
    m = re.exec(text);
    if (!m) continue;
    const x = item(m[1]!);
    const y = item(m[2]!);
    return x && y ? { t, x, y } : null;
  }
  return null;
}

/** One puzzle: its size, the hidden truth truth[a][v] = house, and a unique, pruned clue list. */
interface Puzzle {
  d: LogicGridDifficulty;
  truth: number[][];
  clues: Clue[];
}

function wordsOf(d: LogicGridDifficulty): string[][] {
  return LOGIC_ATTRIBUTES.slice(0, d.attributes).map((a) => a.values.slice(0, d.houses));
}

/**
 * Draws puzzles of a difficulty. The split key is the solution grid (truth[a][v] = house), drawn
 * first: a test solution is never the answer of a training puzzle, and the costly clue search runs
 * only for puzzles of the wanted split.
 */
function puzzleSource(d: LogicGridDifficulty): SplitSource<Puzzle, number[][]> {
  const { houses: n, attributes: m } = d;
  const words = wordsOf(d);
  return {
    drawKey: (rng: Rng) => Array.from({ length: m }, () => rng.shuffle(Array.from({ length: n }, (_, k) => k))),
    canonical: (truth) => `logic-grid:${n}x${m}:${truth.map((row) => row.join("")).join("/")}`,
    complete(truth: number[][], rng: Rng): Puzzle {
      const item = (): Item => [rng.int(m), rng.int(n)];
      const house = (x: Item) => truth[x[0]]![x[1]]!;
      // Draw true clues until the solution is unique, then drop the ones not needed.
      let clues: Clue[] = [];
      while (countSolutions(n, m, clues) > 1) {
        const x = item();
        let y = item();
        while (y[0] === x[0]) y = item();
        const kinds: Clue[] = [
          { t: "at", x, h: house(x) },
          { t: "notAt", x, h: (house(x) + 1 + rng.int(n - 1)) % n },
          house(x) === house(y) ? { t: "same", x, y } : { t: "diff", x, y },
        ];
        for (const t of ["leftOf", "next", "before"] as const) if (relationHolds(t, house(x), house(y))) kinds.push({ t, x, y });
        clues.push(kinds[rng.int(kinds.length)]!);
      }
      for (let k = clues.length - 1; k >= 0; k--) {
        const without = clues.filter((_, j) => j !== k);
        if (countSolutions(n, m, without) === 1) clues = without;
      }
      return { d, truth, clues };
    },
    identity: (p) =>
      `${p.truth.map((row) => row.join("")).join("/")}:${p.clues
        .map((c) => clueText(c, words))
        .sort()
        .join("|")}`,
  };
}

export class LogicGridTask implements Task<LogicGridExample> {
  readonly name = "logic-grid";
  readonly size: number;
  readonly split: Split;
  readonly difficulty: LogicGridDifficulty;
  readonly search: LogicSearchOptions;
  private readonly seed: number;
  private readonly source: SplitSource<Puzzle, number[][]>;
  private readonly words: string[][];
  private readonly cache = new Map<number, Puzzle>();
  private testList: Puzzle[] | null = null;

  /** As CountdownTask: `size` examples of stream `seed`, or the first `size` of the fixed test list. */
  constructor(size: number, seed: number, opts: LogicGridOptions = {}) {
    this.size = size;
    this.seed = seed;
    this.split = opts.split ?? "train";
    this.difficulty = logicGridDifficulty(opts);
    this.search = { ...DEFAULT_LOGIC_SEARCH, ...opts.search };
    this.source = puzzleSource(this.difficulty);
    this.words = wordsOf(this.difficulty);
    if (this.split === "test" && size > MAX_TEST_EXAMPLES) {
      throw new ConfigError(`logic-grid: the test split holds at most ${MAX_TEST_EXAMPLES} problems, ${size} asked`, {
        code: "too_many",
        param: "n",
      });
    }
  }

  private puzzle(i: number): Puzzle {
    invariant(Number.isInteger(i) && i >= 0 && i < this.size, () => `LogicGridTask.get(${i}) outside 0..${this.size - 1}`);
    if (this.split === "test") {
      this.testList ??= testProblems(this.source, this.size, "logic-grid test split");
      return this.testList[i]!;
    }
    let p = this.cache.get(i);
    if (!p) {
      p = trainProblem(this.source, this.seed, i, "logic-grid");
      if (this.cache.size > 256) this.cache.clear(); // sampling streams; keep memory flat
      this.cache.set(i, p);
    }
    return p;
  }

  get(i: number): LogicGridExample {
    const p = this.puzzle(i);
    const { houses: n, attributes: m } = this.difficulty;
    const attrs = LOGIC_ATTRIBUTES.slice(0, m).map((a, k) => ({ name: a.name, values: [...this.words[k]!] }));
    const clues = p.clues.map((c) => clueText(c, this.words));
    const grid = Array.from({ length: n }, (_, h) => p.truth.map((row) => row.indexOf(h)));
    const solution: ZebraSolution = {
      header: ["House", ...attrs.map((a) => a.name)],
      rows: grid.map((row, h) => [String(h + 1), ...row.map((v, a) => this.words[a]![v]!)]),
    };
    const id = this.split === "test" ? `logic-grid-test-${i}` : `logic-grid-${this.seed}-${i}`;
    const answer = grid.map((row) => row.map((v, a) => this.words[a]![v]!).join(" ")).join("; ");
    return { id, houses: n, attributes: attrs, clues, solution, problem: logicGridProblemText(n, attrs, clues), answer };
  }

  renderPrompt(ex: LogicGridExample, style: PromptStyle = "npr"): string {
    return syntheticPrompt(ex.problem, style);
  }

  evaluate(ex: LogicGridExample, text: string): Outcome {
    return evaluateLogicGrid(ex, text);
  }

  /** The sequential reference trace (propagation and case splits; may fail). */
  sequentialTrace(ex: LogicGridExample): LogicTrace {
    return logicSequentialTrace(logicPuzzleOf(ex), this.search);
  }

  /** The parallel reference trace (one plan per house of the pivot value). */
  parallelTrace(ex: LogicGridExample): LogicTrace {
    return logicParallelTrace(logicPuzzleOf(ex), this.search);
  }

  sequentialSolution(ex: LogicGridExample, _i?: number): string {
    return this.sequentialTrace(ex).text;
  }

  parallelSolution(ex: LogicGridExample, _i?: number): string {
    return this.parallelTrace(ex).text;
  }
}

/** The search's view of an example, read back from its attribute lists and clue sentences. */
export function logicPuzzleOf(ex: Pick<LogicGridExample, "houses" | "attributes" | "clues">): GridPuzzle {
  const words = ex.attributes.map((a) => a.values);
  const clues = ex.clues.map((text, k) => {
    const c = parseClue(text, words);
    if (c === null)
      throw new ConfigError(`logic-grid: clue ${k + 1} cannot be read: "${text}"`, { code: "bad_clue", param: `clues[${k}]` });
    return c;
  });
  return { houses: ex.houses, attrNames: ex.attributes.map((a) => a.name), words, clues };
}

/** Grades a response's last non-empty \boxed{} grid against the clues; no box at all is malformed. */
export function evaluateLogicGrid(ex: Pick<LogicGridExample, "houses" | "attributes" | "clues">, text: string): Outcome {
  const boxed = lastBoxed(text);
  if (boxed === null) return { kind: "malformed", why: "no \\boxed{} grid" };
  const v = verifyLogicGrid(ex, boxed);
  return { kind: "graded", correct: v.ok, reward: v.ok ? 1 : 0, extracted: boxed, detail: v.ok ? undefined : v.why };
}

export function logicGridProblemText(
  houses: number,
  attrs: readonly { name: string; values: readonly string[] }[],
  clues: readonly string[],
): string {
  return (
    `${houses} houses in a row, numbered 1 to ${houses} from the left.\n` +
    `${attrs.map((a) => `${a.name}: ${a.values.join(" ")}`).join("\n")}\n` +
    `Clues:\n${clues.map((c, k) => `${k + 1}. ${c}`).join("\n")}\n` +
    `Box each house's values, house 1 first, houses split by ;.`
  );
}

/**
 * Checks a boxed grid ("Alice red cat; Bob green dog; ...": house 1 first, one value of each
 * attribute per house, in any order) against the example's clues: each attribute a permutation,
 * every clue true. The clues have one solution, so this is the same as matching it.
 */
export function verifyLogicGrid(
  ex: Pick<LogicGridExample, "houses" | "attributes" | "clues">,
  boxed: string,
): { ok: true } | { ok: false; why: string } {
  const words = ex.attributes.map((a) => a.values);
  const groups = boxed.split(";").map((g) =>
    g
      .trim()
      .split(/\s+/)
      .filter((w) => w !== ""),
  );
  if (groups.length !== ex.houses) return { ok: false, why: `${groups.length} houses given, ${ex.houses} expected` };
  // at[a][v] = house of value v of attribute a.
  const at = words.map((w) => w.map(() => -1));
  for (let h = 0; h < groups.length; h++) {
    const seen = new Set<number>();
    for (const word of groups[h]!) {
      const a = words.findIndex((w) => w.includes(word));
      if (a < 0) return { ok: false, why: `house ${h + 1}: "${word}" is not a value of this puzzle` };
      const v = words[a]!.indexOf(word);
      if (seen.has(a)) return { ok: false, why: `house ${h + 1} has two ${ex.attributes[a]!.name} values` };
      if (at[a]![v] !== -1) return { ok: false, why: `${word} is in two houses` };
      seen.add(a);
      at[a]![v] = h;
    }
    if (seen.size !== words.length) return { ok: false, why: `house ${h + 1} lacks a value of some attribute` };
  }
  for (let k = 0; k < ex.clues.length; k++) {
    const c = parseClue(ex.clues[k]!, words);
    if (c === null) return { ok: false, why: `clue ${k + 1} cannot be read: "${ex.clues[k]}"` };
    const hx = at[c.x[0]]![c.x[1]]!;
    const ok = c.t === "at" ? hx === c.h : c.t === "notAt" ? hx !== c.h : relationHolds(c.t, hx, at[c.y[0]]![c.y[1]]!);
    if (!ok) return { ok: false, why: `clue ${k + 1} does not hold: ${ex.clues[k]}` };
  }
  return { ok: true };
}
