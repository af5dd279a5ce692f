/**
 * Packing: several encoded examples in one row of tokens, with no padding and no leakage between
 * them. Each example keeps its own positions (they restart at 0) and its layout's key ranges are
 * shifted by the example's offset in the row, so a token sees exactly the keys it saw alone: the
 * segment form of util/layout.ts makes packing exact, not approximate (test/train/packing.test.ts
 * checks per-example losses against separate forwards to ~1e-12 in f64).
 * Knows layouts and encoded examples; nothing about tensors, tokenizers or files.
 *
 *   row:      [ ex0: p p p r r r r | ex1: p p r r r | ex2: p p p p r r ]
 *   keys:       0 ........... 6     7 ....... 11    12 ........... 17
 *   ex1 token at row index 9 sees [7, 10) (its own prefix), never ex0's keys
 *   targets:  ex0's last token -> IGNORE (it would otherwise "predict" ex1's first token)
 */
import { invariant } from "../util/index.ts";
import { checkLayout } from "../util/index.ts";
import type { Layout } from "../util/index.ts";
import type { EncodedExample } from "./examples.ts";

/** Where one example sits in a packed row. */
export interface PackedSpan {
  /** Row index of the example's first token. */
  start: number;
  /** Its token count. */
  length: number;
  /** The example's index in the dataset it was drawn from. */
  index: number;
}

/** One micro-batch: a single row of T tokens that the model's forward takes as it is. */
export interface PackedBatch {
  /** [T] token ids. */
  readonly ids: Int32Array;
  /** [T] next-token targets, IGNORE where no loss is taken. */
  readonly targets: Int32Array;
  readonly layout: Layout;
  /** Targets that are not IGNORE (response tokens of every example in the row). */
  readonly numLossTokens: number;
  readonly spans: readonly PackedSpan[];
}

/**
 * The layouts of independent sequences placed one after another: positions unchanged, every
 * key range shifted by the sequence's offset. Each input must be a standalone layout (numKeys ==
 * numTokens, no cached past).
 */
export function concatLayouts(layouts: readonly Layout[]): Layout {
  let T = 0;
  let numSegments = 0;
  for (const l of layouts) {
    invariant(l.numKeys === l.numTokens, () => `concatLayouts: a layout with ${l.numKeys - l.numTokens} cached keys cannot be packed`);
    T += l.numTokens;
    numSegments += l.segStarts.length;
  }
  const positions = new Int32Array(T); // [T]
  const segOffsets = new Int32Array(T + 1); // [T + 1]
  const segStarts = new Int32Array(numSegments);
  const segEnds = new Int32Array(numSegments);
  let tok = 0;
  let seg = 0;
  for (const l of layouts) {
    const offset = tok; // key index of this sequence's first token
    positions.set(l.positions, tok);
    for (let i = 0; i < l.numTokens; i++) {
      for (let s = l.segOffsets[i]!; s < l.segOffsets[i + 1]!; s++) {
        segStarts[seg] = l.segStarts[s]! + offset;
        segEnds[seg] = l.segEnds[s]! + offset;
        seg++;
      }
      segOffsets[tok + i + 1] = seg;
    }
    tok += l.numTokens;
  }
  return { numTokens: T, numKeys: T, positions, segOffsets, segStarts, segEnds };
}

/**
 * Packs `examples` (dataset indices `indices`, for the spans) into one row in the given order.
 * The row's layout is checked once here (cheap next to a forward pass): a broken layout would
 * silently let examples see each other, which no loss curve reveals.
 */
export function packExamples(examples: readonly EncodedExample[], indices?: readonly number[]): PackedBatch {
  invariant(examples.length > 0, "packExamples: nothing to pack");
  invariant(!indices || indices.length === examples.length, "packExamples: one index per example");
  let T = 0;
  for (const ex of examples) T += ex.ids.length;
  const ids = new Int32Array(T); // [T]
  const targets = new Int32Array(T); // [T]
  const spans: PackedSpan[] = [];
  let at = 0;
  let numLossTokens = 0;
  examples.forEach((ex, k) => {
    ids.set(ex.ids, at);
    targets.set(ex.targets, at);
    spans.push({ start: at, length: ex.ids.length, index: indices ? indices[k]! : k });
    numLossTokens += ex.numLossTokens;
    at += ex.ids.length;
  });
  const layout = concatLayouts(examples.map((e) => e.layout));
  const why = checkLayout(layout);
  invariant(why === null, () => `packExamples: packed layout is broken: ${why}`);
  return { ids, targets, layout, numLossTokens, spans };
}

/**
 * The examples of a dataset that fill one row, greedily in stream order: the next example is
 * taken while it fits in `budget` tokens, and the row closes at the first one that does not (it
 * opens the next row). No example is split; encodeAll dropped those longer than the budget, so
 * every row holds at least one example.
 */
export function fillRow(next: () => number, peek: () => number, lengthOf: (i: number) => number, budget: number): number[] {
  const picked: number[] = [];
  let used = 0;
  for (;;) {
    const i = peek();
    const len = lengthOf(i);
    invariant(len <= budget, () => `fillRow: example ${i} has ${len} tokens, over the budget ${budget}`);
    if (used + len > budget) break;
    picked.push(next());
    used += len;
  }
  return picked;
}
