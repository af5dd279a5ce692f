/**
 * A contiguous KV cache for one sequence: per layer, K and V buffers [maxTokens, Hkv, D] on the
 * model's backend, filled front to back. A cached forward writes its T new tokens' k and v (after
 * q/k norm and RoPE, as HF caches them) at rows [length, length + T), attends over rows
 * [0, length + T), and then advances `length`. The engine uses the paged, forkable storage
 * (paged-kv.ts) behind the same KVStore interface; the forward only sees "rows [0, S) of K and V".
 * This file knows buffers and row counts, not the model's weights or math.
 */
import { Tensor } from "../tensor/index.ts";
import type { Backend, DeviceBuffer } from "../tensor/index.ts";
import { BoundaryError, invariant } from "../util/index.ts";

/** The cache has no room for the tokens a forward wants to add. */
export class KVCacheFullError extends BoundaryError {
  override name = "KVCacheFullError";
}

export interface KVCacheOptions {
  backend: Backend;
  dtype: "f32" | "f64";
  numLayers: number;
  /** Hkv. */
  kvHeads: number;
  /** D. */
  headDim: number;
  /** Rows per layer buffer: the most tokens (prompt + generated) the cache can hold. */
  maxTokens: number;
}

/**
 * What a cached forward needs from a KV store (Qwen3Model.forward depends on this, not on a
 * class): this contiguous cache implements it, and so does the engine's paged step view
 * (paged-kv.ts), which gathers a step's visible slots from block-addressed pages.
 */
export interface KVStore {
  readonly backend: Backend;
  readonly dtype: "f32" | "f64";
  readonly numLayers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Keys already stored that the forward's layout counts before the new tokens (numKeys = length + T). */
  readonly length: number;
  /** Throws a BoundaryError before anything is written when `tokens` more do not fit. */
  ensureRoom(tokens: number): void;
  /**
   * Stores layer `layer`'s new k and v ([T, Hkv, D]) and returns the keys and values the layer's
   * attention reads, [length + T, Hkv, D], in the layout's key order.
   */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor };
  /** Called once after every layer appended: the T new tokens now count in `length`. */
  advance(tokens: number): void;
}

export class KVCache implements KVStore {
  readonly backend: Backend;
  readonly dtype: "f32" | "f64";
  readonly numLayers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly maxTokens: number;
  /** Rows [0, length) of every layer hold computed keys and values. */
  private len = 0;
  /** Per layer [maxTokens, Hkv, D], row-major. */
  private readonly keys: DeviceBuffer[] = [];
  private readonly values: DeviceBuffer[] = [];
  private disposed = false;

  constructor(opts: KVCacheOptions) {
    invariant(
      [opts.numLayers, opts.kvHeads, opts.headDim, opts.maxTokens].every((n) => Number.isInteger(n) && n > 0),
      () => `KVCache: bad sizes ${JSON.stringify({ ...opts, backend: opts.backend.name })}`,
    );
    this.backend = opts.backend;
    this.dtype = opts.dtype;
    this.numLayers = opts.numLayers;
    this.kvHeads = opts.kvHeads;
    this.headDim = opts.headDim;
    this.maxTokens = opts.maxTokens;
    const n = opts.maxTokens * opts.kvHeads * opts.headDim;
    for (let l = 0; l < opts.numLayers; l++) {
      this.keys.push(opts.backend.alloc(opts.dtype, n));
      this.values.push(opts.backend.alloc(opts.dtype, n));
    }
  }

  /** Number of tokens whose keys and values are stored. */
  get length(): number {
    return this.len;
  }

  /** Rows still free. */
  get remaining(): number {
    return this.maxTokens - this.len;
  }

  /**
   * Checks that `tokens` more rows fit, before a forward writes anything, so a refused forward
   * leaves the cache as it was.
   */
  ensureRoom(tokens: number): void {
    invariant(!this.disposed, "KVCache used after dispose()");
    if (this.len + tokens > this.maxTokens) {
      throw new KVCacheFullError(`KV cache full: ${this.len} tokens cached + ${tokens} new > maxTokens ${this.maxTokens}`, {
        code: "kv_full",
        param: "maxTokens",
        hint: "create the KVCache with a larger maxTokens, or start a new sequence",
      });
    }
  }

  /**
   * Writes layer `layer`'s new k and v ([T, Hkv, D], any strides) at rows [length, length + T)
   * and returns views of rows [0, length + T) of the layer's buffers. Does not advance `length`:
   * every layer of one forward writes the same rows; the model calls `advance(T)` once at the end.
   * The returned views carry no gradient (cached forwards run under noGrad).
   */
  append(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    invariant(layer >= 0 && layer < this.numLayers, () => `KVCache: layer ${layer} of ${this.numLayers}`);
    const T = k.shape[0]!;
    const rowShape = [this.kvHeads, this.headDim];
    for (const [what, t] of [
      ["k", k],
      ["v", v],
    ] as const) {
      invariant(
        t.ndim === 3 && t.shape[0] === T && t.shape[1] === rowShape[0] && t.shape[2] === rowShape[1],
        () => `KVCache.append: ${what} has shape [${t.shape}], expected [${T}, ${rowShape}]`,
      );
      invariant(
        t.dtype === this.dtype && t.backend === this.backend,
        () => `KVCache.append: ${what} is ${t.dtype} on ${t.backend.name}, cache is ${this.dtype} on ${this.backend.name}`,
      );
    }
    invariant(this.len + T <= this.maxTokens, "KVCache.append past maxTokens: call ensureRoom() first");
    const rowSize = this.kvHeads * this.headDim;
    const dstOffset = this.len * rowSize;
    this.backend.copy(k.buffer, this.keys[layer]!, { shape: k.shape, srcStrides: k.strides, srcOffset: k.offset, dstOffset });
    this.backend.copy(v.buffer, this.values[layer]!, { shape: v.shape, srcStrides: v.strides, srcOffset: v.offset, dstOffset });
    const shape = [this.len + T, this.kvHeads, this.headDim];
    return {
      k: Tensor.fromBuffer(this.backend, this.keys[layer]!, shape),
      v: Tensor.fromBuffer(this.backend, this.values[layer]!, shape),
    };
  }

  /** Marks `tokens` more rows as computed (after every layer has appended them). */
  advance(tokens: number): void {
    invariant(this.len + tokens <= this.maxTokens, "KVCache.advance past maxTokens");
    this.len += tokens;
  }

  /** Forgets every row from `length` on (e.g. to re-decode after a rejected token); 0 empties it. */
  truncate(length: number): void {
    invariant(
      Number.isInteger(length) && length >= 0 && length <= this.len,
      () => `KVCache.truncate(${length}) with ${this.len} tokens cached`,
    );
    this.len = length;
  }

  /** Host copies of one layer's cached keys and values [length, Hkv, D] (for tests and debugging). */
  read(layer: number): { k: Float32Array | Float64Array; v: Float32Array | Float64Array } {
    const n = this.len * this.kvHeads * this.headDim;
    return {
      k: this.backend.read(this.keys[layer]!, 0, n) as Float32Array | Float64Array,
      v: this.backend.read(this.values[layer]!, 0, n) as Float32Array | Float64Array,
    };
  }

  /** Returns every buffer to the backend; the cache must not be used after. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of [...this.keys, ...this.values]) this.backend.free(b);
  }
}
