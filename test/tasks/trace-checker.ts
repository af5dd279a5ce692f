/**
 * An independent checker of the synthetic tasks' reference traces, written from the line grammar
 * in docs/training.md and sharing no code with the generators: it parses every line, recomputes
 * every operation and deduction from the problem (Countdown numbers and target; logic-grid clue
 * sentences parsed here from their text), tracks the search state through backtracking, and
 * checks the final answer with its own evaluator. Used by traces.test.ts and tasks-cli.test.ts.
 * Returns a list of problems (empty when the trace checks out).
 */

// ------------------------------------------------------------------ Countdown

interface CdState {
  nums: number[];
}

const key = (xs: readonly number[]) => xs.join(" ");

/** Exact value of an expression over integers (+ - * / and brackets) and the numbers it uses, or an error. */
export function evalExpression(expr: string): { num: bigint; den: bigint; used: number[] } | string {
  const toks = expr.match(/\d+|[-+*/()]|\S/g) ?? [];
  let p = 0;
  const used: number[] = [];
  const gcd = (a: bigint, b: bigint): bigint => (b === 0n ? (a < 0n ? -a : a) : gcd(b, a % b));
  const mk = (n: bigint, d: bigint) => {
    if (d === 0n) throw new Error("division by zero");
    const g = gcd(n, d) || 1n;
    return d < 0n ? { n: -n / g, d: -d / g } : { n: n / g, d: d / g };
  };
  type V = { n: bigint; d: bigint };
  const primary = (): V => {
    const t = toks[p++];
    if (t === "(") {
      const v = sum();
      if (toks[p++] !== ")") throw new Error("missing )");
      return v;
    }
    if (t && /^\d+$/.test(t)) {
      used.push(Number(t));
      return { n: BigInt(t), d: 1n };
    }
    throw new Error(`unexpected ${t}`);
  };
  const prod = (): V => {
    let v = primary();
    while (toks[p] === "*" || toks[p] === "/") {
      const op = toks[p++];
      const w = primary();
      v = op === "*" ? mk(v.n * w.n, v.d * w.d) : mk(v.n * w.d, v.d * w.n);
    }
    return v;
  };
  const sum = (): V => {
    let v = prod();
    while (toks[p] === "+" || toks[p] === "-") {
      const op = toks[p++];
      const w = prod();
      v = op === "+" ? mk(v.n * w.d + w.n * v.d, v.d * w.d) : mk(v.n * w.d - w.n * v.d, v.d * w.d);
    }
    return v;
  };
  try {
    const v = sum();
    if (p !== toks.length) return `trailing "${toks[p]}"`;
    return { num: v.n, den: v.d, used };
  } catch (err) {
    return (err as Error).message;
  }
}

/** Is `expr` an expression over `numbers` (each at most once) worth `target`? */
export function expressionReaches(numbers: readonly number[], target: number, expr: string): string | null {
  const v = evalExpression(expr);
  if (typeof v === "string") return `boxed "${expr}" does not parse: ${v}`;
  if (v.den !== 1n || v.num !== BigInt(target)) return `boxed "${expr}" is worth ${v.num}/${v.den}, not ${target}`;
  const left = [...numbers];
  for (const u of v.used) {
    const i = left.indexOf(u);
    if (i < 0) return `boxed "${expr}" uses ${u} too often`;
    left.splice(i, 1);
  }
  return null;
}

/**
 * Checks the lines of one search (a sequential trace without its box, or one parallel step).
 * `root` is the state the search starts from; in a step the first line must be `first` (the plan's
 * move) applied to it, and backtracking may not leave the step's own subtree.
 */
