/**
 * The 8 NPR tags (reference/npr.md §3.1 and convention 1) and the small text helpers every NPR
 * format file shares: which token string is a tag, splitting a text into tags and text chunks,
 * reading a plan or step number ("1:", "2.1:"), and the last non-empty `\boxed{}`.
 * Knows strings only: no token ids, no tokenizer, no tensors.
 */

/** The tags in the order NPR adds them as special tokens (ids 151669..151676 on Qwen3). */
export const NPR_TAGS = ["<guideline>", "</guideline>", "<plan>", "</plan>", "<step>", "</step>", "<takeaway>", "</takeaway>"] as const;

export type NprTag = (typeof NPR_TAGS)[number];

export const GUIDELINE_OPEN = "<guideline>";
export const GUIDELINE_CLOSE = "</guideline>";
export const PLAN_OPEN = "<plan>";
export const PLAN_CLOSE = "</plan>";
export const STEP_OPEN = "<step>";
export const STEP_CLOSE = "</step>";
export const TAKEAWAY_OPEN = "<takeaway>";
export const TAKEAWAY_CLOSE = "</takeaway>";

/**
 * NPR's engine accepts 1..5 plans per guideline (0 or more than 5 terminate the request): the
 * default of NprParserOptions.maxPlans; only structure-forcing benchmarks raise it.
 */
export const MAX_PLANS = 5;

const TAG_SET: ReadonlySet<string> = new Set(NPR_TAGS);

/** True when `token` is exactly one of the 8 tag strings (a token merely containing one is text). */
export function isNprTag(token: string): token is NprTag {
  return TAG_SET.has(token);
}

/**
 * The text a tag's new embedding row is initialised from: the tag without its angle brackets,
 * e.g. "guideline" for `<guideline>` and "/guideline" for `</guideline>` (NPR / Multiverse init).
 */
export function tagInitText(tag: NprTag): string {
  return tag.slice(1, -1);
}

// One alternation of the 8 tags; used to split text and to detect stray tags in a span.
const TAG_RE_SOURCE = NPR_TAGS.map((t) => t.replace(/[/]/g, "\\/")).join("|");

/** True when `text` contains any of the 8 tag strings. */
export function containsNprTag(text: string): boolean {
  return new RegExp(TAG_RE_SOURCE).test(text);
}

/**
 * Splits text into pieces: each tag occurrence is its own piece, the text between tags is one
 * piece (empty pieces dropped). Joining the pieces gives the text back.
 */
export function splitOnTags(text: string): string[] {
  const out: string[] = [];
  const re = new RegExp(TAG_RE_SOURCE, "g");
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(m[0]);
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// NPR's engine counts plans with "<plan>, optional spaces, number(.number)*, optional spaces, colon".
const NUMBER_RE = /^\s*(\d+(?:\.\d+)*)\s*:/;

/** The leading "N:" / "N.M:" number of a plan's or step's text, or null when it has none. */
export function leadingNumber(text: string): string | null {
  const m = NUMBER_RE.exec(text);
  return m ? m[1]! : null;
}

/**
 * Contents of every `\boxed{...}` (and `\fbox{...}`) in order, braces matched; an unclosed one is
 * skipped. Kept here (not in tasks/, rank 2) because the format score needs it at rank 1.
 */
export function boxedContents(text: string): string[] {
  const out: string[] = [];
  const re = /\\(?:boxed|fbox)\s*\{/g;
  for (const m of text.matchAll(re)) {
    let depth = 1;
    let i = m.index + m[0].length;
    const start = i;
    for (; i < text.length && depth > 0; i++) {
      const c = text[i];
      if (c === "\\" && (text[i + 1] === "{" || text[i + 1] === "}")) i++;
      else if (c === "{") depth++;
      else if (c === "}") depth--;
    }
    if (depth === 0) out.push(text.slice(start, i - 1));
  }
  return out;
}

/** The last `\boxed{}` whose content is not blank, or null. */
export function lastNonEmptyBoxed(text: string): string | null {
  const all = boxedContents(text);
  for (let i = all.length - 1; i >= 0; i--) if (all[i]!.trim() !== "") return all[i]!.trim();
  return null;
}
