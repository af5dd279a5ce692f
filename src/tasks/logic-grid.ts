/**
 * Generated logic-grid (zebra) puzzles with a unique solution: a task where exploring alternatives
 * in parallel pays, since each hypothesis ("Alice lives in house k") can be checked on its own.
 * Seeded generator (difficulty knobs: houses, attributes), an exhaustive solver that counts
 * solutions, redundant clues pruned, grading cell by cell through zebra.ts, and reference solutions
 * in sequential and NPR parallel form (one plan per house of the pivot person; the failing cases
 * name the first clue that rules them out).
 * Knows strings and the Rng; nothing about models.
 */
import { Rng } from "../util/rng.ts";
import type { Example, Outcome, PromptStyle, Task } from "./task.ts";
import { withInstruction } from "./task.ts";
import { gradeZebraGrid, zebraAnswerJson, type ZebraSolution } from "./zebra.ts";

const ATTRIBUTES: { name: string; values: string[] }[] = [
  { name: "Name", values: ["Alice", "Bob", "Carol", "David", "Eve", "Frank"] },
  { name: "Color", values: ["red", "green", "blue", "yellow", "white", "black"] },
  { name: "Pet", values: ["cat", "dog", "bird", "fish", "horse", "rabbit"] },
  { name: "Drink", values: ["tea", "coffee", "milk", "juice", "water", "soda"] },
  { name: "Sport", values: ["tennis", "soccer", "golf", "chess", "rugby", "hockey"] },
];

/** A fact about an (attribute, value) "item"; positions are 0-based houses. */
type Item = [attr: number, value: number];
type Clue =
  | { t: "at"; x: Item; h: number }
  | { t: "notAt"; x: Item; h: number }
  | { t: "same"; x: Item; y: Item }
  | { t: "diff"; x: Item; y: Item }
  | { t: "leftOf"; x: Item; y: Item }
  | { t: "next"; x: Item; y: Item }
  | { t: "before"; x: Item; y: Item };

export interface LogicGridOptions {
  houses?: number;
  attributes?: number;
}

export interface LogicGridExample extends Example {
  solution: ZebraSolution;
  clues: string[];
}

/** pos[a][v] = house of value v of attribute a (undefined while attribute a is unassigned). */
type Pos = (number[] | undefined)[];

function holds(c: Clue, pos: Pos): boolean | null {
  const p = (i: Item) => pos[i[0]]?.[i[1]];
  const px = p(c.x);
  if (px === undefined) return null;
  if (c.t === "at") return px === c.h;
  if (c.t === "notAt") return px !== c.h;
  const py = p(c.y);
  if (py === undefined) return null;
  if (c.t === "same") return px === py;
  if (c.t === "diff") return px !== py;
  if (c.t === "leftOf") return px + 1 === py;
  if (c.t === "next") return Math.abs(px - py) === 1;
  return px < py;
}

function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  const out: number[][] = [];
  for (const p of permutations(n - 1)) for (let i = 0; i <= p.length; i++) out.push([...p.slice(0, i), n - 1, ...p.slice(i)]);
  return out;
}

/** Number of solutions, stopping at `limit`; `first` receives the first one found. */
export function countSolutions(n: number, m: number, clues: readonly Clue[], limit = 2, first?: (pos: number[][]) => void): number {
  const perms = permutations(n);
  const pos: Pos = new Array(m).fill(undefined);
  let count = 0;
  const rec = (a: number): void => {
    if (count >= limit) return;
    if (a === m) {
      if (count === 0) first?.(pos.map((p) => [...p!]));
      count++;
      return;
    }
    for (const perm of perms) {
      pos[a] = perm;
      if (clues.every((c) => holds(c, pos) !== false)) rec(a + 1);
      if (count >= limit) break;
    }
    pos[a] = undefined;
  };
  rec(0);
  return count;
}

function itemText(i: Item): string {
  const a = ATTRIBUTES[i[0]]!;
  const v = a.values[i[1]]!;
  if (a.name === "Name") return v;
  return { Color: `the person in the ${v} house`, Pet: `the ${v} owner`, Drink: `the ${v} drinker`, Sport: `the ${v} player` }[a.name]!;
}

function clueText(c: Clue): string {
  const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);
  const x = itemText(c.x);
  switch (c.t) {
    case "at": return `${cap(x)} lives in house ${c.h + 1}.`;
    case "notAt": return `${cap(x)} does not live in house ${c.h + 1}.`;
    case "same": return `${cap(x)} is ${itemText(c.y)}.`;
    case "diff": return `${cap(x)} is not ${itemText(c.y)}.`;
    case "leftOf": return `${cap(x)} lives directly left of ${itemText(c.y)}.`;
    case "next": return `${cap(x)} and ${itemText(c.y)} are neighbours.`;
    case "before": return `${cap(x)} lives somewhere left of ${itemText(c.y)}.`;
  }
}

export class LogicGridTask implements Task<LogicGridExample> {
  readonly name = "logic-grid";
  readonly size: number;
  private readonly seed: number;
  private readonly n: number;
  private readonly m: number;
  /** Structured clues per generated example, for the reference solutions. */
  private readonly cache = new Map<number, { ex: LogicGridExample; clues: Clue[] }>();

  constructor(size: number, seed: number, opts: LogicGridOptions = {}) {
    this.size = size;
    this.seed = seed;
    this.n = Math.min(Math.max(opts.houses ?? 3, 2), 5);
    this.m = Math.min(Math.max(opts.attributes ?? 3, 2), ATTRIBUTES.length);
  }