function checkCountdownLines(
  lines: readonly string[],
  root: readonly number[],
  target: number,
  where: string,
  first: string | null,
): { errors: string[]; reached: boolean } {
  const errors: string[] = [];
  // path[k] = state after k operations along the current branch; path[0] = root.
  let path: CdState[] = [{ nums: [...root] }];
  let floor = 0; // backtracking may not go above path[floor]
  let reached = false;
  lines.forEach((line, k) => {
    const at = `${where} line ${k + 1} "${line}"`;
    if (reached) errors.push(`${at}: a line after the target was reached`);
    if (line === "fail") {
      if (k !== lines.length - 1) errors.push(`${at}: "fail" is not the last line`);
      return;
    }
    const back = /^back \(([\d ]+)\)$/.exec(line);
    if (back) {
      const want = back[1]!;
      const idx = path.findIndex((s) => key(s.nums) === want);
      if (idx < floor || idx < 0 || idx === path.length - 1)
        errors.push(`${at}: not a proper ancestor of the current state within this search`);
      else path = path.slice(0, idx + 1);
      return;
    }
    const m = /^(\d+)([-+*/])(\d+)=(\d+) \(([\d ]+)\)$/.exec(line);
    if (!m) {
      errors.push(`${at}: not an operation, back or fail line`);
      return;
    }
    const [a, op, b, r] = [Number(m[1]), m[2]!, Number(m[3]), Number(m[4])];
    if (k === 0 && first !== null && `${a}${op}${b}=${r}` !== first)
      errors.push(`${at}: the step does not start with its plan's move ${first}`);
    const exact = op === "+" ? a + b : op === "-" ? a - b : op === "*" ? a * b : b !== 0 && a % b === 0 ? a / b : NaN;
    if (exact !== r) errors.push(`${at}: ${a}${op}${b} is not ${r}`);
    if (!(r > 0)) errors.push(`${at}: result not positive`);
    if (a < b) errors.push(`${at}: the larger operand must come first`);
    const cur = path[path.length - 1]!.nums;
    const rest = [...cur];
    for (const x of [a, b]) {
      const i = rest.indexOf(x);
      if (i < 0) errors.push(`${at}: ${x} is not available in (${key(cur)})`);
      else rest.splice(i, 1);
    }
    const next = [...rest, r];
    if (key(next) !== m[5]) errors.push(`${at}: numbers left should be (${key(next)})`);
    path.push({ nums: next });
    if (k === 0 && first !== null) floor = 1; // a step's subtree root is its first move's state
    if (r === target) reached = true;
  });
  return { errors, reached };
}

/** Checks a sequential Countdown trace; `solved` tells whether it ends in a correct box. */
export function checkCountdownSequential(numbers: readonly number[], target: number, text: string): { errors: string[]; solved: boolean } {
  const lines = text.split("\n");
  const box = /^\\boxed\{(.+)\}$/.exec(lines.pop() ?? "");
  if (!box) return { errors: ["the last line is not \\boxed{...}"], solved: false };
  const { errors, reached } = checkCountdownLines(lines, numbers, target, "sequential", null);
  if (reached) {
    const bad = expressionReaches(numbers, target, box[1]!);
    if (bad) errors.push(bad);
  } else {
    if (lines[lines.length - 1] !== "fail") errors.push("an unsolved trace must end with fail");
    if (box[1] !== "none") errors.push("an unsolved trace must box none");
  }
  return { errors, solved: reached };
}

// ------------------------------------------------------------------ the NPR parallel shape

interface ParallelParts {
  plans: string[];
  steps: string[];
  takeaway: string;
  boxed: string;
}

/** Splits a canonical one-block parallel trace into its parts (a strict reading of its text). */
export function parallelParts(text: string): ParallelParts | string {
  const m =
    /^<guideline>((?:<plan>[^<]*<\/plan>)+)<\/guideline>((?:<step>[^<]*<\/step>)+)<takeaway>([^<]*)<\/takeaway>\n\\boxed\{([^\n]+)\}$/.exec(
      text,
    );
  if (!m) return "not one canonical block (guideline, plans, steps, takeaway) followed by a boxed conclusion";
  const plans = [...m[1]!.matchAll(/<plan>([^<]*)<\/plan>/g)].map((x) => x[1]!);
  const steps = [...m[2]!.matchAll(/<step>([^<]*)<\/step>/g)].map((x) => x[1]!);
  return { plans, steps, takeaway: m[3]!, boxed: m[4]! };
}

