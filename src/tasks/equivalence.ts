/**
 * Math answer equivalence: are two answer strings the same mathematical answer? Normalises both
 * (normalize.ts), parses their shapes (answer-shape.ts) and compares: containers by their rule
 * (unordered lists and sets, ordered tuples with significant brackets, matrices element-wise), leaves
 * in this order: exact key, text, base-n literals, equations, exact integer arithmetic (BigInt),
 * numeric value with tolerance, random-point evaluation for expressions with variables, and
 * symbolic `simplify(a - b) = 0`. LaTeX is parsed by @cortex-js/compute-engine 0.140.
 * Follows Qwen2.5-Math's `math_equal` (grader.py at QwenLM/Qwen2.5-Math@a45202bd) in spirit; the
 * differences are listed in docs/grading.md. Knows nothing about responses or benchmarks.
 */
import { ComputeEngine } from "@cortex-js/compute-engine";
import { Rng } from "../util/index.ts";
import { normalizeAnswer } from "./normalize.ts";
import { parseAnswer, type AnswerNode } from "./answer-shape.ts";

export interface EquivOptions {
  /** Relative tolerance when either side is a decimal approximation (Qwen: 1e-4). */
  relTol?: number;
  /** Absolute tolerance allowed by the benchmark (OlympiadBench `error`), added to relTol. */
  absTol?: number;
}

interface Ctx {
  relTol: number;
  absTol: number;
  /** Either side carried `%`: accept x, x/100 and x*100 (Qwen's include_percentage). */
  percent: boolean;
  /**
   * Which side alone carried a degree sign ("a" = pred): its value may also be read as radians
   * against a side written with `\pi` (`30^\circ` = `\frac{\pi}{6}`).
   */
  degrees: "a" | "b" | null;
}

type CE = InstanceType<typeof ComputeEngine>;
type Expr = NonNullable<ReturnType<CE["parse"]>>;

// One engine per thread: construction costs ~60 ms and declarations accumulate in it.
let engine: CE | null = null;
function ce(): CE {
  engine ??= new ComputeEngine();
  return engine;
}

/** True when `pred` and `gold` denote the same answer. Never throws on odd input. */
export function answersEqual(pred: string, gold: string, opts: EquivOptions = {}): boolean {
  const np = normalizeAnswer(pred);
  const ng = normalizeAnswer(gold);
  if (np.key === ng.key && np.key !== "") return true;
  if (np.key === "" || ng.key === "") return false;
  const degrees = np.degrees === ng.degrees ? null : np.degrees ? "a" : "b";
  const ctx: Ctx = { relTol: opts.relTol ?? 1e-4, absTol: opts.absTol ?? 0, percent: np.percent || ng.percent, degrees };
  if (nodesEqual(parseAnswer(np.text), parseAnswer(ng.text), ctx)) return true;
  // Two equations of which one lost its `y =` to lhs stripping ("2x+4y-3=0" against
  // "y=-\frac12x+\frac34"): compare them whole, as equations.
  const single = (t: string) => t.split("=").length === 2 && !/[,;]/.test(t);
  return single(np.text) && single(ng.text) && equationsEqual(np.text, ng.text);
}

