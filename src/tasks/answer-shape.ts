/**
 * The shape of a normalised answer: a leaf expression, or a container that compares by its own
 * rule — unordered lists and sets, tuples and intervals (brackets kept, so `(1,2]` differs from
 * `[1,2]`), unions of intervals, matrices. Also rewrites `a \pm b`, `x \in S`, `x = v` and simple
 * inequalities (`x > 3` -> `(3, \infty)`) into these shapes.
 * This file knows strings only; leaves are compared by equivalence.ts.
 */
import { splitListAnswer, splitTopLevel } from "./extract.ts";

export type AnswerNode =
  | { kind: "leaf"; text: string }
  /** Unordered: bare comma lists ("1, -2"), `\pm` expansions, multiple answers. */
  | { kind: "list"; items: AnswerNode[] }
  /** Unordered: `\{1, 2\}`, `\emptyset`. */
  | { kind: "set"; items: AnswerNode[] }
  /** Ordered, brackets significant: tuples `(a, b)`, intervals `[a, b)`. */
  | { kind: "bracket"; open: string; close: string; items: AnswerNode[] }
  | { kind: "union"; parts: AnswerNode[] }
  | { kind: "matrix"; rows: AnswerNode[][] };

// A "simple" left-hand side that `x = 5` may drop: a name, optionally subscripted or applied to
// arguments (`x`, `AB`, `a_{1}`, `\theta`, `f(x)`). Qwen drops any lhs of at most 2 characters.
// Also `f^{-1}(x)` and `\angle A` / `m\angle ABC`.
const SIMPLE_LHS =
  /^(?:m?\\angle\s*)?(?:\\[a-zA-Z]+|[a-zA-Z]{1,3})(?:_\{?[a-zA-Z0-9]+\}?)?(?:'+|\^\{?\\prime\}?|\^\{?-1\}?)?(?:\([a-zA-Z, ]*\))?$/;

/** The index of the close bracket matching the open one at 0, ignoring bracket kinds. */
function matchingClose(s: string): number {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "\\" && (s[i + 1] === "{" || s[i + 1] === "}")) {
      depth += s[i + 1] === "{" ? 1 : -1;
      i++;
      if (depth === 0) return i;
      continue;
    }
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") {
      depth--;
      if (depth === 0) return i;
    }
  }
  return -1;
}

/** Top-level occurrences of `needle` (outside brackets). */
function topLevelSplit(s: string, needle: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let last = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "\\" && (s[i + 1] === "{" || s[i + 1] === "}")) {
      depth += s[i + 1] === "{" ? 1 : -1;
      i++;
      continue;
    }
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    else if (depth === 0 && s.startsWith(needle, i)) {
      // `\cup` must not match `\cupdot`, `=` must not match part of `\le`.
      parts.push(s.slice(last, i));
      last = i + needle.length;
      i = last - 1;
    }
  }
  parts.push(s.slice(last));
  return parts.map((p) => p.trim());
}

/** `(x, y)` or `(p,q,r)`: a tuple of names on the left of `= (3, -4)`. */
function isNameTuple(s: string): boolean {
  if (!s.startsWith("(") || !s.endsWith(")")) return false;
  const names = s
    .slice(1, -1)
    .split(",")
    .map((t) => t.trim());
  return names.length > 1 && names.every((t) => SIMPLE_LHS.test(t) && !t.includes("("));
}

/** Drops `x =`, `x \in`, `x \approx` prefixes whose lhs is a simple name (one relation only). */
export function stripSimpleLhs(s: string): string {
  const inM = /^(.{1,12}?)\s*\\in\s*(.+)$/.exec(s);
  if (inM && SIMPLE_LHS.test(inM[1]!.trim())) return inM[2]!.trim();
  for (const rel of ["=", "\\approx"]) {
    const parts = topLevelSplit(s, rel);
    if (parts.length === 2 && parts[1] !== "" && (SIMPLE_LHS.test(parts[0]!) || isNameTuple(parts[0]!))) return parts[1]!;
  }
  // `2x + 3 = y`: the name on the right is the one the answer defines.
  const eq = topLevelSplit(s, "=");
  if (eq.length === 2 && eq[0] !== "" && SIMPLE_LHS.test(eq[1]!) && !SIMPLE_LHS.test(eq[0]!)) return eq[0]!;
  return s;
}

