/**
 * Host side of dev/cuda/decode_gemv.cu: the fused decode GEMV (and its norm and q/k norm + RoPE
 * companions) with every measured knob, as src/tensor/backend/cuda/decode.ts had them before the
 * losing variants left the product (its history: git log of that file). `GemvTune` picks a
 * version (decode_gemv.cu header): ring stages, warps, x staging, k-split and its slice rule, L2
 * prefetch of the next or own weights, the small kernels' PDL order. The empty tune is the
 * product's launch (version 1), so `{}` must give the product's bits.
 * Knows the dev kernels' argument layouts; nothing of models or the engine.
 */
import assert from "node:assert/strict";
import type { CudaBackend } from "../../src/tensor/backend/cuda/index.ts";
import { ropeTable } from "../../src/tensor/backend/cuda/nn-ops.ts";
import type { DecodeNormParams, DeviceBuffer, GemvEpilogue, GemvTarget, QkNormRopeParams } from "../../src/tensor/backend/types.ts";
import { ELEM_BYTES } from "../../src/tensor/backend/cuda/buffers.ts";
import { type DevModule, ptr } from "./harness.ts";

export interface GemvTune {
  /** Ring stages per warp: 4 (product) or 8 (version 2). */
  unroll?: 4 | 8;
  /** Warps per block for every launch (version 3); default 8, or 4 below 32 k-steps. */
  warps?: 4 | 8 | 16;
  /** Never stage x in shared memory (version 3). */
  noStage?: boolean;
  /** k-slices per tile (version 4): 1 none (product), 0 automatic (splitFor), n forced. */
  split?: number;
  /** Blocks the automatic split may fill (default: the resident-block estimate). */
  splitUnits?: number;
  /** MB of the next GEMV's weights (GemvLaunch.prefetch) fetched into L2 per launch (version 5). */
  prefetchMB?: number;
  /** KB of each block's own weight tile fetched into L2 before its PDL wait (version 5). */
  selfPrefetchKB?: number;
  /** Small kernels schedule the next kernel before their PDL wait (the early-PDL variant). */
  pdlEarly?: boolean;
}

export interface GemvLaunch {
  rows: number;
  k: number;
  epilogue: GemvEpilogue;
  norm?: { w: DeviceBuffer; eps: number; scratch?: DeviceBuffer };
  /** The weights the step's next GEMV reads (at most 3), for prefetchMB. */
  prefetch?: readonly DeviceBuffer[];
}

/** Shared memory the rings may take on one SM; x staging limits; rows whose norm the GEMV recomputes. */
const SMEM_PER_SM = 200 * 1024;
const STAGE_X_BYTES = 48 * 1024;
const STAGE_X_ROWS = 4;
const NORM_FUSED_ROWS = 4;
const EPILOGUE_CODE: Record<GemvEpilogue, number> = { store: 0, add: 1, swiglu: 2 };

/**
 * The split's rule: split k when a launch's tiles fill less than one wave, as many k-slices per
 * tile (up to SPLIT_AUTO_MAX) as keep every block resident at once (tiles x slices <= SMs x
 * blocks per SM). Why it was tried: with one block per 16-row tile, o_proj and down_proj of the
 * 4B shape are 160 blocks on 132 SMs, too few bytes in flight. Splitting q/k/v (384 tiles) or
 * gate/up (608) lost (their per-block norm prologue is repeated), as did a second wave.
 */
export const SPLIT_SMS = 132;
const SPLIT_AUTO_MAX = 4;
/** Fewest 32-wide k-steps per slice the automatic split leaves (shorter slices: fixed costs win). */
const SPLIT_MIN_STEPS = 16;
/** Most (tile, slice) blocks of a split launch: the partial-sum scratch holds this many. */
export const SPLIT_MAX_UNITS = 8192;
/**
 * Registers per thread of the split instances (_s) by [n-tiles][weight tiles], the most over the
 * x modes (nvcc 13.0, sm_90), for the resident-block estimate (no occupancy API bound).
 */
