/**
 * The logic-grid search that the reference traces write out: constraint propagation over a grid
 * of candidate houses, one checkable deduction per line, and a case split with refutation when
 * propagation stalls (DPLL). Also the clue relations and the exhaustive solution counter the
 * generator uses to make puzzles unique. The parallel form splits the pivot value's house into one
 * plan per house; each step propagates under its hypothesis with the same bounded search.
 * Knows numbers and words only; the puzzle texts live in logic-grid.ts.
 *
 * Line grammar (a value is a word such as "red"; houses are 1-based; cK is clue K):
 *
 *   red=2 c3              clue 3 rules out every other house of red (red is placed)
 *   red not 1 3 c3        clue 3 rules out houses 1 and 3 for red
 *   red=2 only            red has one house left, or house 2 has no other Color left
 *   red has no house      dead end: no candidate house left for red
 *   house 2 has no Color  dead end: no Color value can go to house 2
 *   try red=2             case split: assume it (parallel plans are these cases)
 *   back: red not 2       the case led to a dead end; undo it and rule it out
 *   solved / fail         every value placed / the line budget is spent
 *
 * Placing a value (by "=") also removes its house from the other values of its attribute; that
 * is the only implicit step, and a value left with one house is placed by an explicit "only" line.
 */

/** (attribute index, value index). */
export type Item = readonly [attr: number, value: number];

export type Clue =
  | { t: "at"; x: Item; h: number }
  | { t: "notAt"; x: Item; h: number }
  | { t: "same"; x: Item; y: Item }
  | { t: "diff"; x: Item; y: Item }
  | { t: "leftOf"; x: Item; y: Item }
  | { t: "next"; x: Item; y: Item }
  | { t: "before"; x: Item; y: Item };

export type BinaryClue = Extract<Clue, { y: Item }>;

/** Does a binary clue hold with its x in house hx and its y in house hy (0-based)? */
export function relationHolds(t: BinaryClue["t"], hx: number, hy: number): boolean {
  if (t === "same") return hx === hy;
  if (t === "diff") return hx !== hy;
  if (t === "leftOf") return hx + 1 === hy;
  if (t === "next") return Math.abs(hx - hy) === 1;
  return hx < hy;
}

function permutations(n: number): number[][] {
  if (n === 1) return [[0]];
  const out: number[][] = [];
  for (const p of permutations(n - 1)) for (let i = 0; i <= p.length; i++) out.push([...p.slice(0, i), n - 1, ...p.slice(i)]);
  return out;
}

/**
 * Number of solutions of n houses x m attributes under `clues`, stopping at `limit`, by brute
 * force: attributes are assigned one permutation at a time; unary clues filter each attribute's
 * permutations once, and a binary clue is checked where the later of its attributes is assigned.
 * The oracle that countSolutions (propagation + splits, much faster on 5x5) is tested against.
 */
export function countSolutionsByPermutation(n: number, m: number, clues: readonly Clue[], limit = 2): number {
  const perms = permutations(n);
  const options = Array.from({ length: m }, (_, a) =>
    perms.filter((perm) =>
      clues.every((c) => c.x[0] !== a || (c.t === "at" ? perm[c.x[1]] === c.h : c.t === "notAt" ? perm[c.x[1]] !== c.h : true)),
    ),
  );
  const byLevel: BinaryClue[][] = Array.from({ length: m }, () => []);
  for (const c of clues) if ("y" in c) byLevel[Math.max(c.x[0], c.y[0])]!.push(c);
  // pos[a][v] = house of value v of attribute a, for the attributes assigned so far.
  const pos: number[][] = new Array(m);
  let count = 0;
  const rec = (a: number): void => {
    if (a === m) {
      count++;
      return;
    }
    for (const perm of options[a]!) {
      pos[a] = perm;
      if (byLevel[a]!.every((c) => relationHolds(c.t, pos[c.x[0]]![c.x[1]]!, pos[c.y[0]]![c.y[1]]!))) rec(a + 1);
      if (count >= limit) return;
    }
  };
  rec(0);
  return count;
}

/** What the search needs to know about a puzzle: its size, words and clues. */
export interface GridPuzzle {
  houses: number;
  /** attrNames[a], e.g. "Color". */
  attrNames: readonly string[];
  /** words[a][v], e.g. "red": unique across attributes. */
  words: readonly (readonly string[])[];
  clues: readonly Clue[];
}

export interface LogicSearchOptions {
  /** Lines of a sequential trace. */
  budget: number;
  /** Lines of one parallel step. */
  stepBudget: number;
}