  get(i: number): LogicGridExample {
    return this.generate(i).ex;
  }

  private generate(i: number): { ex: LogicGridExample; clues: Clue[] } {
    const hit = this.cache.get(i);
    if (hit) return hit;
    const { n, m } = this;
    const rng = new Rng(this.seed * 7919 + i);
    const truth: number[][] = Array.from({ length: m }, () => rng.shuffle(Array.from({ length: n }, (_, k) => k)));
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
        ...(house(x) === house(y) ? [{ t: "same", x, y } as Clue] : [{ t: "diff", x, y } as Clue]),
        ...(house(x) + 1 === house(y) ? [{ t: "leftOf", x, y } as Clue] : []),
        ...(Math.abs(house(x) - house(y)) === 1 ? [{ t: "next", x, y } as Clue] : []),
        ...(house(x) < house(y) ? [{ t: "before", x, y } as Clue] : []),
      ];
      clues.push(kinds[rng.int(kinds.length)]!);
    }
    for (let k = clues.length - 1; k >= 0; k--) {
      const without = clues.filter((_, j) => j !== k);
      if (countSolutions(n, m, without) === 1) clues = without;
    }
    const attrs = ATTRIBUTES.slice(0, m);
    const solution: ZebraSolution = {
      header: ["House", ...attrs.map((a) => a.name)],
      rows: Array.from({ length: n }, (_, h) => [String(h + 1), ...attrs.map((a, ai) => a.values[truth[ai]!.indexOf(h)]!)]),
    };
    const texts = clues.map(clueText);
    const lines = attrs.map((a) => ` - ${a.name}: ${a.values.slice(0, n).join(", ")}`);
    const problem =
      `There are ${n} houses in a row, numbered 1 to ${n} from left to right. Each house has a different value of each attribute:\n` +
      `${lines.join("\n")}\n\nClues:\n${texts.map((t, k) => `${k + 1}. ${t}`).join("\n")}\n\n` +
      `Find who lives where. Give the full solution as JSON {"solution": {"House 1": {...}, ...}} inside \\boxed{}.`;
    const out = { ex: { id: `logic-grid-${this.seed}-${i}`, problem, answer: JSON.stringify(solution), solution, clues: texts }, clues };
    this.cache.set(i, out);
    return out;
  }

  renderPrompt(ex: LogicGridExample, style: PromptStyle = "cot"): string {
    return withInstruction(ex.problem, style === "cot" ? "plain" : style);
  }

  evaluate(ex: LogicGridExample, text: string): Outcome {
    const g = gradeZebraGrid(ex.solution, text);
    if (!g.parsed) return { kind: "malformed", why: "no house table (JSON) found in the response" };
    return { kind: "graded", correct: g.solved, reward: g.solved ? 1 : 0, extracted: null, detail: `${g.correctCells}/${g.totalCells} cells` };
  }

  /** For each house of the pivot (first name): why it fails, or null when it is the solution. */
  private cases(i: number): { who: string; reasons: (string | null)[] } {
    const { ex, clues } = this.generate(i);
    const who = ATTRIBUTES[0]!.values[0]!;
    const reasons = Array.from({ length: this.n }, (_, h) => {
      const hyp: Clue = { t: "at", x: [0, 0], h };
      if (countSolutions(this.n, this.m, [hyp, ...clues], 1) > 0) return null;
      // The shortest prefix of the clues that, with the hypothesis, has no solution.
      for (let k = 1; k <= clues.length; k++) {
        if (countSolutions(this.n, this.m, [hyp, ...clues.slice(0, k)], 1) === 0) return `with ${who} in house ${h + 1}, clues 1 to ${k} cannot all hold (clue ${k}: ${ex.clues[k - 1]!.replace(/\.$/, "")})`;
      }
      return `with ${who} in house ${h + 1}, the clues cannot all hold`;
    });
    return { who, reasons };
  }

  private grid(ex: LogicGridExample): string {
    return ex.solution.rows.map((r) => `House ${r[0]}: ${r.slice(1).join(", ")}.`).join(" ");
  }

  sequentialSolution(ex: LogicGridExample, i: number): string {
    const { who, reasons } = this.cases(i);
    const lines = reasons.map((r, h) => (r === null ? `If ${who} is in house ${h + 1}, every clue can be satisfied: ${this.grid(ex)}` : `${cap(r)}.`));
    return `Try each house for ${who}.\n${lines.join("\n")}\nThe solution is \\boxed{${zebraAnswerJson(ex.solution)}}.`;
  }

  parallelSolution(ex: LogicGridExample, i: number): string {
    const { who, reasons } = this.cases(i);
    const plans = reasons.map((_, h) => `<plan>${h + 1}: Assume ${who} lives in house ${h + 1} and check all clues.</plan>`);
    const steps = reasons.map((r, h) => `<step>${h + 1}: ${r === null ? `Every clue holds with ${who} in house ${h + 1}: ${this.grid(ex)}` : `Contradiction: ${r}.`}</step>`);
    const win = reasons.findIndex((r) => r === null);
    return (
      `<guideline>${plans.join("")}</guideline>${steps.join("")}` +
      `<takeaway>Only plan ${win + 1} is consistent, so ${who} lives in house ${win + 1} and the grid is determined.</takeaway>\n` +
      `The solution is \\boxed{${zebraAnswerJson(ex.solution)}}.`
    );
  }
}

function cap(s: string): string {
  return s[0]!.toUpperCase() + s.slice(1);
}