/** Common checks: 2-5 plans, numbered 1..n, one step per plan numbered alike, no sibling named. */
function checkShape(p: ParallelParts): string[] {
  const errors: string[] = [];
  if (p.plans.length < 2 || p.plans.length > 5) errors.push(`${p.plans.length} plans; 2-5 expected`);
  if (p.steps.length !== p.plans.length) errors.push(`${p.steps.length} steps for ${p.plans.length} plans`);
  p.plans.forEach((t, k) => t.startsWith(`${k + 1}: `) || errors.push(`plan ${k + 1} does not start "${k + 1}: "`));
  p.steps.forEach((t, k) => {
    if (!t.startsWith(`${k + 1}: `)) errors.push(`step ${k + 1} does not start "${k + 1}: "`);
    if (/\b(step|steps|plan|plans)\b/i.test(t.slice(`${k + 1}: `.length))) errors.push(`step ${k + 1} mentions a step or plan`);
  });
  return errors;
}

/** Checks a parallel Countdown trace: shape, each step's search, takeaway and box. */
export function checkCountdownParallel(
  numbers: readonly number[],
  target: number,
  text: string,
): { errors: string[]; solved: boolean; plans: number } {
  const p = parallelParts(text);
  if (typeof p === "string") return { errors: [p], solved: false, plans: 0 };
  const errors = checkShape(p);
  const winners: number[] = [];
  p.steps.forEach((s, k) => {
    const plan = /^\d+: (\d+[-+*/]\d+=\d+)$/.exec(p.plans[k] ?? "");
    if (!plan) errors.push(`plan ${k + 1} "${p.plans[k]}" is not one move`);
    const lines = s.slice(`${k + 1}: `.length).split("\n");
    const r = checkCountdownLines(lines, numbers, target, `step ${k + 1}`, plan ? plan[1]! : null);
    errors.push(...r.errors);
    if (r.reached) winners.push(k + 1);
    else if (lines[lines.length - 1] !== "fail") errors.push(`step ${k + 1} neither reaches ${target} nor ends with fail`);
  });
  const want = `steps reaching ${target}: ${winners.length ? winners.join(" ") : "none"}`;
  if (p.takeaway !== want) errors.push(`takeaway "${p.takeaway}", expected "${want}"`);
  if (winners.length > 0) {
    const bad = expressionReaches(numbers, target, p.boxed);
    if (bad) errors.push(bad);
  } else if (p.boxed !== "none") errors.push("no step reached the target, but the box is not none");
  return { errors, solved: winners.length > 0, plans: p.plans.length };
}

// ------------------------------------------------------------------ logic grid

interface LgPuzzle {
  houses: number;
  attrs: { name: string; values: string[] }[];
  clues: string[];
}

type Rel = (hx: number, hy: number) => boolean;
interface LgClue {
  x: string;
  y: string | null;
  /** For a unary clue: may x be in house h? For a binary one: may x be in hx with y in hy? */
  ok: Rel;
}

