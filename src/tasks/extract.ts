/**
 * Answer extraction from a model response: the last non-empty `\boxed{...}` / `\fbox{...}` (nested
 * braces matched), then configurable fallbacks as in Qwen2.5-Math's `extract_answer` (parser.py at
 * QwenLM/Qwen2.5-Math@a45202bd, which NPR's evals/utils/parser.py copies): "the answer is X" and the
 * last number, plus the whole response when it is a bare answer (which Qwen would cut to its last
 * number). Also splits list answers (HMMT / MathArena style) at top-level commas.
 * This file knows strings only; normalisation and equivalence live in normalize.ts / equivalence.ts.
 */
import { matchBrace } from "./normalize.ts";

/** What to try when the response has no non-empty `\boxed{}`. Order matters: first hit wins. */
export type Fallback = "answer-is" | "bare" | "last-number";
export const ALL_FALLBACKS: readonly Fallback[] = ["answer-is", "bare", "last-number"];
/**
 * NPR's evaluate.py calls Qwen's extract_answer with use_last_number=True. We add "bare" (the
 * response is itself an answer, like `\frac{1}{2}`): Qwen would take its last number, 2.
 */
export const NPR_FALLBACKS: readonly Fallback[] = ["answer-is", "bare", "last-number"];

/**
 * Contents of every `\boxed{...}` / `\fbox{...}` (and `\boxed X` written without braces), in
 * order. An unterminated `\boxed{` (a truncated response) is skipped.
 */
export function allBoxed(text: string): string[] {
  const out: string[] = [];
  const re = /\\(?:boxed|fbox)\b/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    let i = m.index + m[0].length;
    while (text[i] === " ") i++;
    if (text[i] === "{") {
      const end = matchBrace(text, i);
      if (end < 0) continue;
      out.push(text.slice(i + 1, end - 1));
      re.lastIndex = end;
    } else {
      // `\boxed 5` or `\boxed{}`-less forms end at `$` or whitespace, as in Qwen's parser.
      const rest = /^[^\s$]+/.exec(text.slice(i));
      if (rest) out.push(rest[0]);
    }
  }
  return out;
}

/** The last non-empty boxed content, or null. */
export function lastBoxed(text: string): string | null {
  const boxes = allBoxed(text);
  for (let k = boxes.length - 1; k >= 0; k--) if (boxes[k]!.trim() !== "") return boxes[k]!;
  return null;
}

/** "The answer is X" / "final answer is X" (to the end of that sentence or line). */
function answerIs(text: string): string | null {
  const idx = Math.max(text.lastIndexOf("he answer is"), text.lastIndexOf("final answer is"));
  // "Final Answer: X" / "Answer: X" at the start of a line (not Qwen's; common in chat models).
  const colon = [...text.matchAll(/(?:^|\n)\s*\**(?:final\s+)?answer\**\s*[:：]\**/gi)].pop();
  if (idx < 0 && colon === undefined) return null;
  let rest =
    colon !== undefined && colon.index > idx
      ? text.slice(colon.index + colon[0].length).trim()
      : text.slice(text.indexOf("is", idx) + 2).trim();
  rest = rest.replace(/^[:\s]+/, "");
  // Minerva's "final answer is $X$. I hope it is correct."
  const dollar = /^\$([^$]+)\$/.exec(rest);
  if (dollar) return dollar[1]!.trim();
  // "The answer is 5, not 6": a trailing aside is not part of the answer.
  const line = rest
    .split("\n")[0]!
    .replace(/\.\s.*$/, "")
    .replace(/\.$/, "")
    .replace(/[,;]\s*(?:not|but|since|because|which|as|so)\b.*$/, "")
    .trim();
  return line === "" ? null : line;
}

// Words that may follow a value in a bare answer ("5 square units", "28 percent").
const UNITISH =
  /^(square|sq|cubic|units?|percent|degrees?|radians?|cm|m|km|inches|feet|meters?|miles?|hours?|minutes?|seconds?|dollars?|cents?|and|or)$/i;