const GEMV_REGS = [
  [56, 70],
  [66, 96],
];

/**
 * Blocks of one GEMV instance resident per SM of an sm_90 part: the least of the register file
 * (64 K, allocated per warp in 256s of regs rounded to 8 per thread), shared memory (228 KB, 1 KB
 * reserved per block) and threads (2,048).
 */
export function gemvBlocksPerSm(nt: number, tiles: number, warps: number, smemBytes: number): number {
  const regs = Math.ceil(GEMV_REGS[nt - 1]![tiles - 1]! / 8) * 8;
  const byRegs = Math.floor(65536 / (Math.ceil((regs * 32) / 256) * 256 * warps));
  const bySmem = Math.floor((228 * 1024) / (smemBytes + 1024));
  return Math.max(1, Math.min(byRegs, bySmem, Math.floor(2048 / (32 * warps))));
}

/**
 * k-slices per tile for a launch of `tiles` 16-row tiles over `steps` 32-wide k-steps: forced by
 * tune.split, else (split 0) the most slices s (up to SPLIT_AUTO_MAX, each at least
 * SPLIT_MIN_STEPS steps) with tiles x s <= resident(s) (or tune.splitUnits). Never beyond one
 * slice per step or SPLIT_MAX_UNITS blocks.
 */
export function splitFor(tiles: number, steps: number, tune: GemvTune, resident: (s: number) => number): number {
  let want = tune.split ?? 1;
  if (!want) {
    want = 1;
    for (let s = Math.min(SPLIT_AUTO_MAX, Math.floor(steps / SPLIT_MIN_STEPS)); s > 1; s--) {
      if (tiles * s <= (tune.splitUnits ?? resident(s))) {
        want = s;
        break;
      }
    }
  }
  return Math.max(1, Math.min(want, steps, Math.floor(SPLIT_MAX_UNITS / tiles)));
}

/** The unit checks of splitFor and gemvBlocksPerSm (no GPU): the Qwen3-4B launches' expected choices. */
export function checkSplitRules(): void {
  const auto: GemvTune = { split: 0 };
  const r528 = () => 528;
  // The 4B launches at one row (528 blocks resident): q/k/v 384 tiles, o_proj and down_proj 160,
  // gate/up 608, lm_head 9,496.
  assert.equal(splitFor(384, 80, auto, r528), 1);
  assert.equal(splitFor(160, 128, auto, r528), 3);
  assert.equal(splitFor(160, 304, auto, r528), 3);
  assert.equal(splitFor(608, 80, auto, r528), 1);
  assert.equal(splitFor(9496, 80, auto, r528), 1);
  assert.equal(splitFor(160, 304, { ...auto, splitUnits: 1056 }, r528), 4);
  assert.equal(
    splitFor(160, 304, auto, (s) => (s >= 3 ? 396 : 528)),
    2,
  );
  assert.equal(
    splitFor(160, 304, auto, () => 300),
    1,
  );
  assert.equal(splitFor(3, 40, auto, r528), 2);
  assert.equal(splitFor(3, 8, auto, r528), 1);
  assert.equal(splitFor(3, 8, { split: 6 }, r528), 6);
  assert.equal(splitFor(3, 4, { split: 6 }, r528), 4);
  assert.equal(splitFor(SPLIT_MAX_UNITS / 2, 100, { split: 4 }, r528), 2);
  assert.equal(splitFor(384, 80, {}, r528), 1);
  assert.equal(gemvBlocksPerSm(1, 1, 8, 37 * 1024), 4);
  assert.equal(gemvBlocksPerSm(1, 2, 8, 69 * 1024), 3);
  assert.equal(gemvBlocksPerSm(2, 2, 8, 64 * 1024), 2);
  assert.equal(gemvBlocksPerSm(1, 1, 8, 58 * 1024), 3);
  assert.equal(gemvBlocksPerSm(1, 1, 4, 16 * 1024), 9);
}