export const DEFAULT_LOGIC_SEARCH: Readonly<LogicSearchOptions> = Object.freeze({ budget: 100, stepBudget: 60 });

/** cand[a][v]: bitmask of the houses value v of attribute a may still take; placed[a][v]. */
interface Grid {
  cand: number[][];
  placed: boolean[][];
}

const bits = (mask: number, n: number) => Array.from({ length: n }, (_, h) => h).filter((h) => mask & (1 << h));
const popcount = (mask: number) => {
  let c = 0;
  for (let x = mask; x; x &= x - 1) c++;
  return c;
};

type SearchEnd = "solved" | "conflict" | "spent";

/** The tracer: one puzzle, one line budget, the lines written so far. */
class Tracer {
  readonly lines: string[] = [];
  private readonly p: GridPuzzle;
  /** Lines allowed; Infinity with `silent` (counting solutions writes no lines). */
  private readonly budget: number;
  private readonly silent: boolean;
  private readonly m: number;
  private readonly all: number;
  /** How many clues mention each value: the split heuristic's tie-break. */
  private readonly mentions: number[][];

  constructor(p: GridPuzzle, budget: number, silent = false) {
    this.p = p;
    this.budget = silent ? Infinity : budget;
    this.silent = silent;
    this.m = p.words.length;
    this.all = (1 << p.houses) - 1;
    this.mentions = p.words.map((w) => w.map(() => 0));
    for (const c of p.clues) {
      this.mentions[c.x[0]]![c.x[1]]!++;
      if ("y" in c) this.mentions[c.y[0]]![c.y[1]]!++;
    }
  }

  fresh(): Grid {
    return { cand: this.p.words.map((w) => w.map(() => this.all)), placed: this.p.words.map((w) => w.map(() => false)) };
  }

  private word(i: Item): string {
    return this.p.words[i[0]]![i[1]]!;
  }

  /** Writes a line; false when the budget is spent (nothing written). */
  private say(line: string): boolean {
    if (this.silent) return true;
    if (this.lines.length >= this.budget) return false;
    this.lines.push(line);
    return true;
  }

  /** Places value i in house h: its candidates become {h} and h leaves its attribute's other values. */
  private place(g: Grid, i: Item, h: number): void {
    const [a, v] = i;
    g.cand[a]![v] = 1 << h;
    g.placed[a]![v] = true;
    g.cand[a]!.forEach((_, u) => {
      if (u !== v) g.cand[a]![u]! &= ~(1 << h);
    });
  }

  /** A dead end in attribute `a` as a line, or null: an empty value first, then an empty house. */
  private deadEnd(g: Grid, a: number): string | null {
    const v = g.cand[a]!.findIndex((c) => c === 0);
    if (v >= 0) return `${this.word([a, v])} has no house`;
    for (let h = 0; h < this.p.houses; h++) {
      if (g.cand[a]!.every((c) => !(c & (1 << h)))) return `house ${h + 1} has no ${this.p.attrNames[a]}`;
    }
    return null;
  }

  /** The houses of `item` that clue `c` still allows, given the other item's candidates. */
  private supported(g: Grid, c: Clue, which: "x" | "y"): number {
    if (c.t === "at") return 1 << c.h;
    if (c.t === "notAt") return this.all & ~(1 << c.h);
    const other = which === "x" ? c.y : c.x;
    const otherHouses = bits(g.cand[other[0]]![other[1]]!, this.p.houses);
    let mask = 0;
    for (let h = 0; h < this.p.houses; h++) {
      const ok = otherHouses.some((o) => (which === "x" ? relationHolds(c.t, h, o) : relationHolds(c.t, o, h)));
      if (ok) mask |= 1 << h;
    }
    return mask;
  }

