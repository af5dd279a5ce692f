/**
 * Paged KV storage and the batched forward over block tables: per layer, K and V pages
 * [numBlocks * blockSize, Hkv, D] on the model's backend, addressed by global slot id
 * (block * blockSize + offset, the ids kv/ hands out). A forward step takes several sequences'
 * new tokens, writes their k and v (after q/k norm and RoPE at each token's own position id, so
 * a slot's content never changes once written) into the slots the scheduler chose, and attends
 * over each sequence's visible slots.
 * Knows slots, rows and the model's forward; not reference counts, not scheduling, not tokens'
 * meaning. Owns no policy: which slots a sequence sees is the list of ranges it is given.
 *
 * The simplest correct CPU approach: per layer, gather every slot range any sequence of the step
 * can see into one contiguous key list (each block's range once), append the step's new tokens,
 * and call the ordinary attention op with a segment layout over that list:
 *
 *   gathered keys  [ B1 0..4 | B2 0..4 | B3 0..4 | B4 2..4 | new tokens of seq a, seq b ]
 *   seq a (branch 0) sees B1 B2 B3 + its own new tokens up to itself
 *   seq b (branch 1) sees B1 B2 B4(2..4) + its own new tokens up to itself
 *
 * Partially filled blocks anywhere in a table (after a join, a branch's last block is partial
 * and the next branch's block may start at a non-zero offset) are just shorter ranges here: a
 * table entry is (block, start, end), so nothing is copied or padded at a join.
 * The forward itself is Qwen3Model.forward unchanged (a KVStore view feeds it the gathered keys),
 * so the engine and the trainer run one function.
 */
import { Tensor } from "../tensor/index.ts";
import type { Backend, DeviceBuffer } from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import { segmentLayout } from "../util/index.ts";
import type { KVStore } from "./kv-cache.ts";
import type { Qwen3Model } from "./qwen3.ts";

/** Slot ranges a sequence can see: entry e is slots [starts[e], ends[e]) of block blocks[e]. */
export interface SlotRanges {
  readonly blocks: readonly number[];
  readonly starts: readonly number[];
  readonly ends: readonly number[];
}

/** One sequence's part of a batched step. */
export interface PagedSeqInput {
  /** [n] token ids to compute now. */
  ids: ArrayLike<number>;
  /** [n] RoPE position id of each new token. */
  positions: ArrayLike<number>;
  /** [n] global slot id each new token's k/v is written to. */
  writeSlots: ArrayLike<number>;
  /** The already computed slots this sequence sees (its table before this step). */
  visible: SlotRanges;
}

/** A row copy inside the pages (copy-on-write of a partial block), applied to every layer. */
export interface PageCopy {
  srcBlock: number;
  srcStart: number;
  dstBlock: number;
  dstStart: number;
  count: number;
}

export class PagedKVStorage {
  readonly backend: Backend;
  readonly dtype: "f32" | "f64";
  readonly numLayers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  /** Per layer [numBlocks * blockSize, Hkv, D], row-major; row = global slot id. */
  readonly keys: DeviceBuffer[] = [];
  readonly values: DeviceBuffer[] = [];

  constructor(model: Qwen3Model, numBlocks: number, blockSize: number) {
    const c = model.config;
    this.backend = model.backend;
    this.dtype = model.dtype;
    this.numLayers = c.numHiddenLayers;
    this.kvHeads = c.numKeyValueHeads;
    this.headDim = c.headDim;
    this.numBlocks = numBlocks;
    this.blockSize = blockSize;
    const n = numBlocks * blockSize * this.kvHeads * this.headDim;
    for (let l = 0; l < this.numLayers; l++) {
      this.keys.push(this.backend.alloc(this.dtype, n));
      this.values.push(this.backend.alloc(this.dtype, n));
    }
  }

  get rowSize(): number {
    return this.kvHeads * this.headDim;
  }

