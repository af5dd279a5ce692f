/**
 * The CUDA backend: the Backend contract (types.ts) on an NVIDIA GPU, with buffers in device
 * memory, GEMMs in cuBLAS and every other primitive a kernel from kernels/*.cu (compiled by NVRTC
 * at first use, cached on disk). All work goes onto one blocking stream in call order; read()
 * is the synchronization point, and also where errors recorded by kernels (an id or target out of
 * range) surface as InvariantErrors naming the op.
 *
 * Counters: one per primitive call (the conformance suite checks them), plus "cuda.launch" (kernel
 * launches; "cuda.launch.pdl" those with programmatic dependent launch), "cublas.gemm" (cuBLAS
 * calls), "cuda.memset", "cuda.compile" and
 * "cuda.compile.cached" (kernel units compiled / loaded from the disk cache), so a test can prove
 * the GPU path ran. Argument checks (dtypes, sizes, use after free) are the CPU backend's, done on
 * the host before anything is queued; segment arrays live on the device and are not read back:
 * the kernels clamp segments to [0, keys), so a bad layout gives wrong numbers, never a stray read.
 * bf16 buffers: cast, fill, contiguous copy, matmul (cuBLAS bf16 x bf16 -> f32 or bf16, fp32
 * accumulation) and embedding from a bf16 table into f32 run natively; every other op with bf16
 * buffers goes through the generic f32 wrapper of ../bf16.ts (cast kernels around the f32 kernel),
 * which gives the CPU reference's results.
 * core.ts owns the device, the stream, buffers, kernel loading and launching (the extension
 * surface), graphs and error reporting; this file adds the ops, whose bodies live beside it: elementwise-ops.ts,
 * matmul-ops.ts, nn-ops.ts, attention-ops.ts, and the optional capabilities of types.ts (all
 * four declared): graphs here, decode.ts (fused decode ops), decode-attention.ts (paged decode
 * attention) and sampling.ts (on-device sampling).
 * Knows nothing about Tensors or autograd.
 */
import { installBf16 } from "../bf16.ts";
import type {
  AdamWParams,
  AttentionParams,
  AttentionSegments,
  Backend,
  BinaryOp,
  BinaryParams,
  CopyParams,
  DeviceBuffer,
  LogprobParams,
  MatmulParams,
  ReduceParams,
  RmsNormParams,
  RopeParams,
  RowsParams,
  ScalarOp,
  UnaryOp,
  WhereParams,
} from "../types.ts";
import { CUBLAS_SONAMES } from "./ffi/cublas.ts";
import { CUDA_ENV, openLibrary } from "./ffi/libs.ts";
import { CudaDriver } from "./ffi/driver.ts";

export { CudaBuffer } from "./buffers.ts";
// For `npr backend check --compile-only`: the kernel list and the nvcc/NVRTC compile checks.
export { allUnits, compileCheck, KERNEL_FILES } from "./compile.ts";
export { Nvrtc } from "./ffi/nvrtc.ts";
import { Nvrtc } from "./ffi/nvrtc.ts";
import type {
  Capability,
  DecodeAttentionCapacity,
  DecodeAttentionParams,
  DecodeNormParams,
  DeviceSampling,
  FusedDecodeOps,
  GemvParams,
  GemvTarget,
  GraphCapture,
  PagedDecodeAttention,
  QkNormRopeParams,
  ScatterRowsParams,
} from "../types.ts";
import { decodeAttention, decodeAttentionScratchLength } from "./decode-attention.ts";
import { sampleRows } from "./sampling.ts";
import { matmul } from "./matmul-ops.ts";
import * as fusedDecode from "./decode.ts";
import { attentionBackward, attentionForward } from "./attention-ops.ts";
import * as nn from "./nn-ops.ts";
import * as ew from "./elementwise-ops.ts";
import { CudaCore } from "./core.ts";
import type { CudaBackendOptions } from "./core.ts";
export type { CudaBackendOptions } from "./core.ts";

