/**
 * NPR's format score (reference/npr.md §3.4) in its two variants: "stage1", the Stage-1 reward
 * (`get_format_reward`, which also requires a non-empty `\boxed{}` in the trailing conclusion),
 * and "eval", the evaluation score (`compute_format_score`: contiguous steps, no empty
 * `\boxed{}`). 0 for a perfect response, otherwise minus the sum of the penalties, each reported
 * with its reason. Plus `checkResponse`, what `npr format check` prints: the score's penalties and
 * the strict structure error of the response parser.
 * Knows text only.
 *
 * Both variants first strip ALL whitespace (as NPR does), then find blocks with a non-greedy
 * pattern; lengths below are counted on the stripped text.
 *
 * | condition                                              | penalty            |
 * |--------------------------------------------------------|--------------------|
 * | no block found                                         | -1.5 (and nothing else is scored) |
 * | tags in the gap before a block                         | -1.5 per block     |
 * | guideline with 0 plans                                 | -1.0               |
 * | step count != plan count                               | -1.0               |
 * | non-plan text in the guideline (before/after the plans)| -0.4               |
 * | text between plans                                     | -0.2               |
 * | text between steps                                     | -0.2 (stage1 only; eval blocks need contiguous steps) |
 * | each plan shorter than 3 chars or containing tags      | -0.4 each          |
 * | each step shorter than 6 chars                         | -0.4 each          |
 * | takeaway shorter than 6 chars                          | -0.4               |
 * | tags after the last block                              | -1.0               |
 * | stage1: no non-empty \boxed{} after the last block     | -1.0               |
 * | eval: some \boxed{} is empty                           | -1.0               |
 */
import { parseResponse } from "./npr-response.ts";
import { boxedContents, containsNprTag, lastNonEmptyBoxed } from "./npr-tags.ts";

export type FormatVariant = "stage1" | "eval";

export const FORMAT_VARIANTS: readonly FormatVariant[] = ["stage1", "eval"];

export interface Penalty {
  /** Negative amount. */
  penalty: number;
  reason: string;
}

export interface FormatScore {
  /** 0 for a perfect response, else the (negative) sum of `penalties`. */
  score: number;
  penalties: Penalty[];
}

// Non-greedy, as NPR's patterns: a block is the first </guideline> after <guideline>, then the
// first <takeaway> and </takeaway> after it. The eval variant wants only whole steps between
// </guideline> and <takeaway>: a step's body may not run over a </step>, so text between steps
// makes the span no block at all (its tags then count as stray).
const BLOCK_STAGE1 = /<guideline>(.*?)<\/guideline>(.*?)<takeaway>(.*?)<\/takeaway>/gs;
const BLOCK_EVAL = /<guideline>(.*?)<\/guideline>((?:<step>(?:(?!<\/step>).)*<\/step>)+)<takeaway>(.*?)<\/takeaway>/gs;
const PLAN = /<plan>(.*?)<\/plan>/gs;
const STEP = /<step>(.*?)<\/step>/gs;

/** NPR's format score of one response (the generated text only, prompt excluded). */
export function formatScore(response: string, variant: FormatVariant): FormatScore {
  const s = response.replace(/\s+/g, "");
  const penalties: Penalty[] = [];
  const add = (penalty: number, reason: string) => penalties.push({ penalty, reason });
  const blockRe = new RegExp(variant === "eval" ? BLOCK_EVAL : BLOCK_STAGE1);
  let prevEnd = 0;
  let k = 0;
  for (const m of s.matchAll(blockRe)) {
    k++;
    if (containsNprTag(s.slice(prevEnd, m.index))) add(-1.5, `tags in the text before block ${k}`);
    scoreGuideline(m[1]!, k, add);
    const nplans = [...m[1]!.matchAll(new RegExp(PLAN))].length;
    scoreSteps(m[2]!, nplans, k, add);
    if (m[3]!.length < 6) add(-0.4, `the takeaway of block ${k} is shorter than 6 characters`);
    prevEnd = m.index + m[0].length;
  }
  if (k === 0)
    return {
      score: -1.5,
      penalties: [{ penalty: -1.5, reason: "no <guideline>...</guideline> <step>... <takeaway>...</takeaway> block found" }],
    };
  const trailing = s.slice(prevEnd);
  if (containsNprTag(trailing)) add(-1.0, "tags after the last block");
  if (variant === "stage1" && lastNonEmptyBoxed(trailing) === null) {
    add(-1.0, "no non-empty \\boxed{} in the conclusion after the last block");
  }
  if (variant === "eval" && boxedContents(s).some((b) => b === "")) add(-1.0, "an empty \\boxed{}");
  const sum = penalties.reduce((a, p) => a + p.penalty, 0);
  // Sums of 0.2/0.4 steps are rounded so a response scores e.g. -0.6, not -0.6000000000000001.
  return { score: Math.round(sum * 1000) / 1000 || 0, penalties };
}

function scoreGuideline(g: string, k: number, add: (p: number, why: string) => void): void {
  const plans = [...g.matchAll(new RegExp(PLAN))];
  if (plans.length === 0) {
    add(-1.0, `the guideline of block ${k} has no plan`);
    if (g !== "") add(-0.4, `text outside plans in the guideline of block ${k}`);
    return;
  }
  const first = plans[0]!;
  const last = plans[plans.length - 1]!;
  const outer = g.slice(0, first.index) + g.slice(last.index + last[0].length);
  if (outer !== "") add(-0.4, `text outside plans in the guideline of block ${k}`);
  for (let i = 1; i < plans.length; i++) {
    const prev = plans[i - 1]!;
    if (plans[i]!.index > prev.index + prev[0].length) {
      add(-0.2, `text between plans in the guideline of block ${k}`);
      break;
    }
  }
  plans.forEach((p, i) => {
    const body = p[1]!;
    if (body.length < 3) add(-0.4, `plan ${i + 1} of block ${k} is shorter than 3 characters`);
    else if (containsNprTag(body)) add(-0.4, `plan ${i + 1} of block ${k} contains tags`);
  });
}

function scoreSteps(part: string, nplans: number, k: number, add: (p: number, why: string) => void): void {
  const steps = [...part.matchAll(new RegExp(STEP))];
  if (steps.length !== nplans) add(-1.0, `block ${k} has ${steps.length} step(s) for ${nplans} plan(s)`);
  let rest = part;
  for (const st of steps) rest = rest.replace(st[0], "");
  if (rest !== "") add(-0.2, `text between the steps of block ${k}`);
  steps.forEach((st, i) => {
    if (st[1]!.length < 6) add(-0.4, `step ${i + 1} of block ${k} is shorter than 6 characters`);
  });
}

export interface CheckResult {
  /** True when the score is 0 and the response parses under the strict grammar. */
  valid: boolean;
  score: number;
  errors: string[];
}

/** What `npr format check` reports for one response. */
export function checkResponse(response: string, variant: FormatVariant): CheckResult {
  const { score, penalties } = formatScore(response, variant);
  const errors = penalties.map((p) => `${p.reason} (${p.penalty})`);
  const structure = parseResponse(response).error;
  if (structure !== null) errors.push(`structure: ${structure}`);
  return { valid: errors.length === 0, score, errors };
}