  /**
   * Propagates to a fixpoint: clues in order (each deduction one line), then single candidates;
   * repeated until nothing changes. Returns null when stuck (neither solved nor a dead end).
   */
  propagate(g: Grid): SearchEnd | null {
    for (;;) {
      let progress = false;
      for (let k = 0; k < this.p.clues.length; k++) {
        const c = this.p.clues[k]!;
        for (const which of "y" in c ? (["x", "y"] as const) : (["x"] as const)) {
          const item = which === "x" ? c.x : (c as BinaryClue).y;
          const cur = g.cand[item[0]]![item[1]]!;
          const keep = cur & this.supported(g, c, which);
          if (keep === cur) continue;
          const w = this.word(item);
          if (popcount(keep) === 1 && !g.placed[item[0]]![item[1]]) {
            const h = bits(keep, this.p.houses)[0]!;
            if (!this.say(`${w}=${h + 1} c${k + 1}`)) return "spent";
            this.place(g, item, h);
          } else {
            if (
              !this.say(
                `${w} not ${bits(cur & ~keep, this.p.houses)
                  .map((h) => h + 1)
                  .join(" ")} c${k + 1}`,
              )
            )
              return "spent";
            g.cand[item[0]]![item[1]] = keep;
          }
          progress = true;
          const dead = this.deadEnd(g, item[0]);
          if (dead !== null) return this.say(dead) ? "conflict" : "spent";
        }
      }
      for (let a = 0; a < this.m; a++) {
        for (let v = 0; v < this.p.words[a]!.length; v++) {
          const cur = g.cand[a]![v]!;
          let h = popcount(cur) === 1 ? bits(cur, this.p.houses)[0]! : -1;
          if (h < 0) {
            // A house this value is the last candidate of.
            h = bits(cur, this.p.houses).find((hh) => g.cand[a]!.every((c, u) => u === v || !(c & (1 << hh)))) ?? -1;
          }
          if (h < 0 || g.placed[a]![v]) continue;
          if (!this.say(`${this.word([a, v])}=${h + 1} only`)) return "spent";
          this.place(g, [a, v], h);
          progress = true;
          const dead = this.deadEnd(g, a);
          if (dead !== null) return this.say(dead) ? "conflict" : "spent";
        }
      }
      // Solved only after a pass without change: the last placements must pass every clue too.
      if (!progress) return g.placed.every((row) => row.every((x) => x)) ? "solved" : null;
    }
  }

  /** The split value: fewest candidates, then most mentioned, then attribute and value order. */
  private pickSplit(g: Grid): Item {
    let best: Item | null = null;
    let key = [Infinity, 0];
    g.cand.forEach((row, a) =>
      row.forEach((c, v) => {
        if (g.placed[a]![v]) return;
        const k = [popcount(c), -this.mentions[a]![v]!];
        if (k[0]! < key[0]! || (k[0] === key[0] && k[1]! < key[1]!)) {
          best = [a, v];
          key = k;
        }
      }),
    );
    return best!;
  }

  /** The root split of the parallel form: the most mentioned value no "is in house" clue places. */
  pivot(): Item {
    const fixed = new Set(this.p.clues.filter((c) => c.t === "at").map((c) => `${c.x[0]},${c.x[1]}`));
    let best: Item = [0, 0];
    let most = -1;
    this.mentions.forEach((row, a) =>
      row.forEach((n, v) => {
        if (!fixed.has(`${a},${v}`) && n > most) {
          best = [a, v];
          most = n;
        }
      }),
    );
    return best;
  }

  /** Assumes value i is in house h (a "try" line), with the dead end it may cause at once. */
  assume(g: Grid, i: Item, h: number): SearchEnd | null {
    if (!this.say(`try ${this.word(i)}=${h + 1}`)) return "spent";
    this.place(g, i, h);
    const dead = this.deadEnd(g, i[0]);
    if (dead !== null) return this.say(dead) ? "conflict" : "spent";
    return null;
  }

  /** Solutions below grid `g`, up to `limit`: propagation, then every house of a split value. */
  count(g: Grid, limit: number): number {
    const r = this.propagate(g);
    if (r !== null) return r === "solved" ? 1 : 0;
    const i = this.pickSplit(g);
    let total = 0;
    for (const h of bits(g.cand[i[0]]![i[1]]!, this.p.houses)) {
      const trial = { cand: g.cand.map((r) => [...r]), placed: g.placed.map((r) => [...r]) };
      this.place(trial, i, h);
      if (this.deadEnd(trial, i[0]) === null) total += this.count(trial, limit - total);
      if (total >= limit) break;
    }
    return total;
  }

  /** Propagation with case splits: a refuted case is undone and its house ruled out. */
  solve(g: Grid): SearchEnd {
    for (;;) {
      const r = this.propagate(g);
      if (r !== null) return r;
      const i = this.pickSplit(g);
      const h = bits(g.cand[i[0]]![i[1]]!, this.p.houses)[0]!;
      const trial = { cand: g.cand.map((r) => [...r]), placed: g.placed.map((r) => [...r]) };
      const sub = this.assume(trial, i, h) ?? this.solve(trial);
      if (sub !== "conflict") {
        if (sub === "solved") Object.assign(g, trial);
        return sub;
      }
      if (!this.say(`back: ${this.word(i)} not ${h + 1}`)) return "spent";
      g.cand[i[0]]![i[1]]! &= ~(1 << h);
      const dead = this.deadEnd(g, i[0]);
      if (dead !== null) return this.say(dead) ? "conflict" : "spent";
    }
  }
}

