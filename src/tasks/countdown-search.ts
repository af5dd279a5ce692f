/**
 * The Countdown search that the reference traces write out, one checkable line per operation.
 * A bounded depth-first search (Stream of Search style): at every state the moves are ordered by
 * how close their result is to the target, the root tries them all, deeper states try at most
 * `width`, a two-number state tries only its closest move (if that misses, every move misses),
 * and the whole search stops after `budget` operation lines, so traces are not optimal paths and
 * sometimes fail, as a real search does. The parallel form gives each of 2-5 best first moves its
 * own step running the same search inside that subtree. Knows numbers and strings only.
 *
 * Line grammar (sequential form; a parallel step uses the same lines):
 *
 *   64-18=46 (28 9 46)     an operation (larger operand first) and the numbers left after it:
 *                          the untouched numbers in order, then the result
 *   back (64 18 28 9)      the subtree below is done; return to this earlier state
 *   fail                   the budget is spent or the tree exhausted without reaching the target
 *   \boxed{(64-18)*2}      the answer: the path's operations as one expression (or \boxed{none})
 */

export type CdOp = "+" | "-" | "*" | "/";

/** One operation: a op b = r, and the numbers left after it (`state`, the result last). */
export interface CdMove {
  a: number;
  op: CdOp;
  b: number;
  r: number;
  state: number[];
}

/**
 * Results above this are never explored (and never built by the generator): it bounds the numbers
 * a trace can contain, so the task tokenizer can hold each as one token.
 */
export const VALUE_CAP = 999;

export interface CountdownSearchOptions {
  /** Moves tried per state below the root (the root tries all). */
  width: number;
  /** Operation lines of a sequential trace. */
  budget: number;
  /** Operation lines of one parallel step (its first move included). */
  stepBudget: number;
}

export const DEFAULT_COUNTDOWN_SEARCH: Readonly<CountdownSearchOptions> = Object.freeze({ width: 3, budget: 24, stepBudget: 12 });

/** The result of a op b (a >= b), or null when the game does not allow it or it is useless. */
function applyOp(a: number, op: CdOp, b: number): number | null {
  let r: number;
  if (op === "+") r = a + b;
  else if (op === "-")
    r = a - b; // positive intermediates only
  else if (op === "*")
    r = b === 1 ? 0 : a * b; // x*1 and x/1 only drop the 1, which is free anyway
  else r = b !== 1 && a % b === 0 ? a / b : 0;
  return r > 0 && r <= VALUE_CAP ? r : null;
}

const OPS: readonly CdOp[] = ["+", "-", "*", "/"];

/**
 * Every distinct move from `state`, closest result to `target` first (ties keep generation order:
 * pairs in state order, then + - * /). Identical lines from equal numbers appear once.
 */
export function countdownMoves(state: readonly number[], target: number): CdMove[] {
  const out: { m: CdMove; d: number; k: number }[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < state.length; i++) {
    for (let j = i + 1; j < state.length; j++) {
      const [a, b] = state[i]! >= state[j]! ? [state[i]!, state[j]!] : [state[j]!, state[i]!];
      for (const op of OPS) {
        const r = applyOp(a, op, b);
        const key = `${a}${op}${b}`;
        if (r === null || seen.has(key)) continue;
        seen.add(key);
        const rest = state.filter((_, k) => k !== i && k !== j);
        out.push({ m: { a, op, b, r, state: [...rest, r] }, d: Math.abs(r - target), k: out.length });
      }
    }
  }
  out.sort((x, y) => x.d - y.d || x.k - y.k);
  return out.map((x) => x.m);
}

/** "(28 9 46)" */
export function stateText(state: readonly number[]): string {
  return `(${state.join(" ")})`;
}

/** "64-18=46 (28 9 46)" */
export function moveLine(m: CdMove): string {
  return `${m.a}${m.op}${m.b}=${m.r} ${stateText(m.state)}`;
}

/** "64-18=46", the plan text of a first move. */
export function moveText(m: CdMove): string {
  return `${m.a}${m.op}${m.b}=${m.r}`;
}

interface SearchRun {
  lines: string[];
  /** The moves from the search's root to the target, or null when it was not reached. */
  path: CdMove[] | null;
}

/**
 * Depth-first search from `root` (at depth `depth0`: 0 for the problem's numbers, 1 inside a
 * parallel step), writing its lines; stops at the target, when the tree is exhausted or after
 * `budget` operation lines.
 */