/** Why no CUDA backend can be made here, or null when one can (for skips and `backend check`). */
export function cudaUnavailable(): string | null {
  const d = CudaDriver.load();
  if (!d.driver) return d.why;
  try {
    d.driver.init();
    if (d.driver.deviceCount() === 0) return "libcuda loaded but no CUDA device is visible";
  } catch (e) {
    return `libcuda loaded but CUDA did not start: ${e instanceof Error ? e.message : String(e)}`;
  }
  const c = Nvrtc.load();
  if (!c.nvrtc) return c.why;
  const b = openLibrary("cuBLAS library", CUDA_ENV.libcublas, CUBLAS_SONAMES, "NPR_LIBCUBLAS");
  if (!b.lib) return b.why;
  return null;
}

/** The optional capabilities of types.ts the CUDA backend implements: all four. */
export const CUDA_CAPABILITIES: readonly Capability[] = Object.freeze([
  "graphCapture",
  "fusedDecode",
  "decodeAttention",
  "deviceSampling",
] as const);

export class CudaBackend extends CudaCore implements Backend, GraphCapture, FusedDecodeOps, PagedDecodeAttention, DeviceSampling {
  /** CUDA_CAPABILITIES (the engine's decode fast path finds them through the guards of types.ts). */
  readonly capabilities = CUDA_CAPABILITIES;

  constructor(opts: CudaBackendOptions = {}) {
    super(opts);
    // Calls with bf16 buffers that these methods run themselves; the rest are upcast around f32.
    installBf16(this, (op, args) => {
      if (op === "fill" || op === "copy" || op === "matmul") return true;
      return op === "embedding" && (args[2] as DeviceBuffer).dtype === "f32";
    });
  }

  /**
   * pages[slots[r], :] = src[r, :] for r < rows (rows of rowSize elements); a negative slot writes
   * nothing. The paged KV write of the decode graphs: slots are read on the device, so a graph
   * replays with new ones. Not a Backend primitive.
   */
  scatterRows(src: DeviceBuffer, slots: DeviceBuffer, pages: DeviceBuffer, p: ScatterRowsParams): void {
    nn.scatterRows(this, src, slots, pages, p);
  }

  // ---------------------------------------------------------------- memory and elementwise (elementwise-ops.ts)

  fill(out: DeviceBuffer, value: number): void {
    ew.fill(this, out, value);
  }

  copy(src: DeviceBuffer, out: DeviceBuffer, p: CopyParams): void {
    ew.copy(this, src, out, p);
  }

  cast(x: DeviceBuffer, out: DeviceBuffer): void {
    ew.cast(this, x, out);
  }

  unary(op: UnaryOp, x: DeviceBuffer, out: DeviceBuffer): void {
    ew.unary(this, op, x, out);
  }

  unaryBackward(op: UnaryOp, x: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer): void {
    ew.unaryBackward(this, op, x, y, dy, dx);
  }

  binary(op: BinaryOp, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: BinaryParams): void {
    ew.binary(this, op, a, b, out, p);
  }

  where(mask: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: WhereParams): void {
    ew.where(this, mask, a, b, out, p);
  }