function nodesEqual(a: AnswerNode, b: AnswerNode, ctx: Ctx): boolean {
  if (a.kind === "leaf" && b.kind === "leaf") return leafEqual(a.text, b.text, ctx);
  // A one-member set answers a question with one answer: `\{2\}` for 2.
  if (a.kind === "set" && a.items.length === 1 && b.kind === "leaf") return nodesEqual(a.items[0]!, b, ctx);
  if (b.kind === "set" && b.items.length === 1 && a.kind === "leaf") return nodesEqual(a, b.items[0]!, ctx);
  const unordered = (n: AnswerNode) => n.kind === "list" || n.kind === "set";
  if (unordered(a) && unordered(b)) return matchUnordered((a as { items: AnswerNode[] }).items, (b as { items: AnswerNode[] }).items, ctx);
  if (a.kind === "bracket" && b.kind === "bracket") {
    return a.open === b.open && a.close === b.close && sameOrdered(a.items, b.items, ctx);
  }
  // A tuple written without its parentheses ("3, \frac{\pi}{2}" for "(3, \frac{\pi}{2})").
  if (a.kind === "list" && b.kind === "bracket" && b.open === "(" && b.close === ")") return sameOrdered(a.items, b.items, ctx);
  if (b.kind === "list" && a.kind === "bracket" && a.open === "(" && a.close === ")") return sameOrdered(a.items, b.items, ctx);
  if (a.kind === "union" && b.kind === "union") return matchUnordered(a.parts, b.parts, ctx);
  if (a.kind === "matrix" && b.kind === "matrix") {
    return a.rows.length === b.rows.length && a.rows.every((r, i) => sameOrdered(r, b.rows[i]!, ctx));
  }
  // A column or row vector against a tuple.
  const vec = (n: AnswerNode): AnswerNode[] | null => {
    if (n.kind === "matrix" && (n.rows.length === 1 || n.rows.every((r) => r.length === 1))) return n.rows.flat();
    if (n.kind === "bracket" && n.open === "(" && n.close === ")") return n.items;
    return null;
  };
  if (a.kind === "matrix" || b.kind === "matrix") {
    const va = vec(a);
    const vb = vec(b);
    return va !== null && vb !== null && sameOrdered(va, vb, ctx);
  }
  return false;
}

function sameOrdered(a: AnswerNode[], b: AnswerNode[], ctx: Ctx): boolean {
  return a.length === b.length && a.every((x, i) => nodesEqual(x, b[i]!, ctx));
}

/** Perfect matching between two multisets under nodesEqual (augmenting paths; lists are short). */
function matchUnordered(a: AnswerNode[], b: AnswerNode[], ctx: Ctx): boolean {
  if (a.length !== b.length) return false;
  const n = a.length;
  const eq: boolean[][] = a.map((x) => b.map((y) => nodesEqual(x, y, ctx)));
  const owner: number[] = new Array(n).fill(-1); // owner[j] = index in a matched to b[j]
  const tryAssign = (i: number, seen: boolean[]): boolean => {
    for (let j = 0; j < n; j++) {
      if (!eq[i]![j] || seen[j]) continue;
      seen[j] = true;
      if (owner[j] === -1 || tryAssign(owner[j]!, seen)) {
        owner[j] = i;
        return true;
      }
    }
    return false;
  };
  for (let i = 0; i < n; i++) if (!tryAssign(i, new Array(n).fill(false))) return false;
  return true;
}

// ---------------------------------------------------------------- leaves

const PLAIN_NUMBER = /^-?\d+(\.\d+)?$/;
const BASE_N = /^\d+_\{?\d+\}?$/;

