/**
 * Test oracle for the NPR layout, written independently of src/format (no shared code): a
 * recursive-descent check of the grammar over token strings, positions from closed formulas, and
 * visibility as a dense predicate can(i, j). Plus seeded generators of random canonical
 * trajectories (prompts full of tag strings included) and of malformed mutations of them.
 */
import { Rng } from "../../src/util/rng.ts";

const TAGS = ["<guideline>", "</guideline>", "<plan>", "</plan>", "<step>", "</step>", "<takeaway>", "</takeaway>"];
const isTag = (t: string) => TAGS.includes(t);

interface RefBlock {
  gIdx: number;
  steps: Array<[number, number]>; // [<step> index, </step> index]
  tIdx: number;
}

/** Block spans of a well-formed response, or null when it breaks the adopted grammar. */
export function refParse(promptLen: number, toks: readonly string[]): RefBlock[] | null {
  let i = promptLen;
  const T = toks.length;
  const blocks: RefBlock[] = [];
  const text = () => {
    while (i < T && !isTag(toks[i]!)) i++;
  };
  const expect = (t: string) => {
    if (toks[i] !== t) throw new Error(`expected ${t} at ${i}`);
    i++;
  };
  try {
    for (;;) {
      text();
      if (i === T) break;
      expect("<guideline>");
      let plans = 0;
      while (toks[i] !== "</guideline>") {
        if (i >= T) throw new Error("eof");
        if (toks[i] === "<plan>") {
          i++;
          text();
          expect("</plan>");
          plans++;
        } else if (isTag(toks[i]!)) throw new Error("tag in guideline");
        else i++;
      }
      const gIdx = i;
      expect("</guideline>");
      if (plans < 1 || plans > 5) throw new Error("plans");
      const steps: Array<[number, number]> = [];
      for (let k = 0; k < plans; k++) {
        const s = i;
        expect("<step>");
        text();
        steps.push([s, i]);
        expect("</step>");
      }
      const tIdx = i;
      expect("<takeaway>");
      text();
      expect("</takeaway>");
      blocks.push({ gIdx, steps, tIdx });
    }
  } catch {
    return null;
  }
  return blocks.length > 0 ? blocks : null;
}

/** Positions and merged visible ranges by the adopted convention, or null for malformed input. */
export function refLayout(
  promptLen: number,
  toks: readonly string[],
): { positions: number[]; visible: Array<Array<[number, number]>> } | null {
  const blocks = refParse(promptLen, toks);
  if (!blocks) return null;
  const T = toks.length;
  const positions = new Array<number>(T);
  // Anchor (index a, position p): a token i after it that is in no step has position p + (i - a).
  let anchorIdx = 0;
  let anchorPos = 0;
  const stepOf = new Array<{ gIdx: number; start: number } | null>(T).fill(null);
  for (let i = 0; i < T; i++) positions[i] = -1;
  for (const b of blocks) {
    for (let i = anchorIdx; i <= b.gIdx; i++) positions[i] = anchorPos + (i - anchorIdx);
    const g = positions[b.gIdx]!;
    let longest = 0;
    for (const [s, e] of b.steps) {
      for (let j = s; j <= e; j++) {
        positions[j] = g + 1 + (j - s);
        stepOf[j] = { gIdx: b.gIdx, start: s };
      }
      longest = Math.max(longest, e - s + 1);
    }
    anchorIdx = b.tIdx;
    anchorPos = g + 1 + longest;
  }
  for (let i = anchorIdx; i < T; i++) positions[i] = anchorPos + (i - anchorIdx);
  const can = (i: number, j: number) => {
    if (j > i) return false;
    const st = stepOf[i];
    return st === null || j <= st.gIdx || j >= st.start;
  };
  const visible: Array<Array<[number, number]>> = [];
  for (let i = 0; i < T; i++) {
    const r: Array<[number, number]> = [];
    for (let j = 0; j <= i; j++) {
      if (!can(i, j)) continue;
      const last = r[r.length - 1];
      if (last && last[1] === j) last[1] = j + 1;
      else r.push([j, j + 1]);
    }
    visible.push(r);
  }
  return { positions, visible };
}

const WORDS = ["a", "b", "x", "1:", "2:", "3.1:", " ", "\n", "the", "<|im_end|>", "\\boxed{7}", "<step", "guideline>", "数"];
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;
const words = (rng: Rng, min: number, max: number) => Array.from({ length: min + rng.int(max - min + 1) }, () => pick(rng, WORDS));

export interface Trajectory {
  promptLen: number;
  tokens: string[];
}