  scalar(op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void {
    ew.scalar(this, op, x, value, out);
  }

  swiglu(gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void {
    ew.swiglu(this, gate, up, out);
  }

  swigluBackward(gate: DeviceBuffer, up: DeviceBuffer, dy: DeviceBuffer, dGate: DeviceBuffer, dUp: DeviceBuffer): void {
    ew.swigluBackward(this, gate, up, dy, dGate, dUp);
  }

  reduceSum(x: DeviceBuffer, out: DeviceBuffer, p: ReduceParams): void {
    ew.reduceSum(this, x, out, p);
  }

  // ---------------------------------------------------------------- gemm (matmul-ops.ts)

  matmul(a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, p: MatmulParams): void {
    matmul(this, this.cublas, a, b, c, p);
  }

  // ---------------------------------------------------------------- nn (nn-ops.ts)

  embedding(table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void {
    nn.embedding(this, table, ids, out, p);
  }

  embeddingBackward(dOut: DeviceBuffer, ids: DeviceBuffer, dTable: DeviceBuffer, p: { n: number; dim: number }): void {
    nn.embeddingBackward(this, dOut, ids, dTable, p);
  }

  rmsnorm(x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void {
    nn.rmsnorm(this, x, w, out, rstd, p);
  }

  rmsnormBackward(
    x: DeviceBuffer,
    w: DeviceBuffer,
    rstd: DeviceBuffer,
    dy: DeviceBuffer,
    dx: DeviceBuffer,
    dw: DeviceBuffer,
    p: RmsNormParams,
  ): void {
    nn.rmsnormBackward(this, x, w, rstd, dy, dx, dw, p);
  }

  rope(x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void {
    nn.rope(this, x, positions, out, p);
  }

  softmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    nn.softmax(this, x, out, p);
  }

  softmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    nn.softmaxBackward(this, y, dy, dx, p);
  }

  logSoftmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    nn.logSoftmax(this, x, out, p);
  }

  logSoftmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    nn.logSoftmaxBackward(this, y, dy, dx, p);
  }

  logprobGather(logits: DeviceBuffer, targets: DeviceBuffer, logp: DeviceBuffer, lse: DeviceBuffer, p: LogprobParams): void {
    nn.logprobGather(this, logits, targets, logp, lse, p);
  }

  logprobGatherBackward(
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    lse: DeviceBuffer,
    dLogp: DeviceBuffer,
    dLogits: DeviceBuffer,
    p: LogprobParams,
  ): void {
    nn.logprobGatherBackward(this, logits, targets, lse, dLogp, dLogits, p);
  }

  // ---------------------------------------------------------------- attention (attention-ops.ts)

  attention(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    seg: AttentionSegments,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    p: AttentionParams,
  ): void {
    attentionForward(this, q, k, v, seg, out, lse, p);
  }

  attentionBackward(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    seg: AttentionSegments,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    dOut: DeviceBuffer,
    dq: DeviceBuffer,
    dk: DeviceBuffer,
    dv: DeviceBuffer,
    p: AttentionParams,
  ): void {
    attentionBackward(this, q, k, v, seg, out, lse, dOut, dq, dk, dv, p);
  }

  // ---------------------------------------------------------------- optim

  adamw(param: DeviceBuffer, grad: DeviceBuffer, m: DeviceBuffer, v: DeviceBuffer, p: AdamWParams): void {
    ew.adamw(this, param, grad, m, v, p);
  }

  // ---------------------------------------------------------------- fused decode ops (decode.ts)

  /** out16 [rows, dim] bf16 = bf16(rmsnorm(x, w)), x f32: the norm and the GEMM input's cast in one kernel. */
  decodeRmsnorm(x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: DecodeNormParams): void {
    fusedDecode.decodeRmsnorm(this, x, w, out16, p);
  }

  /** Several bf16 matrices times the same <= 16 rows in one launch, with a fused epilogue (decode.ts). */
  decodeGemv(x: DeviceBuffer, mats: readonly GemvTarget[], p: GemvParams): void {
    fusedDecode.decodeGemv(this, x, mats, p);
  }

  /** q/k RMSNorm per head + RoPE at each row's position, k and v written into their page slots. */
  decodeQkNormRope(
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
  ): void {
    fusedDecode.decodeQkNormRope(this, q, k, v, qNorm, kNorm, positions, slots, keys, values, p);
  }

  // ---------------------------------------------------------------- decode attention (decode-attention.ts)

  /**
   * Paged decode attention over a packed work plan (../decode-attention-plan.ts): every key read once
   * per step for all rows that see it, long rows split over many blocks. Sizes and layouts in
   * decode-attention.ts; capturable (reads the plan on the device).
   */
  decodeAttention(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    plan: DeviceBuffer,
    scratch: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    p: DecodeAttentionParams,
  ): void {
    decodeAttention(this, q, k, v, plan, scratch, out, lse, p);
  }

  /** Float elements of decodeAttention's scratch at this capacity (the engine sizes it through the capability). */
  decodeAttentionScratchLength(cap: DecodeAttentionCapacity, heads: number, headDim: number): number {
    return decodeAttentionScratchLength(cap, heads, headDim);
  }

  // ---------------------------------------------------------------- on-device sampling (sampling.ts)

  /**
   * Samples rows of a [rows, vocab] logits buffer on the device with the host sampler's
   * processors; `packed` is made by the engine's DeviceSampler (layout in sampling.ts and
   * sample.cu). Returns ids [B] and float64 log-probs [B]; synchronizes.
   */
  sampleRows(logits: DeviceBuffer, packed: Int32Array, p: { batch: number; vocab: number }): { ids: Int32Array; logprobs: Float64Array } {
    return sampleRows(this, logits, packed, p);
  }
}
