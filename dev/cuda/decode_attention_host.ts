/**
 * Host side of dev/cuda/decode_attention.cu: the paged decode attention with its measured
 * variants (decode_attention.cu header): the merge by the last block (`fused`) or the combine
 * kernel, for any number of rows; one or two key-tile buffers; the PDL order. The default tune is
 * the product's launch (src/tensor/backend/cuda/decode-attention.ts: fused for one row only, one
 * buffer, wait first), so `{}` must give the product's bits.
 * Knows the dev kernels' argument layouts and the plan's capacity; nothing of block tables.
 */
import type { CudaBackend } from "../../src/tensor/backend/cuda/index.ts";
import { MAX_CHUNK } from "../../src/tensor/backend/decode-attention-plan.ts";
import type { DecodeAttentionParams, DeviceBuffer } from "../../src/tensor/backend/types.ts";
import { type DevModule, ptr } from "./harness.ts";

export interface AttentionTune {
  /** The last block of a row merges it (one launch); default: for one row only. */
  fused?: boolean;
  /** Key-tile buffers: 1 (product) or 2 (double-buffered). */
  stages?: 1 | 2;
  /** Schedule the next kernel before the PDL wait. */
  pdlEarly?: boolean;
}

const DA_THREADS = 128;
const DA_WARPS = 4;
const DA_KT = 32;
const DA_QW_MAX = 8;
const DA_QMAX = DA_WARPS * DA_QW_MAX;
const COMBINE_THREADS = 128;
const MAX_GRID = 4096;
/**
 * Largest shared memory for which 2 stages are allowed: two blocks still fit an H100/H200 SM
 * (228 KiB); f32 with D <= 128 qualifies (89 KiB at D 128).
 */
export const TWO_STAGE_SMEM = 112 * 1024;

/** Dynamic shared memory of the partial kernel with `stages` key-tile buffers. */
export function smemBytes(D: number, elem: number, stages: number): number {
  const DP = D + 4;
  return (2 * stages * DA_KT * DP + DA_QMAX * DP + DA_WARPS * DA_QW_MAX * DA_KT) * elem + (MAX_CHUNK + 64) * 4;
}

export class DevAttention {
  private readonly be: CudaBackend;
  private readonly mod: DevModule;
  private readonly elem: number;

  constructor(be: CudaBackend, mod: DevModule, dtype: "f32" | "f64" = "f32") {
    this.be = be;
    this.mod = mod;
    this.elem = dtype === "f32" ? 4 : 8;
  }

  /** Same arguments and result as the product's decodeAttention, with a variant. */
  run(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    plan: DeviceBuffer,
    scratch: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    p: DecodeAttentionParams,
    tune: AttentionTune = {},
  ): void {
    const { rows: B, keys: S, heads: H, kvHeads: Hkv, headDim: D, capacity: cap } = p;
    const stages = tune.stages ?? 1;
    if (stages === 2 && smemBytes(D, this.elem, 2) > TWO_STAGE_SMEM)
      throw new Error(`2 stages need ${smemBytes(D, this.elem, 2)} bytes of shared memory`);
    const P = (b: DeviceBuffer) => ({ ptr: ptr(this.be, b) });
    const SC = ptr(this.be, scratch);
    const pml = SC + cap.partials * H * D * this.elem;
    const sizes = [{ i32: B }, { i32: cap.items }, { i32: cap.ranges }, { i32: cap.partials }];
    const hd = D <= 64 ? 64 : D <= 128 ? 128 : 256;
    const fused = tune.fused ?? B === 1;
    const early = { i32: tune.pdlEarly ? 1 : 0 };
    this.mod.launch(
      `decode_attention_partial_d${hd}`,
      Math.min(cap.items * Hkv, MAX_GRID),
      DA_THREADS,
      [
        P(q),
        P(k),
        P(v),
        P(plan),
        { ptr: SC },
        { ptr: pml },
        P(out),
        P(lse),
        ...sizes,
        { i32: S },
        { i32: H },
        { i32: Hkv },
        { i32: D },
        this.elem === 4 ? { f32: p.scale } : { f64: p.scale },
        { i32: stages },
        { i32: fused ? 1 : 0 },
        early,
      ],
      smemBytes(D, this.elem, stages),
      true,
    );
    if (!fused) {
      this.mod.launch(
        "decode_attention_combine",
        [B, H, 1],
        COMBINE_THREADS,
        [P(plan), { ptr: SC }, { ptr: pml }, P(out), P(lse), ...sizes, { i32: H }, { i32: D }, early],
        0,
        true,
      );
    }
  }
}