/** The dev GEMV and its companions on one backend, with the split scratch they share. */
export class DevGemv {
  private readonly be: CudaBackend;
  private readonly mod: DevModule;
  private scratch: { part: DeviceBuffer; counts: DeviceBuffer } | null = null;
  /** Launches that ran split (tests of the split path count them). */
  splitLaunches = 0;

  constructor(be: CudaBackend, mod: DevModule) {
    this.be = be;
    this.mod = mod;
  }

  /**
   * The split scratch: partial sums f32 [SPLIT_MAX_UNITS][2][16][16] and one arrival counter per
   * tile (zeroed once; every launch leaves them 0). The first split launch allocates it, so it
   * must not be inside a graph capture (graphMs runs its body eagerly first).
   */
  private splitScratch(): { part: DeviceBuffer; counts: DeviceBuffer } {
    if (!this.scratch) {
      const counts = this.be.alloc("i32", SPLIT_MAX_UNITS);
      this.be.fill(counts, 0);
      this.scratch = { part: this.be.alloc("f32", SPLIT_MAX_UNITS * 2 * 256), counts };
    }
    return this.scratch;
  }

  rmsnorm(x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: DecodeNormParams, tune: GemvTune = {}): void {
    this.mod.launch(
      "dec_rmsnorm_bf16",
      p.rows,
      256,
      [
        { ptr: ptr(this.be, x) },
        { ptr: ptr(this.be, w) },
        { ptr: ptr(this.be, out16) },
        { i64: p.dim },
        { f64: p.eps },
        { i32: tune.pdlEarly ? 1 : 0 },
      ],
      0,
      true,
    );
  }

  qkNormRope(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    qNorm: DeviceBuffer,
    kNorm: DeviceBuffer,
    positions: DeviceBuffer,
    slots: DeviceBuffer,
    keys: DeviceBuffer,
    values: DeviceBuffer,
    p: QkNormRopeParams,
    tune: GemvTune = {},
  ): void {
    const P = (b: DeviceBuffer) => ({ ptr: ptr(this.be, b) });
    const table = ropeTable(this.be, p.theta, p.headDim);
    this.mod.launch(
      "dec_qk_norm_rope",
      Math.ceil((p.rows * (p.heads + p.kvHeads)) / 4),
      128,
      [
        P(q),
        P(k),
        P(v),
        P(qNorm),
        P(kNorm),
        P(positions),
        P(slots),
        P(keys),
        P(values),
        { i32: p.rows },
        { i32: p.heads },
        { i32: p.kvHeads },
        { i32: p.headDim },
        { f64: p.eps },
        { ptr: table.ptr },
        { i32: tune.pdlEarly ? 1 : 0 },
      ],
      0,
      true,
    );
  }