/**
 * The whole response when it is a bare answer rather than prose: one line, short, and no two
 * plain words in a row (outside `\text{}` and commands) unless the second is a unit or connective.
 * "x = 1 or x = 2", "\text{Monday}", "12 and 13", "$\frac{1}{2}$" are bare; "we get 5" is not.
 */
function bareAnswer(text: string): string | null {
  let t = text.trim().replace(/^(?:final\s+)?answer\s*[:：]\s*/i, "");
  if (t === "" || t.length > 200 || /\n/.test(t)) return null;
  // A truncated `\boxed{` or unbalanced braces: an unfinished response, not an answer.
  if (/\\(?:boxed|fbox)\b/.test(t) || (t.match(/\{/g) ?? []).length !== (t.match(/\}/g) ?? []).length) return null;
  const plain = t.replace(/\\[a-zA-Z]+\s*(\{[^{}]*\})?/g, " ");
  const words = plain.match(/[a-zA-Z]{2,}(?:\s+[a-zA-Z]{2,})+/g) ?? [];
  for (const run of words) {
    const w = run.split(/\s+/);
    if (w.slice(1).some((x) => !UNITISH.test(x))) return null;
  }
  t = t.replace(/^\$+|\$+$/g, "").trim();
  return t === "" ? null : t;
}

/** Qwen's last number: `-?\d*\.?\d+` after removing commas. */
function lastNumber(text: string): string | null {
  const nums = text.replace(/,/g, "").match(/-?\d*\.?\d+/g);
  return nums && nums.length > 0 ? nums[nums.length - 1]! : null;
}

/**
 * The answer string of a response, or null when nothing can be extracted. Qwen's cleanup follows:
 * newlines dropped, a leading `:` and trailing `.`/`/` removed.
 */
export function extractAnswer(response: string, fallbacks: readonly Fallback[] = NPR_FALLBACKS): string | null {
  let ans = lastBoxed(response);
  if (ans === null) {
    // A bare answer's last number is never a better reading than the answer itself, so
    // "last-number" implies "bare" before it (the CLI's `answer-is,last-number` gets it too).
    const order =
      fallbacks.includes("last-number") && !fallbacks.includes("bare")
        ? fallbacks.flatMap((f): Fallback[] => (f === "last-number" ? ["bare", f] : [f]))
        : fallbacks;
    for (const f of order) {
      ans = f === "answer-is" ? answerIs(response) : f === "bare" ? bareAnswer(response) : lastNumber(response);
      if (ans !== null) break;
    }
  }
  if (ans === null) return null;
  ans = ans.replace(/\n\s*/g, " ").trim();
  if (ans.startsWith(":")) ans = ans.slice(1).trim();
  if (ans.endsWith(".")) ans = ans.slice(0, -1);
  if (ans.endsWith("/")) ans = ans.slice(0, -1);
  return ans.trim() === "" ? null : ans.trim();
}

/**
 * Splits at top-level separators: commas and semicolons outside any bracket, plus the words
 * "and"/"or" written as text (`\text{ and }`, MathArena's list style). Brackets are ( [ { and
 * `\{ \}`; `\left`/`\right` must already be gone (the normaliser drops them).
 */
export function splitTopLevel(s: string, seps: string = ",;"): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === "\\" && (s[i + 1] === "{" || s[i + 1] === "}")) {
      depth += s[i + 1] === "{" ? 1 : -1;
      cur += c + s[i + 1];
      i++;
      continue;
    }
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    if (depth === 0 && seps.includes(c)) {
      parts.push(cur);
      cur = "";
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  return parts.map((p) => p.trim());
}

/** Splits a list answer: top-level commas/semicolons, and " and " / " or " between items. */
export function splitListAnswer(s: string): string[] {
  const t = s.replace(/\\text\{\s*(and|or)\s*\}/g, ",").replace(/\s+(and|or)\s+/g, ",");
  return splitTopLevel(t).filter((p) => p !== "");
}