  /** Applies row copies in every layer (before any new token of the step is written). */
  applyCopies(copies: readonly PageCopy[]): void {
    const row = this.rowSize;
    const bs = this.blockSize;
    for (const c of copies) {
      const p = {
        shape: [c.count, this.kvHeads, this.headDim],
        srcStrides: [row, this.headDim, 1],
        srcOffset: (c.srcBlock * bs + c.srcStart) * row,
        dstOffset: (c.dstBlock * bs + c.dstStart) * row,
      };
      for (let l = 0; l < this.numLayers; l++) {
        this.backend.copy(this.keys[l]!, this.keys[l]!, p);
        this.backend.copy(this.values[l]!, this.values[l]!, p);
      }
    }
  }

  /** Host copy of one slot's key row in one layer (tests). */
  readKeyRow(layer: number, slot: number): Float32Array | Float64Array {
    return this.backend.read(this.keys[layer]!, slot * this.rowSize, this.rowSize) as Float32Array | Float64Array;
  }

  dispose(): void {
    for (const b of [...this.keys, ...this.values]) this.backend.free(b);
    this.keys.length = 0;
    this.values.length = 0;
  }
}

/**
 * Logits [T, V] for the concatenated new tokens of `seqs` (T = sum of their lengths), in order.
 * Writes every new token's k/v into its slot; reads each sequence's visible slots.
 */
export function pagedForward(model: Qwen3Model, storage: PagedKVStorage, seqs: readonly PagedSeqInput[]): Tensor {
  const bs = storage.blockSize;
  // Gathered key list: each block once, rows [lo, hi) covering every range any sequence sees.
  const lo = new Map<number, number>();
  const hi = new Map<number, number>();
  for (const s of seqs) {
    const v = s.visible;
    for (let e = 0; e < v.blocks.length; e++) {
      const b = v.blocks[e]!;
      lo.set(b, Math.min(lo.get(b) ?? bs, v.starts[e]!));
      hi.set(b, Math.max(hi.get(b) ?? 0, v.ends[e]!));
    }
  }
  const base = new Map<number, number>(); // block -> gathered index of its row `lo`
  const runs: Array<{ src: number; dst: number; count: number }> = []; // in slots / gathered rows
  let past = 0;
  // The gathered order is free (the layout names gathered indices), so blocks go in id order:
  // blocks come off the free list mostly in id order, so full blocks of one table, or of sibling
  // branches that grew in the same steps, are adjacent slots and merge into one copy per run
  // (a copy call costs more than the rows it moves at these sizes).
  for (const [b, l] of [...lo].sort((x, y) => x[0] - y[0])) {
    base.set(b, past);
    const count = hi.get(b)! - l;
    const prev = runs[runs.length - 1];
    if (prev && prev.src + prev.count === b * bs + l) prev.count += count;
    else runs.push({ src: b * bs + l, dst: past, count });
    past += count;
  }

  const ids: number[] = [];
  const positions: number[] = [];
  const visible: Array<Array<[number, number]>> = [];
  const writeSlots: number[] = [];
  let T = 0;
  for (const s of seqs) T += s.ids.length;
  let first = past; // gathered index of this sequence's first new token
  for (const s of seqs) {
    const n = s.ids.length;
    invariant(s.positions.length === n && s.writeSlots.length === n, "pagedForward: ids, positions and writeSlots differ in length");
    const v = s.visible;
    const old: Array<[number, number]> = [];
    for (let e = 0; e < v.blocks.length; e++) {
      const g = base.get(v.blocks[e]!)! - lo.get(v.blocks[e]!)!;
      old.push([g + v.starts[e]!, g + v.ends[e]!]);
    }
    for (let j = 0; j < n; j++) {
      ids.push(s.ids[j]!);
      positions.push(s.positions[j]!);
      writeSlots.push(s.writeSlots[j]!);
      visible.push([...old, [first, first + j + 1]]);
    }
    first += n;
  }
  const layout = segmentLayout(positions, visible, past + T);
  const view = new PagedStepView(storage, runs, past, Int32Array.from(writeSlots));
  try {
    return model.forward(Int32Array.from(ids), layout, view);
  } finally {
    view.dispose();
  }
}

