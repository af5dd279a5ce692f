/**
 * The data stream of a training stage: the order examples are visited in (epoch by epoch, each
 * epoch a seeded permutation or the file order), a cursor that says where the stream stands, and
 * the optimizer step's batch built from it (gradient-accumulation micro-batches, each one packed
 * row of at most a token budget). The cursor is all a checkpoint needs to continue the stream
 * exactly: each epoch's permutation is derived from (seed, epoch), never from a live generator,
 * so a resumed run neither replays nor skips data (small-scale.md: resumes that lose the cursor).
 * Knows encoded examples and packing; nothing about tensors or files.
 */
import { createHash } from "node:crypto";
import { Rng } from "../util/index.ts";
import { invariant } from "../util/index.ts";
import type { EncodedExample } from "./examples.ts";
import { fillRow, packExamples } from "./packing.ts";
import type { PackedBatch } from "./packing.ts";

/** Where the stream stands: the next example is order(epoch)[index]. */
export interface DataCursor {
  epoch: number;
  index: number;
}

export interface DataOrderOptions {
  /** Seed of the per-epoch permutations. */
  seed: number;
  /** false: every epoch visits the examples in dataset order (NPR's SFT uses a sequential sampler). */
  shuffle: boolean;
}

/**
 * An endless stream of dataset indices. Epoch boundaries are crossed without a pause or an exit
 * (verl PR #5725: silent exits at epoch ends); `epoch` counts completed passes.
 */
export class DataOrder {
  readonly size: number;
  readonly seed: number;
  readonly shuffle: boolean;
  private epochNum = 0;
  private index = 0;
  private order: Int32Array;

  constructor(size: number, opts: DataOrderOptions, cursor: DataCursor = { epoch: 0, index: 0 }) {
    invariant(Number.isInteger(size) && size > 0, () => `DataOrder: dataset size ${size}`);
    invariant(
      Number.isInteger(cursor.epoch) && cursor.epoch >= 0 && Number.isInteger(cursor.index) && cursor.index >= 0 && cursor.index < size,
      () => `DataOrder: cursor ${JSON.stringify(cursor)} outside a dataset of ${size}`,
    );
    this.size = size;
    this.seed = opts.seed;
    this.shuffle = opts.shuffle;
    this.epochNum = cursor.epoch;
    this.index = cursor.index;
    this.order = this.permutation(cursor.epoch);
  }

  /** The visiting order of one epoch: identity, or a Fisher-Yates shuffle seeded by (seed, epoch). */
  permutation(epoch: number): Int32Array {
    const order = new Int32Array(this.size);
    for (let i = 0; i < this.size; i++) order[i] = i;
    if (!this.shuffle) return order;
    // One generator per epoch from (seed, epoch): restoring epoch e needs no replay of 0..e-1.
    const rng = new Rng(this.seed * 1_000_003 + epoch);
    for (let i = this.size - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
    }
    return order;
  }

  /** The next dataset index, without moving. */
  peek(): number {
    return this.order[this.index]!;
  }

  /** The next dataset index; moves past it (into the next epoch after the last one). */
  next(): number {
    const i = this.order[this.index]!;
    this.index++;
    if (this.index === this.size) {
      this.epochNum++;
      this.index = 0;
      this.order = this.permutation(this.epochNum);
    }
    return i;
  }

  cursor(): DataCursor {
    return { epoch: this.epochNum, index: this.index };
  }

  /** Completed passes plus the fraction of the current one (for logs). */
  get epochs(): number {
    return this.epochNum + this.index / this.size;
  }
}

/** The data of one optimizer step. */
export interface StepBatch {
  /** Gradient-accumulation micro-batches, each one packed row. */
  readonly micro: readonly PackedBatch[];
  /**
   * Response tokens over every micro-batch: the one denominator of the step's token mean, so
   * each micro-batch's loss is its NLL sum over this, not its own mean (small-scale.md: dividing
   * per micro-batch or per accumulation step mis-scales the gradient).
   */
  readonly numLossTokens: number;
  /** Tokens the forward passes process (prompts included). */
  readonly numTokens: number;
}

/** The next step's batch: `gradAccum` rows of at most `budget` tokens each, drawn from `order`. */
export function nextStepBatch(order: DataOrder, dataset: readonly EncodedExample[], budget: number, gradAccum: number): StepBatch {
  invariant(order.size === dataset.length, () => `nextStepBatch: order over ${order.size} examples, dataset has ${dataset.length}`);
  const micro: PackedBatch[] = [];
  let numLossTokens = 0;
  let numTokens = 0;
  for (let m = 0; m < gradAccum; m++) {
    const picked = fillRow(
      () => order.next(),
      () => order.peek(),
      (i) => dataset[i]!.ids.length,
      budget,
    );
    const row = packExamples(
      picked.map((i) => dataset[i]!),
      picked,
    );
    micro.push(row);
    numLossTokens += row.numLossTokens;
    numTokens += row.ids.length;
  }
  return { micro, numLossTokens, numTokens };
}

/**
 * SHA-256 over every example's ids and targets, in dataset order: a checkpoint records it, so a
 * resume over data that changed (another corpus version, an edited file) is refused instead of
 * continuing a cursor into different examples.
 */
export function datasetFingerprint(dataset: readonly EncodedExample[]): string {
  const h = createHash("sha256");
  const len = new Int32Array(1);
  for (const ex of dataset) {
    len[0] = ex.ids.length;
    h.update(new Uint8Array(len.buffer));
    h.update(new Uint8Array(ex.ids.buffer, ex.ids.byteOffset, ex.ids.byteLength));
    h.update(new Uint8Array(ex.targets.buffer, ex.targets.byteOffset, ex.targets.byteLength));
  }
  return h.digest("hex");
}