/**
 * Number of solutions of n houses x m attributes under `clues`, stopping at `limit`. Up to 4
 * houses brute force is fastest (24 permutations per attribute); with 5 its proofs of uniqueness
 * have a heavy tail (0.3 s per puzzle on average), so the tracer's propagation (sound, so nothing
 * is lost) with a split on every house of the most constrained value takes over (0.05 s). The two
 * agree on random clue sets (tested).
 */
export function countSolutions(n: number, m: number, clues: readonly Clue[], limit = 2): number {
  if (n <= 4) return countSolutionsByPermutation(n, m, clues, limit);
  const words = Array.from({ length: m }, () => Array.from({ length: n }, () => ""));
  const t = new Tracer({ houses: n, attrNames: words.map(() => ""), words, clues }, Infinity, true);
  return t.count(t.fresh(), limit);
}

export interface LogicTrace {
  text: string;
  solved: boolean;
  /** The solved grid as houses of value indices, grid[h][a] = v; null when the search failed. */
  grid: number[][] | null;
  /** Lines written (all steps together in the parallel form). */
  numLines: number;
}

/** grid[h][a] = v from a fully placed candidate grid. */
function gridOf(g: Grid, houses: number): number[][] {
  return Array.from({ length: houses }, (_, h) => g.cand.map((row) => row.findIndex((c) => c === 1 << h)));
}

/** "Alice red cat; Bob green dog" (house 1 first, values in attribute order). */
export function gridAnswerText(p: GridPuzzle, grid: readonly (readonly number[])[]): string {
  return grid.map((row) => row.map((v, a) => p.words[a]![v]!).join(" ")).join("; ");
}

/** The sequential form: propagation and case splits from the empty grid, then the boxed grid. */
export function logicSequentialTrace(p: GridPuzzle, opts: LogicSearchOptions = DEFAULT_LOGIC_SEARCH): LogicTrace {
  const t = new Tracer(p, opts.budget);
  const g = t.fresh();
  const r = t.solve(g);
  const grid = r === "solved" ? gridOf(g, p.houses) : null;
  const tail = grid ? `solved\n\\boxed{${gridAnswerText(p, grid)}}` : r === "spent" ? "fail\n\\boxed{none}" : "\\boxed{none}";
  return { text: `${[...t.lines, tail].join("\n")}`, solved: grid !== null, grid, numLines: t.lines.length };
}

/**
 * The NPR parallel form: one plan per house of the pivot value ("try Alice=2"), each step the
 * same bounded search under its own hypothesis (never mentioning a sibling), a takeaway naming the
 * steps that solved the grid, and the boxed grid of the first of them.
 */
export function logicParallelTrace(p: GridPuzzle, opts: LogicSearchOptions = DEFAULT_LOGIC_SEARCH): LogicTrace {
  const pivot = new Tracer(p, 1).pivot();
  const word = p.words[pivot[0]]![pivot[1]]!;
  const steps = Array.from({ length: p.houses }, (_, h) => {
    const t = new Tracer(p, opts.stepBudget);
    const g = t.fresh();
    const r = t.assume(g, pivot, h) ?? t.solve(g);
    if (r === "solved") t.lines.push("solved");
    else if (r === "spent") t.lines.push("fail");
    return { lines: t.lines, grid: r === "solved" ? gridOf(g, p.houses) : null };
  });
  const winners = steps.flatMap((s, k) => (s.grid ? [k + 1] : []));
  const grid = steps.find((s) => s.grid !== null)?.grid ?? null;
  const plans = steps.map((_, h) => `<plan>${h + 1}: try ${word}=${h + 1}</plan>`).join("");
  const body = steps.map((s, k) => `<step>${k + 1}: ${s.lines.join("\n")}</step>`).join("");
  const takeaway = `<takeaway>steps solving it: ${winners.length > 0 ? winners.join(" ") : "none"}</takeaway>`;
  const text = `<guideline>${plans}</guideline>${body}${takeaway}\n\\boxed{${grid ? gridAnswerText(p, grid) : "none"}}`;
  return { text, solved: grid !== null, grid, numLines: steps.reduce((n, s) => n + s.lines.length, 0) };
}