/**
 * The KVStore the forward sees for one paged step: `length` is the number of gathered old rows;
 * `append` scatters the new k/v into their slots and returns the gathered [past + T, Hkv, D] list.
 * The scratch buffers are reused by every layer of the step (each layer's attention reads them
 * before the next layer overwrites them).
 */
class PagedStepView implements KVStore {
  readonly backend: Backend;
  readonly dtype: "f32" | "f64";
  readonly numLayers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  private readonly storage: PagedKVStorage;
  private readonly runs: ReadonlyArray<{ src: number; dst: number; count: number }>;
  private readonly past: number;
  private readonly writeSlots: Int32Array;
  private advanced = 0;
  private scratchK: DeviceBuffer | null = null;
  private scratchV: DeviceBuffer | null = null;

  constructor(
    storage: PagedKVStorage,
    runs: ReadonlyArray<{ src: number; dst: number; count: number }>,
    past: number,
    writeSlots: Int32Array,
  ) {
    this.backend = storage.backend;
    this.dtype = storage.dtype;
    this.numLayers = storage.numLayers;
    this.kvHeads = storage.kvHeads;
    this.headDim = storage.headDim;
    this.storage = storage;
    this.runs = runs;
    this.past = past;
    this.writeSlots = writeSlots;
  }

  get length(): number {
    return this.past + this.advanced;
  }

  /** The scheduler allocated every write slot before the step: nothing can run out here. */
  ensureRoom(_tokens: number): void {}

  advance(tokens: number): void {
    this.advanced += tokens;
  }

  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const st = this.storage;
    const T = this.writeSlots.length;
    invariant(k.shape[0] === T && v.shape[0] === T, () => `PagedStepView.append: ${k.shape[0]} new rows, ${T} write slots`);
    const row = st.rowSize;
    const S = this.past + T;
    if (!this.scratchK) {
      this.scratchK = st.backend.alloc(st.dtype, Math.max(1, S * row));
      this.scratchV = st.backend.alloc(st.dtype, Math.max(1, S * row));
    }
    const rowShape = [st.kvHeads, st.headDim];
    const pageStrides = [row, st.headDim, 1];
    for (const [t, pages, scratch] of [
      [k, st.keys[layer]!, this.scratchK],
      [v, st.values[layer]!, this.scratchV!],
    ] as const) {
      // Scatter the new rows into their slots, one copy per run of consecutive slots.
      for (let i = 0; i < T; ) {
        let j = i + 1;
        while (j < T && this.writeSlots[j] === this.writeSlots[j - 1]! + 1) j++;
        st.backend.copy(t.buffer, pages, {
          shape: [j - i, ...rowShape],
          srcStrides: t.strides,
          srcOffset: t.offset + i * t.strides[0]!,
          dstOffset: this.writeSlots[i]! * row,
        });
        i = j;
      }
      // Gather the visible old rows, then the new ones, into the contiguous key list.
      for (const r of this.runs) {
        st.backend.copy(pages, scratch, {
          shape: [r.count, ...rowShape],
          srcStrides: pageStrides,
          srcOffset: r.src * row,
          dstOffset: r.dst * row,
        });
      }
      st.backend.copy(t.buffer, scratch, {
        shape: [T, ...rowShape],
        srcStrides: t.strides,
        srcOffset: t.offset,
        dstOffset: this.past * row,
      });
    }
    const shape = [S, st.kvHeads, st.headDim];
    return { k: Tensor.fromBuffer(st.backend, this.scratchK, shape), v: Tensor.fromBuffer(st.backend, this.scratchV!, shape) };
  }

  dispose(): void {
    if (this.scratchK) this.storage.backend.free(this.scratchK);
    if (this.scratchV) this.storage.backend.free(this.scratchV);
    this.scratchK = this.scratchV = null;
  }
}