/** Reads a clue sentence (its own regexes, not the generator's parser). */
function readClue(text: string): LgClue {
  let m = /^(\w+) is in house (\d+)\.$/.exec(text);
  if (m) return { x: m[1]!, y: null, ok: (h) => h === Number(m![2]) - 1 };
  m = /^(\w+) is not in house (\d+)\.$/.exec(text);
  if (m) return { x: m[1]!, y: null, ok: (h) => h !== Number(m![2]) - 1 };
  const bin: [RegExp, Rel][] = [
    [/^(\w+) and (\w+) are in the same house\.$/, (a, b) => a === b],
    [/^(\w+) and (\w+) are in different houses\.$/, (a, b) => a !== b],
    [/^(\w+) is directly left of (\w+)\.$/, (a, b) => a + 1 === b],
    [/^(\w+) and (\w+) are neighbours\.$/, (a, b) => Math.abs(a - b) === 1],
    [/^(\w+) is somewhere left of (\w+)\.$/, (a, b) => a < b],
  ];
  for (const [re, ok] of bin) {
    m = re.exec(text);
    if (m) return { x: m[1]!, y: m[2]!, ok };
  }
  throw new Error(`unreadable clue "${text}"`);
}

/** Candidate houses per value word, plus which values are placed. */
interface LgGrid {
  cand: Map<string, Set<number>>;
  placed: Set<string>;
}

const copyGrid = (g: LgGrid): LgGrid => ({ cand: new Map([...g.cand].map(([k, v]) => [k, new Set(v)])), placed: new Set(g.placed) });