function depthFirst(root: readonly number[], target: number, depth0: number, width: number, budget: number): SearchRun {
  const lines: string[] = [];
  const stack: CdMove[] = [];
  let used = 0;
  // "found" ends the search, "spent" ends it on the budget, "done" means this subtree is exhausted.
  const visit = (state: readonly number[], depth: number): "found" | "spent" | "done" => {
    const moves = countdownMoves(state, target);
    const limit = state.length === 2 ? 1 : depth === 0 ? moves.length : width;
    for (let k = 0; k < Math.min(limit, moves.length); k++) {
      if (used >= budget) return "spent";
      const m = moves[k]!;
      if (k > 0) lines.push(`back ${stateText(state)}`);
      lines.push(moveLine(m));
      used++;
      stack.push(m);
      if (m.r === target) return "found";
      if (m.state.length >= 2) {
        const r = visit(m.state, depth + 1);
        if (r !== "done") return r;
      }
      stack.pop();
    }
    return "done";
  };
  const r = visit(root, depth0);
  return { lines, path: r === "found" ? stack : null };
}

/**
 * The path's operations as one expression over the given numbers: every compound operand in
 * brackets ("(64-18)*2"), so no precedence rule is needed to read it.
 */
export function pathExpression(numbers: readonly number[], path: readonly CdMove[]): string {
  const pool: { v: number; text: string; atom: boolean }[] = numbers.map((v) => ({ v, text: String(v), atom: true }));
  const take = (v: number) => {
    const i = pool.findIndex((p) => p.v === v);
    if (i < 0) throw new Error(`pathExpression: ${v} is not available`); // a bug: paths come from the search
    return pool.splice(i, 1)[0]!;
  };
  const wrap = (x: { text: string; atom: boolean }) => (x.atom ? x.text : `(${x.text})`);
  let last = pool[0]!;
  for (const m of path) {
    const a = take(m.a);
    const b = take(m.b);
    last = { v: m.r, text: `${wrap(a)}${m.op}${wrap(b)}`, atom: false };
    pool.push(last);
  }
  return last.text;
}

export interface CountdownTrace {
  text: string;
  /** Did the search reach the target (so the boxed expression is correct)? */
  solved: boolean;
  /** The boxed expression, or null when the search failed. */
  expression: string | null;
  /** Operation lines written (all steps together in the parallel form). */
  numOps: number;
}

const isOp = (line: string) => /^\d/.test(line);

/** The sequential form: one bounded depth-first search, then the boxed expression. */
export function sequentialTrace(
  numbers: readonly number[],
  target: number,
  opts: CountdownSearchOptions = DEFAULT_COUNTDOWN_SEARCH,
): CountdownTrace {
  const run = depthFirst(numbers, target, 0, opts.width, opts.budget);
  const expression = run.path ? pathExpression(numbers, run.path) : null;
  const tail = expression === null ? "fail\n\\boxed{none}" : `\\boxed{${expression}}`;
  return { text: `${[...run.lines, tail].join("\n")}`, solved: expression !== null, expression, numOps: run.lines.filter(isOp).length };
}

/**
 * The NPR parallel form: a guideline of `numPlans` plans (the best first moves, 2-5), one step per
 * plan running the same bounded search inside its subtree (never mentioning a sibling), a takeaway
 * naming the steps that reached the target, and the boxed expression of the first of them.
 * Canonical form: no text between </guideline>, the steps and <takeaway>.
 */
export function parallelTrace(
  numbers: readonly number[],
  target: number,
  numPlans: number,
  opts: CountdownSearchOptions = DEFAULT_COUNTDOWN_SEARCH,
): CountdownTrace {
  const firsts = countdownMoves(numbers, target).slice(0, Math.min(5, numPlans));
  if (firsts.length < 2) throw new Error(`parallelTrace: ${numbers.join(" ")} has fewer than 2 first moves`); // the generator rejects these
  const steps = firsts.map((m) => {
    const lines = [moveLine(m)];
    let path: CdMove[] | null = m.r === target ? [m] : null;
    if (path === null && m.state.length >= 2) {
      const run = depthFirst(m.state, target, 1, opts.width, opts.stepBudget - 1);
      lines.push(...run.lines);
      if (run.path) path = [m, ...run.path];
    }
    if (path === null) lines.push("fail");
    return { lines, path };
  });
  const winners = steps.flatMap((s, k) => (s.path ? [k + 1] : []));
  const first = steps.find((s) => s.path !== null);
  const expression = first ? pathExpression(numbers, first.path!) : null;
  const plans = firsts.map((m, k) => `<plan>${k + 1}: ${moveText(m)}</plan>`).join("");
  const body = steps.map((s, k) => `<step>${k + 1}: ${s.lines.join("\n")}</step>`).join("");
  const takeaway = `<takeaway>steps reaching ${target}: ${winners.length > 0 ? winners.join(" ") : "none"}</takeaway>`;
  const text = `<guideline>${plans}</guideline>${body}${takeaway}\n\\boxed{${expression ?? "none"}}`;
  return { text, solved: expression !== null, expression, numOps: steps.reduce((n, s) => n + s.lines.filter(isOp).length, 0) };
}
