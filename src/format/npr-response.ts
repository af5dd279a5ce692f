/**
 * NPR responses as text: canonicalization (convention 4 at the text level) and the response
 * parser that turns a response into its trajectory tree (blocks of guideline/plans, steps and
 * takeaway; the conclusion; the last non-empty `\boxed{}`), driven by the same streaming parser
 * the engine uses, fed with the text split at tag strings.
 * Knows text only: no ids, no tokenizer, no positions.
 */
import { NprParser } from "./npr-parser.ts";
import {
  GUIDELINE_OPEN,
  PLAN_CLOSE,
  PLAN_OPEN,
  STEP_CLOSE,
  STEP_OPEN,
  TAKEAWAY_CLOSE,
  TAKEAWAY_OPEN,
  GUIDELINE_CLOSE,
  isNprTag,
  lastNonEmptyBoxed,
  leadingNumber,
  splitOnTags,
} from "./npr-tags.ts";

export interface NprItem {
  /** The leading "N:" number, or null when the text has none. */
  num: string | null;
  /** The text between the tags, as written. */
  text: string;
}

export interface NprBlock {
  /** Free text before this block's `<guideline>` (after the previous block's takeaway). */
  before: string;
  /** Text inside the guideline but outside its plans (NPR penalises it; structure allows it). */
  guidelineText: string;
  plans: NprItem[];
  steps: NprItem[];
  /** Takeaway text, or null while the takeaway is not reached. */
  takeaway: string | null;
}

export interface NprTrajectory {
  blocks: NprBlock[];
  /** Text after the last block's `</takeaway>` (or all text, when there is no block). */
  conclusion: string;
  /** The last non-empty `\boxed{}` of the conclusion, or null. */
  answer: string | null;
  /** The first structure error (see NprParser), or null for a well-formed response. */
  error: string | null;
}

/**
 * Drops the whitespace the canonical form does not have: between `</guideline>` and `<step>`,
 * between `</step>` and the next `<step>` or `<takeaway>`, and between `<step>` and its number
 * (the engine forces `<step>` + "N:" with nothing in between). Other text is left alone, so text
 * that is not whitespace stays and is reported by the parser.
 */
export function canonicalizeResponse(text: string): string {
  return text.replace(/(<\/guideline>|<\/step>)\s+(?=<step>|<takeaway>)/g, "$1").replace(/<step>\s+(?=\d+(?:\.\d+)*\s*:)/g, "<step>");
}

/**
 * Parses a response into its trajectory tree. The text is canonicalized first; the tree holds
 * everything read up to the first structure error (so `npr format show` can still draw it).
 */
export function parseResponse(text: string): NprTrajectory {
  const parser = new NprParser();
  const blocks: NprBlock[] = [];
  let free = ""; // text outside blocks since the last </takeaway>
  let buf = ""; // text of the plan, step or takeaway being read
  let error: string | null = null;
  const cur = () => blocks[blocks.length - 1]!;

  for (const piece of splitOnTags(canonicalizeResponse(text))) {
    const before = parser.state;
    const ev = parser.push(piece);
    if (ev.kind === "malformed") {
      error = ev.reason;
      break;
    }
    if (!isNprTag(piece)) {
      if (before === "free" || before === "conclusion") free += piece;
      else if (before === "guideline") cur().guidelineText += piece;
      else buf += piece;
      continue;
    }
    switch (piece) {
      case GUIDELINE_OPEN:
        blocks.push({ before: free, guidelineText: "", plans: [], steps: [], takeaway: null });
        free = "";
        break;
      case PLAN_OPEN:
      case STEP_OPEN:
      case TAKEAWAY_OPEN:
        buf = "";
        break;
      case PLAN_CLOSE:
        cur().plans.push({ num: leadingNumber(buf), text: buf });
        break;
      case STEP_CLOSE:
        cur().steps.push({ num: leadingNumber(buf), text: buf });
        break;
      case TAKEAWAY_CLOSE:
        cur().takeaway = buf;
        break;
      case GUIDELINE_CLOSE:
        break;
    }
  }
  if (error === null) error = parser.end();
  // Text after the last block is the conclusion; with no block at all, the whole text is.
  const conclusion = blocks.length === 0 ? text : free;
  return { blocks, conclusion, answer: lastNonEmptyBoxed(conclusion), error };
}