/** Checks the lines of one search (a sequential trace without its tail, or one parallel step). */
function checkLogicLines(
  pz: LgPuzzle,
  lines: readonly string[],
  where: string,
  firstTry: string | null,
): { errors: string[]; end: "solved" | "dead" | "fail" | "open"; grid: LgGrid } {
  const errors: string[] = [];
  const clues = pz.clues.map(readClue);
  const attrOf = new Map<string, number>();
  pz.attrs.forEach((a, i) => a.values.forEach((v) => attrOf.set(v, i)));
  let g: LgGrid = {
    cand: new Map([...attrOf.keys()].map((v) => [v, new Set(Array.from({ length: pz.houses }, (_, h) => h))])),
    placed: new Set(),
  };
  // Open case splits: the grid before each "try" and the value/house it assumed.
  const tries: { saved: LgGrid; word: string; house: number }[] = [];
  let end: "solved" | "dead" | "fail" | "open" = "open";
  let dead = false;
  const siblingsOf = (w: string) => pz.attrs[attrOf.get(w)!]!.values;
  const place = (w: string, h: number) => {
    g.cand.set(w, new Set([h]));
    g.placed.add(w);
    for (const u of siblingsOf(w)) if (u !== w) g.cand.get(u)!.delete(h);
  };
  /** May clue c leave value w in house h, given the other value's candidates? */
  const allows = (c: LgClue, w: string, h: number): boolean => {
    if (c.y === null) return c.ok(h, -1);
    const other = w === c.x ? c.y : c.x;
    return [...g.cand.get(other)!].some((o) => (w === c.x ? c.ok(h, o) : c.ok(o, h)));
  };
  const clueOf = (s: string, at: string): LgClue | null => {
    const c = clues[Number(s) - 1];
    if (!c) errors.push(`${at}: no clue ${s}`);
    return c ?? null;
  };
  lines.forEach((line, k) => {
    const at = `${where} line ${k + 1} "${line}"`;
    if (end !== "open") errors.push(`${at}: a line after the search ended`);
    if (dead && !/^back: /.test(line)) errors.push(`${at}: after a dead end only back may follow`);
    let m: RegExpExecArray | null;
    if ((m = /^(\w+)=(\d+) c(\d+)$/.exec(line))) {
      const [w, h, c] = [m[1]!, Number(m[2]) - 1, clueOf(m[3]!, at)];
      if (!g.cand.has(w)) return void errors.push(`${at}: unknown value ${w}`);
      if (c && c.x !== w && c.y !== w) errors.push(`${at}: clue ${m[3]} does not name ${w}`);
      if (!g.cand.get(w)!.has(h)) errors.push(`${at}: house ${h + 1} is not a candidate of ${w}`);
      if (g.placed.has(w)) errors.push(`${at}: ${w} is already placed`);
      for (const o of g.cand.get(w)!) if (o !== h && c && allows(c, w, o)) errors.push(`${at}: clue ${m[3]} allows ${w} in house ${o + 1}`);
      place(w, h);
    } else if ((m = /^(\w+) not ([\d ]+) c(\d+)$/.exec(line))) {
      const [w, hs, c] = [m[1]!, m[2]!.split(" ").map((x) => Number(x) - 1), clueOf(m[3]!, at)];
      if (!g.cand.has(w)) return void errors.push(`${at}: unknown value ${w}`);
      if (c && c.x !== w && c.y !== w) errors.push(`${at}: clue ${m[3]} does not name ${w}`);
      for (const h of hs) {
        if (!g.cand.get(w)!.has(h)) errors.push(`${at}: house ${h + 1} is not a candidate of ${w}`);
        if (c && allows(c, w, h)) errors.push(`${at}: clue ${m[3]} allows ${w} in house ${h + 1}`);
      }
      for (const h of hs) g.cand.get(w)!.delete(h);
    } else if ((m = /^(\w+)=(\d+) only$/.exec(line))) {
      const [w, h] = [m[1]!, Number(m[2]) - 1];
      if (!g.cand.has(w)) return void errors.push(`${at}: unknown value ${w}`);
      const single = g.cand.get(w)!.size === 1 && g.cand.get(w)!.has(h);
      const lastInHouse = g.cand.get(w)!.has(h) && siblingsOf(w).every((u) => u === w || !g.cand.get(u)!.has(h));
      if (!single && !lastInHouse) errors.push(`${at}: ${w} has other houses and house ${h + 1} other values`);
      if (g.placed.has(w)) errors.push(`${at}: ${w} is already placed`);
      place(w, h);
    } else if ((m = /^(\w+) has no house$/.exec(line))) {
      if (g.cand.get(m[1]!)?.size !== 0) errors.push(`${at}: ${m[1]} still has a house`);
      dead = true;
    } else if ((m = /^house (\d+) has no (\w+)$/.exec(line))) {
      const a = pz.attrs.find((x) => x.name === m![2]);
      const h = Number(m[1]) - 1;
      if (!a || a.values.some((v) => g.cand.get(v)!.has(h))) errors.push(`${at}: house ${h + 1} can still take a ${m[2]}`);
      dead = true;
    } else if ((m = /^try (\w+)=(\d+)$/.exec(line))) {
      const [w, h] = [m[1]!, Number(m[2]) - 1];
      if (k === 0 && firstTry !== null && `${w}=${h + 1}` !== firstTry)
        errors.push(`${at}: the step does not start with its plan's case ${firstTry}`);
      if (!g.cand.get(w)?.has(h) || g.placed.has(w)) errors.push(`${at}: ${w}=${h + 1} is not an open candidate`);
      tries.push({ saved: copyGrid(g), word: w, house: h });
      place(w, h);
    } else if ((m = /^back: (\w+) not (\d+)$/.exec(line))) {
      const t = tries.pop();
      if (!dead) errors.push(`${at}: back without a dead end`);
      if (!t || t.word !== m[1] || t.house !== Number(m[2]) - 1) errors.push(`${at}: does not undo the innermost try`);
      if (firstTry !== null && tries.length === 0) errors.push(`${at}: a step may not undo its own case`);
      if (t) {
        g = t.saved;
        g.cand.get(t.word)!.delete(t.house);
      }
      dead = false;
    } else if (line === "solved") {
      const all = [...g.cand.values()].every((s) => s.size === 1);
      if (!all || g.placed.size !== g.cand.size) errors.push(`${at}: not every value is placed`);
      end = "solved";
    } else if (line === "fail") {
      if (k !== lines.length - 1) errors.push(`${at}: "fail" is not the last line`);
      end = "fail";
    } else errors.push(`${at}: not a line of the grammar`);
  });
  if (dead) end = "dead";
  return { errors, end, grid: g };
}