  /** One GEMV launch of a version (see GemvTune); the product's argument rules (decode.ts). */
  gemv(x: DeviceBuffer, mats: readonly GemvTarget[], p: GemvLaunch, tune: GemvTune = {}): void {
    const { rows, k } = p;
    if (p.norm?.scratch && rows > NORM_FUSED_ROWS) {
      this.rmsnorm(x, p.norm.w, p.norm.scratch, { rows, dim: k, eps: p.norm.eps }, tune);
      this.gemv(p.norm.scratch, mats, { rows, k, epilogue: p.epilogue, prefetch: p.prefetch }, tune);
      return;
    }
    const swiglu = p.epilogue === "swiglu";
    const xdt = this.be.checks.live("dev", "x", x).dtype;
    const fields = { w: [0, 0, 0, 0], bias: [0, 0, 0, 0], y: [0, 0, 0, 0], n: [0, 0, 0, 0], ldy: [0, 0, 0, 0], start: [0, 0, 0, 0, 0] };
    let blocks = 0;
    mats.forEach((m, i) => {
      fields.w[i] = ptr(this.be, m.w);
      fields.bias[i] = m.bias ? ptr(this.be, m.bias) : 0;
      fields.y[i] = swiglu && i > 0 ? 0 : ptr(this.be, m.y);
      fields.n[i] = m.n;
      fields.ldy[i] = m.ldy ?? m.n;
      fields.start[i] = blocks;
      if (!swiglu || i === 0) blocks += Math.ceil(m.n / 16);
    });
    for (let i = mats.length; i <= 4; i++) fields.start[i] = blocks;
    if (swiglu) fields.start[1] = blocks;
    const tiles = swiglu ? 2 : 1;
    const nt = rows <= 8 ? 1 : 2;
    const steps = Math.ceil(k / 32);
    const unroll = tune.unroll ?? 4;
    const shape = (split: number) => {
      const sliceSteps = Math.ceil(steps / split);
      const nw = tune.warps ?? (sliceSteps >= 32 ? 8 : 4);
      const xsBytes = rows * (Math.min(sliceSteps * 32, k) + 8) * 2;
      const staged = !tune.noStage && rows <= STAGE_X_ROWS && xsBytes <= STAGE_X_BYTES;
      return { nw, staged, smem: nw * unroll * tiles * 1024 + (staged ? xsBytes : 0) };
    };
    const split =
      unroll !== 4
        ? 1
        : splitFor(blocks, steps, tune, (s) => {
            const sh = shape(s);
            return SPLIT_SMS * gemvBlocksPerSm(nt, tiles, sh.nw, sh.smem);
          });
    const { nw, staged, smem } = shape(split);
    assert.ok(smem <= SMEM_PER_SM, `${nw} warps x ${unroll} stages need ${smem} bytes of shared memory`);
    const pf = this.prefetchRegions(p.prefetch ?? [], (tune.prefetchMB ?? 0) * 2 ** 20);
    const selfPf = Math.floor((tune.selfPrefetchKB ?? 0) * 1024);
    const mat = [
      mats.length,
      ...fields.w,
      ...fields.bias,
      ...fields.y,
      ...fields.n,
      ...fields.ldy,
      ...fields.start,
      ...pf.ptrs,
      ...pf.bytes,
      selfPf,
    ];
    const name = `dec_gemv_${p.norm ? "xn" : xdt === "bf16" ? "x16" : "x32"}_nt${nt}_t${tiles}_u${unroll}${split > 1 ? "_s" : ""}`;
    const sc = split > 1 ? this.splitScratch() : null;
    if (split > 1) this.splitLaunches++;
    this.mod.launch(
      name,
      blocks * split,
      32 * nw,
      [
        { ptr: ptr(this.be, x) },
        { i64: k },
        { i64s: mat },
        { i32: rows },
        { i64: k },
        { i32: EPILOGUE_CODE[p.epilogue] },
        { ptr: p.norm ? ptr(this.be, p.norm.w) : 0 },
        { f64: p.norm?.eps ?? 0 },
        { i32: staged ? 1 : 0 },
        { i32: split },
        { ptr: sc ? ptr(this.be, sc.part) : 0 },
        { ptr: sc ? ptr(this.be, sc.counts) : 0 },
      ],
      smem,
      true,
    );
  }

  /** DgMats.pf / pfBytes: each buffer's first bytes, the budget shared in proportion to their sizes (16-byte multiples). */
  private prefetchRegions(bufs: readonly DeviceBuffer[], budget: number): { ptrs: number[]; bytes: number[] } {
    const ptrs = [0, 0, 0];
    const bytes = [0, 0, 0];
    const sizes = bufs.map((b) => b.length * ELEM_BYTES[b.dtype]);
    const total = sizes.reduce((a, b) => a + b, 0);
    if (budget <= 0 || total === 0) return { ptrs, bytes };
    const scale = Math.min(1, budget / total);
    bufs.forEach((b, i) => {
      ptrs[i] = ptr(this.be, b);
      bytes[i] = Math.floor((sizes[i]! * scale) / 16) * 16;
    });
    return { ptrs, bytes };
  }
}