/** `x > 3` -> `(3, \infty)`, `-1 \le x < 2` -> `[-1, 2)`; null when not a simple inequality. */
function inequalityToInterval(s: string): AnswerNode | null {
  // `|x| \le 3` is `[-3, 3]`; `|x| > 3` is `(-\infty, -3) \cup (3, \infty)`.
  const abs = /^\|\s*([a-zA-Z])\s*\|\s*(\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|<|>)\s*(.+)$/.exec(s);
  if (abs) {
    const o = abs[2]!;
    const v = abs[3]!.trim();
    const pos: AnswerNode = { kind: "leaf", text: v };
    const neg: AnswerNode = { kind: "leaf", text: `-(${v})` };
    const closed = o === "\\le" || o === "\\ge";
    if (o === "<" || o === "\\le") return { kind: "bracket", open: closed ? "[" : "(", close: closed ? "]" : ")", items: [neg, pos] };
    return {
      kind: "union",
      parts: [
        { kind: "bracket", open: "(", close: closed ? "]" : ")", items: [{ kind: "leaf", text: "-\\infty" }, neg] },
        { kind: "bracket", open: closed ? "[" : "(", close: ")", items: [pos, { kind: "leaf", text: "\\infty" }] },
      ],
    };
  }
  // `\le` must match in `x\le2` too (after space squeezing), where `\b` would not.
  const rel = /\\le(?![a-zA-Z])|\\ge(?![a-zA-Z])|<|>/g;
  const ops = s.match(rel);
  if (!ops || ops.length > 2) return null;
  const parts = s.split(rel).map((p) => p.trim());
  const leaf = (t: string): AnswerNode => ({ kind: "leaf", text: t });
  const inf: AnswerNode = leaf("\\infty");
  const ninf: AnswerNode = leaf("-\\infty");
  const strict = (o: string) => o === "<" || o === ">";
  if (ops.length === 1 && SIMPLE_LHS.test(parts[0]!) && parts[1] !== "") {
    const o = ops[0]!;
    const v = leaf(parts[1]!);
    if (o === ">" || o === "\\ge") return { kind: "bracket", open: strict(o) ? "(" : "[", close: ")", items: [v, inf] };
    return { kind: "bracket", open: "(", close: strict(o) ? ")" : "]", items: [ninf, v] };
  }
  // `5 \ge x` is `x \le 5`.
  if (ops.length === 1 && SIMPLE_LHS.test(parts[1]!) && parts[0] !== "" && !SIMPLE_LHS.test(parts[0]!)) {
    const o = ops[0]!;
    const v = leaf(parts[0]!);
    if (o === "<" || o === "\\le") return { kind: "bracket", open: strict(o) ? "(" : "[", close: ")", items: [v, inf] };
    return { kind: "bracket", open: "(", close: strict(o) ? ")" : "]", items: [ninf, v] };
  }
  if (ops.length === 2 && SIMPLE_LHS.test(parts[1]!) && parts[0] !== "" && parts[2] !== "") {
    const [o1, o2] = ops as [string, string];
    const lessChain = (o1 === "<" || o1 === "\\le") && (o2 === "<" || o2 === "\\le");
    const moreChain = (o1 === ">" || o1 === "\\ge") && (o2 === ">" || o2 === "\\ge");
    if (lessChain)
      return { kind: "bracket", open: strict(o1) ? "(" : "[", close: strict(o2) ? ")" : "]", items: [leaf(parts[0]!), leaf(parts[2]!)] };
    if (moreChain)
      return { kind: "bracket", open: strict(o2) ? "(" : "[", close: strict(o1) ? ")" : "]", items: [leaf(parts[2]!), leaf(parts[0]!)] };
  }
  return null;
}

/** Parses a normalised answer into its comparison shape. */
export function parseAnswer(text: string): AnswerNode {
  let s = stripSimpleLhs(text.trim());
  if (s === "\\emptyset" || s === "\\varnothing" || s === "\\{\\}" || s === "\\{ \\}") return { kind: "set", items: [] };
  if (s === "\\mathbb{R}") s = "(-\\infty,\\infty)";

  const union = topLevelSplit(s, "\\cup");
  if (union.length > 1) return { kind: "union", parts: union.map(parseAnswer) };

  const items = splitListAnswer(s);
  if (items.length > 1) return { kind: "list", items: flattenLists(items.map(parseAnswer)) };
  s = items[0] ?? s;

  if (s.startsWith("\\{") && s.endsWith("\\}") && matchingClose(s) === s.length - 1) {
    const inner = s.slice(2, -2).trim();
    return { kind: "set", items: inner === "" ? [] : flattenLists(splitListAnswer(inner).map(parseAnswer)) };
  }
  // `{1, 3}`: set braces written without their backslashes (TeX would drop them; a model means a set).
  if (s.startsWith("{") && s.endsWith("}") && matchingClose(s) === s.length - 1) {
    const inner = splitListAnswer(s.slice(1, -1));
    if (inner.length > 1) return { kind: "set", items: flattenLists(inner.map(parseAnswer)) };
  }
  const mat = /^\\begin\{pmatrix\}(.*)\\end\{pmatrix\}$/s.exec(s);
  if (mat) {
    const rows = mat[1]!
      .split(/\\\\/)
      .map((r) => r.trim())
      .filter((r) => r !== "");
    return { kind: "matrix", rows: rows.map((r) => r.split("&").map((c) => parseAnswer(c.trim()))) };
  }
  if ((s.startsWith("(") || s.startsWith("[")) && (s.endsWith(")") || s.endsWith("]")) && matchingClose(s) === s.length - 1) {
    const inner = s.slice(1, -1);
    const parts = splitTopLevel(inner, ",");
    if (parts.length > 1) return { kind: "bracket", open: s[0]!, close: s[s.length - 1]!, items: parts.map(parseAnswer) };
    // "(C)" and "(5)" are just their content.
    return parseAnswer(inner);
  }
  // `a \pm b` is the two answers a + b and a - b.
  const pm = s.indexOf("\\pm");
  if (pm >= 0 && s.indexOf("\\pm", pm + 1) < 0 && !/\\pmatrix/.test(s)) {
    const a = s.slice(0, pm) + "+" + s.slice(pm + 3);
    const b = s.slice(0, pm) + "-" + s.slice(pm + 3);
    return { kind: "list", items: [parseAnswer(a.replace(/^\+/, "")), parseAnswer(b)] };
  }
  const interval = inequalityToInterval(s);
  if (interval) return interval;
  return { kind: "leaf", text: s };
}

/** Items of unordered containers: `\{1 \pm \sqrt5, -2\}` has three members, not two. */
function flattenLists(items: AnswerNode[]): AnswerNode[] {
  return items.flatMap((n) => (n.kind === "list" ? n.items : [n]));
}

/** The leaves of a node in reading order (for matrix-vs-tuple and debugging). */
export function flatLeaves(n: AnswerNode): AnswerNode[] {
  if (n.kind === "leaf") return [n];
  if (n.kind === "matrix") return n.rows.flat();
  if (n.kind === "union") return n.parts.flatMap(flatLeaves);
  return n.items;
}