/** Checks a boxed grid against the clues with this file's own reading of them. */
export function gridSatisfies(pz: LgPuzzle, boxed: string): string | null {
  const houseOf = new Map<string, number>();
  const groups = boxed.split(";").map((s) => s.trim().split(" "));
  if (groups.length !== pz.houses) return `${groups.length} houses boxed`;
  groups.forEach((ws, h) => ws.forEach((w) => houseOf.set(w, h)));
  for (const a of pz.attrs) {
    const hs = a.values.map((v) => houseOf.get(v));
    if (hs.some((h) => h === undefined) || new Set(hs).size !== pz.houses) return `${a.name} is not one value per house`;
  }
  for (const text of pz.clues) {
    const c = readClue(text);
    const hx = houseOf.get(c.x)!;
    if (!(c.y === null ? c.ok(hx, -1) : c.ok(hx, houseOf.get(c.y)!))) return `clue "${text}" fails`;
  }
  return null;
}

/** "Alice red cat; ..." from a solved checker grid. */
function gridText(pz: LgPuzzle, g: LgGrid): string {
  return Array.from({ length: pz.houses }, (_, h) => pz.attrs.map((a) => a.values.find((v) => g.cand.get(v)!.has(h))!).join(" ")).join(
    "; ",
  );
}

export function checkLogicSequential(pz: LgPuzzle, text: string): { errors: string[]; solved: boolean } {
  const lines = text.split("\n");
  const box = /^\\boxed\{(.+)\}$/.exec(lines.pop() ?? "");
  if (!box) return { errors: ["the last line is not \\boxed{...}"], solved: false };
  const r = checkLogicLines(pz, lines, "sequential", null);
  const errors = [...r.errors];
  if (r.end === "solved") {
    const bad = gridSatisfies(pz, box[1]!);
    if (bad) errors.push(`boxed grid: ${bad}`);
    if (box[1] !== gridText(pz, r.grid)) errors.push("the boxed grid is not the grid the trace placed");
  } else if (box[1] !== "none" || r.end !== "fail") errors.push(`an unsolved trace must end with fail and box none (ended ${r.end})`);
  return { errors, solved: r.end === "solved" };
}

export function checkLogicParallel(pz: LgPuzzle, text: string): { errors: string[]; solved: boolean; plans: number } {
  const p = parallelParts(text);
  if (typeof p === "string") return { errors: [p], solved: false, plans: 0 };
  const errors = checkShape(p);
  const winners: number[] = [];
  let firstGrid: string | null = null;
  p.steps.forEach((s, k) => {
    const plan = /^\d+: try (\w+=\d+)$/.exec(p.plans[k] ?? "");
    if (!plan) errors.push(`plan ${k + 1} "${p.plans[k]}" is not one case`);
    const r = checkLogicLines(pz, s.slice(`${k + 1}: `.length).split("\n"), `step ${k + 1}`, plan ? plan[1]! : null);
    errors.push(...r.errors);
    if (r.end === "open") errors.push(`step ${k + 1} ends without solved, a dead end or fail`);
    if (r.end === "solved") {
      winners.push(k + 1);
      firstGrid ??= gridText(pz, r.grid);
    }
  });
  const cases = p.plans.map((t) => /try (\w+)=/.exec(t)?.[1]);
  if (new Set(cases).size !== 1) errors.push("the plans do not split one value");
  const want = `steps solving it: ${winners.length ? winners.join(" ") : "none"}`;
  if (p.takeaway !== want) errors.push(`takeaway "${p.takeaway}", expected "${want}"`);
  if (winners.length > 0) {
    const bad = gridSatisfies(pz, p.boxed);
    if (bad) errors.push(`boxed grid: ${bad}`);
    if (p.boxed !== firstGrid) errors.push("the boxed grid is not the first solving step's grid");
  } else if (p.boxed !== "none") errors.push("no step solved it, but the box is not none");
  return { errors, solved: winners.length > 0, plans: p.plans.length };
}