function leafEqual(a: string, b: string, ctx: Ctx): boolean {
  const ka = a.replace(/\s+/g, "");
  const kb = b.replace(/\s+/g, "");
  if (ka === kb) return true;
  // Words ("Evelyn", "east", "even", "ellipse") compare case-insensitively, as text.
  // Two-letter products ("ab" vs "ba") are algebra, not words: a word needs three letters somewhere.
  const word = /^[a-zA-Z][a-zA-Z\s\-']+$/;
  if (word.test(a) && word.test(b) && /[a-z]{2}/.test(a + b) && (/[a-zA-Z]{3}/.test(a) || /[a-zA-Z]{3}/.test(b)))
    return ka.toLowerCase() === kb.toLowerCase();
  // Base-n literals ("52_8") only equal themselves: braces aside, they already differed.
  if (BASE_N.test(ka) || BASE_N.test(kb)) return ka.replace(/[{}]/g, "") === kb.replace(/[{}]/g, "");
  const eqA = a.includes("=");
  const eqB = b.includes("=");
  if (eqA || eqB) return eqA && eqB && equationsEqual(a, b);
  // Exact comparison for integers: both sides integer arithmetic -> BigInt, no tolerance.
  const ia = exactInteger(ka);
  const ib = exactInteger(kb);
  if (ia !== null && ib !== null) return ia === ib || (ctx.percent && (ia === ib * 100n || ib === ia * 100n));
  // An integer answer against a decimal literal must match exactly ("26.9999" is not 27).
  if (PLAIN_NUMBER.test(ka) && PLAIN_NUMBER.test(kb) && ctx.absTol === 0 && !ctx.percent) {
    if (!ka.includes(".") || !kb.includes(".")) return Number(ka) === Number(kb);
  }
  return valueEqual(a, b, ctx);
}

/**
 * Exact value of integer arithmetic (digits, + - \times * ^ ! and brackets), or null when the
 * text is anything else. NOTE(h3): powers are not bounded here on purpose: `9^{9^9}` runs for
 * seconds, which is what the grader pool's per-item time limit is for.
 */
export function exactInteger(s: string): bigint | null {
  const toks = s.replace(/\\times/g, "*").match(/\d+|[-+*^!(){}]|\S/g);
  if (!toks || toks.length === 0) return null;
  let p = 0;
  const fail = Symbol("fail");
  const peek = () => toks[p];
  const expr = (): bigint => {
    let v = term();
    while (peek() === "+" || peek() === "-") v = toks[p++] === "+" ? v + term() : v - term();
    return v;
  };
  const term = (): bigint => {
    let v = unary();
    while (peek() === "*") {
      p++;
      v *= unary();
    }
    return v;
  };
  const unary = (): bigint => {
    if (peek() === "-") {
      p++;
      return -unary();
    }
    if (peek() === "+") {
      p++;
      return unary();
    }
    return power();
  };
  const power = (): bigint => {
    const base = postfix();
    if (peek() !== "^") return base;
    p++;
    const e =
      peek() === "-"
        ? (() => {
            throw fail;
          })()
        : power();
    return base ** e;
  };
  const postfix = (): bigint => {
    let v = primary();
    while (peek() === "!") {
      p++;
      if (v < 0n || v > 100000n) throw fail;
      let f = 1n;
      for (let k = 2n; k <= v; k++) f *= k;
      v = f;
    }
    return v;
  };
  const primary = (): bigint => {
    const t = toks[p++];
    if (t === undefined) throw fail;
    if (/^\d+$/.test(t)) return BigInt(t);
    if (t === "(" || t === "{") {
      const v = expr();
      if (toks[p++] !== (t === "(" ? ")" : "}")) throw fail;
      return v;
    }
    throw fail;
  };
  try {
    const v = expr();
    return p === toks.length ? v : null;
  } catch (e) {
    // RangeError: past V8's BigInt size limit; let the numeric path decide.
    if (e === fail || e instanceof RangeError) return null;
    throw e;
  }
}

/** Parses LaTeX to an expression, or null when the engine cannot make sense of it. */
function parseExpr(s: string): Expr | null {
  try {
    const e = ce().parse(s);
    if (!e.isValid) return null;
    if (e.operator === "String") return null;
    return e;
  } catch {
    return null;
  }
}

interface Complex {
  re: number;
  im: number;
  /**
   * The value lies outside float64: finite but past its range (`10^{400}` is Infinity in a
   * double) or non-zero but below it (`10^{-400}` is 0). Its re/im are then meaningless and must
   * never be compared as numbers. A true infinity (\infty) is not an overflow: the engine says
   * it is not finite.
   */
  overflow?: true;
}

function numeric(e: Expr): Complex | null {
  try {
    const n = e.N();
    const re = n.re;
    const im = n.im;
    if (Number.isNaN(re) || Number.isNaN(im)) return null;
    if ((!Number.isFinite(re) || !Number.isFinite(im)) && n.isFinite !== false) return { re, im, overflow: true };
    // Underflow: a double says 0, the engine's own value is signed (10^{-400} is positive).
    if (re === 0 && im === 0 && (n.isPositive === true || n.isNegative === true)) return { re, im, overflow: true };
    return { re, im };
  } catch {
    return null;
  }
}

/**
 * Equality of two constants of which at least one overflowed float64: a true infinity equals
 * neither a huge finite number nor anything else but itself (handled before); two huge numbers
 * are compared through their quotient, which the engine evaluates exactly (10^{400}/10^{401}
 * is 1/10), within the tolerance a finite comparison would use.
 */
function overflowEqual(ea: Expr, eb: Expr, va: Complex, vb: Complex, ctx: Ctx, exact: boolean): boolean {
  const trueInf = (v: Complex) => !v.overflow && (!Number.isFinite(v.re) || !Number.isFinite(v.im));
  if (trueInf(va) || trueInf(vb)) return false;
  let q: Complex | null;
  try {
    q = numeric(ce().box(["Divide", ea.json, eb.json]));
  } catch {
    return false;
  }
  if (q === null || q.overflow || !Number.isFinite(q.re) || !Number.isFinite(q.im)) return false;
  const tol = exact ? 1e-9 : ctx.relTol;
  return Math.abs(q.re - 1) <= tol && Math.abs(q.im) <= tol;
}

/** Significant digits and decimals of a plain decimal literal, for the rounding rule. */
function decimalsOf(s: string): { sig: number; decimals: number } | null {
  const m = /^-?(\d+)\.(\d+)$/.exec(s);
  if (!m) return null;
  const digits = (m[1]! + m[2]!).replace(/^0+/, "");
  return { sig: digits.length, decimals: m[2]!.length };
}

function closeReal(x: number, y: number, ctx: Ctx, exact: boolean, ta: string, tb: string): boolean {
  // Only true infinities reach here non-finite (overflows are split off by the callers).
  if (!Number.isFinite(x) || !Number.isFinite(y)) return x === y;
  const scale = Math.max(Math.abs(x), Math.abs(y));
  // Purely relative: Minerva's answers live at 1e-27 as often as at 1e33. Against an exact 0, a
  // approximate value below 1e-15 is floating-point noise; exact forms must be exactly 0.
  if (x === y) return true;
  if (x === 0 || y === 0) return scale <= ctx.absTol || (!exact && scale < 1e-15);
  if (exact) return Math.abs(x - y) <= 1e-9 * scale + ctx.absTol;
  if (Math.abs(x - y) <= ctx.relTol * scale + ctx.absTol) return true;
  // A decimal given to >= 4 significant digits matches what it rounds ("0.3333" for 1/3).
  for (const t of [ta, tb]) {
    const d = decimalsOf(t);
    if (d && d.sig >= 4 && Math.abs(x - y) <= 0.5 * 10 ** -d.decimals * 1.0001) return true;
  }
  return false;
}

function closeComplex(a: Complex, b: Complex, ctx: Ctx, exact: boolean, ta: string, tb: string): boolean {
  if (a.overflow || b.overflow) return false;
  return closeReal(a.re, b.re, ctx, exact, ta, tb) && closeReal(a.im, b.im, ctx, exact, "", "");
}

/** Numeric equality of two leaves, by value or at random points when they have variables. */
function valueEqual(a: string, b: string, ctx: Ctx): boolean {
  const ea = parseExpr(a);
  const eb = parseExpr(b);
  if (ea === null || eb === null) return false;
  // Both exact (no decimal point written) -> tight tolerance; otherwise relTol.
  const exact = !/\d\.\d/.test(a) && !/\d\.\d/.test(b) && !/e-?\d/.test(a + b);
  const ka = a.replace(/\s+/g, "");
  const kb = b.replace(/\s+/g, "");
  const vars = [...new Set([...ea.unknowns, ...eb.unknowns])];
  if (vars.length === 0) {
    const va = numeric(ea);
    const vb = numeric(eb);
    if (va === null || vb === null) return symbolicZero(ea, eb);
    if (va.overflow || vb.overflow) return overflowEqual(ea, eb, va, vb, ctx, exact);
    if (closeComplex(va, vb, ctx, exact, ka, kb)) return true;
    if (ctx.degrees !== null && /\\pi/.test(ctx.degrees === "a" ? b : a)) {
      const [deg, rad] = ctx.degrees === "a" ? [va, vb] : [vb, va];
      if (closeComplex({ re: (deg.re * Math.PI) / 180, im: 0 }, rad, ctx, exact, "", "")) return true;
    }
    if (ctx.percent) {
      for (const f of [100, 0.01]) {
        if (closeComplex({ re: va.re * f, im: va.im * f }, vb, ctx, exact, "", "")) return true;
      }
    }
    return false;
  }
  const verdict = atRandomPoints(ea, eb, vars, (x, y) => closeComplex(x, y, ctx, exact, "", ""));
  return verdict ?? symbolicZero(ea, eb);
}

/**
 * Compares two expressions at 6 seeded random points in [0.5, 2.5] per variable (positive, so
 * `\sqrt{x}` and `\ln x` stay real). Returns null when fewer than 3 points evaluate on both sides.
 */
function atRandomPoints(ea: Expr, eb: Expr, vars: string[], same: (x: Complex, y: Complex) => boolean): boolean | null {
  const rng = new Rng(20251209);
  let valid = 0;
  for (let k = 0; k < 6; k++) {
    const sub: Record<string, Expr> = {};
    for (const v of vars) sub[v] = ce().number(0.5 + 2 * rng.next());
    let va: Complex | null = null;
    let vb: Complex | null = null;
    try {
      va = numeric(ea.subs(sub));
      vb = numeric(eb.subs(sub));
    } catch {
      continue;
    }
    if (va === null && vb === null) continue;
    if (va === null || vb === null) return false;
    // A point where either side overflows float64 says nothing either way (e^{1000x}).
    if (va.overflow || vb.overflow) continue;
    if (!same(va, vb)) return false;
    valid++;
  }
  return valid >= 3 ? true : null;
}

/** `simplify(a - b) = 0`: the symbolic last resort when numbers could not decide. */
function symbolicZero(ea: Expr, eb: Expr): boolean {
  try {
    const d = ce().box(["Subtract", ea.json, eb.json]).simplify();
    return d.json === 0;
  } catch {
    return false;
  }
}

/** `lhs1 = rhs1` against `lhs2 = rhs2`: (l1 - r1) is a non-zero constant multiple of (l2 - r2). */
function equationsEqual(a: string, b: string): boolean {
  const pa = a.split("=");
  const pb = b.split("=");
  if (pa.length !== 2 || pb.length !== 2) return false;
  const exprs = [...pa, ...pb].map(parseExpr);
  if (exprs.some((e) => e === null)) return false;
  const [l1, r1, l2, r2] = exprs as [Expr, Expr, Expr, Expr];
  let da: Expr;
  let db: Expr;
  try {
    da = ce().box(["Subtract", l1.json, r1.json]);
    db = ce().box(["Subtract", l2.json, r2.json]);
  } catch {
    return false;
  }
  const vars = [...new Set([...da.unknowns, ...db.unknowns])];
  if (vars.length === 0) return false;
  let ratio: Complex | null = null;
  const verdict = atRandomPoints(da, db, vars, (x, y) => {
    const den = y.re * y.re + y.im * y.im;
    if (den < 1e-18) return x.re * x.re + x.im * x.im < 1e-18;
    const r = { re: (x.re * y.re + x.im * y.im) / den, im: (x.im * y.re - x.re * y.im) / den };
    if (Math.hypot(r.re, r.im) < 1e-12) return false;
    ratio ??= r;
    return Math.abs(r.re - ratio.re) <= 1e-6 * Math.max(1, Math.abs(ratio.re)) && Math.abs(r.im - ratio.im) <= 1e-6;
  });
  return verdict === true;
}