/** A random canonical trajectory; its prompt mixes words with every tag string. */
export function randomTrajectory(rng: Rng, opts: { maxBlocks?: number; plans?: number } = {}): Trajectory {
  const prompt = Array.from({ length: 1 + rng.int(8) }, () => (rng.next() < 0.4 ? pick(rng, TAGS) : pick(rng, WORDS)));
  const r: string[] = [];
  if (rng.next() < 0.3) r.push(...words(rng, 1, 2)); // free text before the first block
  const nblocks = 1 + rng.int(opts.maxBlocks ?? 3);
  for (let b = 0; b < nblocks; b++) {
    if (b > 0 && rng.next() < 0.3) r.push(...words(rng, 1, 2)); // text between blocks
    const n = opts.plans ?? 1 + rng.int(5);
    r.push("<guideline>");
    if (rng.next() < 0.2) r.push(...words(rng, 1, 1));
    for (let k = 0; k < n; k++) {
      r.push("<plan>", `${k + 1}:`, ...words(rng, 0, 3), "</plan>");
      if (rng.next() < 0.15) r.push("\n");
    }
    r.push("</guideline>");
    for (let k = 0; k < n; k++) r.push("<step>", `${k + 1}:`, ...words(rng, 0, 6), "</step>");
    r.push("<takeaway>", ...words(rng, 0, 3), "</takeaway>");
  }
  r.push(...words(rng, 0, 3));
  return { promptLen: prompt.length, tokens: [...prompt, ...r] };
}

function indicesOf(t: Trajectory, pred: (tok: string) => boolean): number[] {
  const out: number[] = [];
  for (let i = t.promptLen; i < t.tokens.length; i++) if (pred(t.tokens[i]!)) out.push(i);
  return out;
}

/** Step spans [<step>, </step>] of the response. */
function stepSpans(t: Trajectory): Array<[number, number]> {
  const open = indicesOf(t, (x) => x === "<step>");
  return open.map((s) => [s, t.tokens.indexOf("</step>", s)] as [number, number]);
}

export const MUTATIONS = [
  "text after </guideline>",
  "text between steps",
  "text before <takeaway>",
  "drop a step",
  "duplicate a step",
  "nested <guideline> in a step",
  "other tag in a step",
  "drop a tag",
  "truncate inside a block",
  "tag in the conclusion",
  "six plans",
] as const;

/** A malformed copy of a canonical trajectory (every mutation breaks the adopted grammar). */
export function mutate(rng: Rng, t: Trajectory, kind: (typeof MUTATIONS)[number]): Trajectory {
  const toks = [...t.tokens];
  const ins = (at: number, ...xs: string[]) => toks.splice(at, 0, ...xs);
  const steps = stepSpans(t);
  const filler = () => pick(rng, [" ", "\n", "x", "1:"]);
  switch (kind) {
    case "text after </guideline>":
      ins(
        pick(
          rng,
          indicesOf(t, (x) => x === "</guideline>"),
        ) + 1,
        filler(),
      );
      break;
    case "text between steps": {
      const closes = steps.map(([, e]) => e).filter((e) => toks[e + 1] === "<step>");
      if (closes.length === 0) return mutate(rng, t, "text before <takeaway>");
      ins(pick(rng, closes) + 1, filler());
      break;
    }
    case "text before <takeaway>":
      ins(
        pick(
          rng,
          indicesOf(t, (x) => x === "<takeaway>"),
        ),
        filler(),
      );
      break;
    case "drop a step": {
      const [s, e] = pick(rng, steps);
      toks.splice(s, e - s + 1);
      break;
    }
    case "duplicate a step": {
      const [s, e] = pick(rng, steps);
      ins(e + 1, ...toks.slice(s, e + 1));
      break;
    }
    case "nested <guideline> in a step": {
      const [s, e] = pick(rng, steps);
      ins(s + 1 + rng.int(e - s), "<guideline>");
      break;
    }
    case "other tag in a step": {
      const [s, e] = pick(rng, steps);
      ins(
        s + 1 + rng.int(e - s),
        pick(
          rng,
          TAGS.filter((x) => x !== "</step>"),
        ),
      );
      break;
    }
    case "drop a tag":
      toks.splice(pick(rng, indicesOf(t, isTag)), 1);
      break;
    case "truncate inside a block": {
      const lastClose = indicesOf(t, (x) => x === "</takeaway>").pop()!;
      // Keep the last block's <guideline>, lose its </takeaway>: earlier blocks stay complete.
      const lastOpen = indicesOf(t, (x) => x === "<guideline>").pop()!;
      toks.length = lastOpen + 1 + rng.int(lastClose - lastOpen);
      break;
    }
    case "tag in the conclusion":
      toks.push(
        pick(
          rng,
          TAGS.filter((x) => x !== "<guideline>"),
        ),
      );
      break;
    case "six plans": {
      const out: string[] = toks.slice(0, t.promptLen);
      out.push("<guideline>", ...Array.from({ length: 6 }, (_, k) => ["<plan>", `${k + 1}:`, "</plan>"]).flat(), "</guideline>");
      out.push(...Array.from({ length: 6 }, (_, k) => ["<step>", `${k + 1}:`, "y", "</step>"]).flat(), "<takeaway>", "t", "</takeaway>");
      return { promptLen: t.promptLen, tokens: out };
    }
  }
  return { promptLen: t.promptLen, tokens: toks };
}
