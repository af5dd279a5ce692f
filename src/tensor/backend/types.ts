/**
 * The backend contract: buffers plus a fixed list of primitive ops (STYLE.md habit 4). Every
 * backend (cpu now, cuda next) implements exactly this; the CPU backend is the reference the
 * others are tested against, op by op, forward and backward.
 *
 * A backend knows flat buffers and sizes only: no Tensor, no autograd, no model. All arrays are
 * row-major. Float ops run in the buffers' dtype (f32 for real work, f64 for gradient checks);
 * ids, targets, positions and layout segments are i32. bf16 buffers (mixed precision) are
 * storage: every op on bf16 computes in f32 from the exact upcast values and rounds its outputs
 * to bf16 (nearest even), and only two ops mix dtypes: matmul (bf16 A and B into an f32 or bf16
 * C, fp32 accumulation) and embedding (a bf16 table into an f32 out). `cast` converts. Unless a parameter says otherwise, every
 * op reads and writes its buffers from element 0 and overwrites its outputs. Elementwise ops
 * (unary, unaryBackward, binary, where, scalar, swiglu) allow an output to alias an input of the
 * same shape (in-place update); no other op does.
 *
 * Dimension letters: T query tokens, S key slots, H query heads, Hkv key/value heads, D head
 * dimension, V vocabulary, C channels, R rows, N elements.
 * After the contract: the optional capabilities a backend may declare beyond it (graph capture,
 * fused decode ops, paged decode attention, device sampling), one guard each.
 */
import { invariant } from "../../util/index.ts";

/**
 * Dtypes a buffer can hold. bf16 is held as its 16-bit patterns (a Uint16Array on the host) and
 * computed in f32; f16 is a storage format only, converted in tensor/dtype.ts.
 */
export type DType = "f32" | "f64" | "i32" | "bf16";
/** The float dtypes (what `cast` converts between). */
export type FloatDType = "f32" | "f64" | "bf16";

export type FloatArray = Float32Array | Float64Array;
/** Host arrays by dtype: f32 Float32Array, f64 Float64Array, i32 Int32Array, bf16 Uint16Array (bit patterns). */
export type HostArray = Float32Array | Float64Array | Int32Array | Uint16Array;

/** A backend-owned block of memory. Opaque outside its backend. */
export interface DeviceBuffer {
  readonly dtype: DType;
  /** Number of elements. */
  readonly length: number;
}

/** The primitive ops, grouped by kind. A backend implements all of them; nothing else is a primitive. */
export const PRIMITIVES = {
  memory: ["fill", "copy", "cast"],
  elementwise: ["unary", "unaryBackward", "binary", "where", "scalar", "swiglu", "swigluBackward"],
  reduce: ["reduceSum"],
  gemm: ["matmul"],
  nn: [
    "embedding",
    "embeddingBackward",
    "rmsnorm",
    "rmsnormBackward",
    "rope",
    "softmax",
    "softmaxBackward",
    "logSoftmax",
    "logSoftmaxBackward",
    "logprobGather",
    "logprobGatherBackward",
    "attention",
    "attentionBackward",
  ],
  optim: ["adamw"],
} as const;

export type PrimitiveName = (typeof PRIMITIVES)[keyof typeof PRIMITIVES][number];

/** Elementwise unary ops. */
export const UNARY_OPS = ["neg", "exp", "log", "sqrt", "rsqrt", "silu", "square", "sigmoid"] as const;
export type UnaryOp = (typeof UNARY_OPS)[number];

/**
 * Elementwise binary ops (with broadcasting through zero strides). min and max are the
 * elementwise minimum and maximum (the clipped objectives' pieces): min = a <= b ? a : b and
 * max = a >= b ? a : b, so a tie returns a, and a NaN in either operand gives NaN (the NaN
 * propagates, as torch.minimum's does). le is the comparison a <= b as 1 or 0 in the operands'
 * float dtype (0 where either is NaN): the mask the gradients of min and max route by (ties go to
 * a, see tensor/gradients.ts), and a mask for `where`. Op codes are the positions in this list.
 */
export const BINARY_OPS = ["add", "sub", "mul", "div", "min", "max", "le"] as const;
export type BinaryOp = (typeof BINARY_OPS)[number];

/** Tensor-scalar ops: out = x + s, x * s, x ** s. */
export const SCALAR_OPS = ["add", "mul", "pow"] as const;
export type ScalarOp = (typeof SCALAR_OPS)[number];

export interface CopyParams {
  /** Shape of the region copied (the output is this shape, contiguous from dstOffset). */
  shape: readonly number[];
  /** Element strides of the source, one per dimension (any, including 0 and negative-free views). */
  srcStrides: readonly number[];
  srcOffset: number;
  dstOffset: number;
}

export interface BinaryParams {
  /** Output shape; out is contiguous. */
  shape: readonly number[];
  /** Strides of a and b in the output's index space (0 where an operand is broadcast). */
  aStrides: readonly number[];
  bStrides: readonly number[];
}

export interface WhereParams {
  /** Output shape; out is contiguous. */
  shape: readonly number[];
  /** Strides of mask, a and b in the output's index space (0 where an operand is broadcast). */
  maskStrides: readonly number[];
  aStrides: readonly number[];
  bStrides: readonly number[];
}

export interface MatmulParams {
  /** Number of independent products (strided batch). */
  batch: number;
  /** C is [m, n]; op(A) is [m, k]; op(B) is [k, n]. */
  m: number;
  n: number;
  k: number;
  /** A stored as [k, m] and used transposed. */
  transA: boolean;
  /** B stored as [n, k] and used transposed. */
  transB: boolean;
  /** Element offsets between consecutive batch items (0 to reuse one matrix for all). */
  strideA: number;
  strideB: number;
  strideC: number;
  /** Element offsets of item 0. */
  offsetA?: number;
  offsetB?: number;
  offsetC?: number;
  /** C = alpha * op(A) op(B) + beta * C (beta 0: C is overwritten, never read). */
  alpha?: number;
  beta?: number;
}

export interface ReduceParams {
  /** x is viewed as [outer, reduce, inner]; out is [outer, inner] = sum over the middle axis. */
  outer: number;
  reduce: number;
  inner: number;
}

export interface RowsParams {
  /** x is [rows, cols]; the op works row by row. */
  rows: number;
  cols: number;
}

export interface RmsNormParams {
  /** x is [rows, dim]; the weight is [dim]; rstd is [rows] = 1 / sqrt(mean(x^2) + eps). */
  rows: number;
  dim: number;
  eps: number;
}

export interface RopeParams {
  /** x is [T, heads, dim] with dim even; positions is [T] (i32). */
  tokens: number;
  heads: number;
  dim: number;
  /** Base of the inverse frequencies: inv_freq[j] = theta^(-2j/dim), j < dim/2. */
  theta: number;
  /** Rotate by the negative angle: the backward of the forward rotation. */
  inverse: boolean;
}

export interface AttentionParams {
  /** q is [T, H, D]; k and v are [S', Hkv, D] with S' >= S (only the first S rows are read). */
  tokens: number;
  keys: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Multiplies q.k before the softmax (usually 1/sqrt(D)). */
  scale: number;
  /**
   * The caller accepts bf16 rounding of q, k, v and the probabilities inside the kernel (tensor
   * cores; about 1e-2 relative error), as a bf16-compute model does. A backend may ignore it; an
   * f32 result stays f32-accurate unless this is set.
   */
  bf16Inner?: boolean;
}

/** The layout segments of an attention call (see util/layout.ts), as i32 buffers. */
export interface AttentionSegments {
  /** [T + 1] CSR offsets into starts/ends. */
  offsets: DeviceBuffer;
  /** [numSegments] first key index (inclusive). */
  starts: DeviceBuffer;
  /** [numSegments] last key index + 1. */
  ends: DeviceBuffer;
}

export interface LogprobParams extends RowsParams {
  /** Rows whose target equals this value give logp 0 and no gradient. */
  ignoreIndex: number;
}

export interface AdamWParams {
  n: number;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number, for bias correction. */
  step: number;
}

export interface Backend {
  readonly name: string;
  /** Optional capabilities this backend implements (see "Optional capabilities" below); none if absent. */
  readonly capabilities?: readonly Capability[];

  // ---- buffers
  alloc(dtype: DType, length: number): DeviceBuffer;
  free(buf: DeviceBuffer): void;
  /** Copies host data into buf starting at element dstOffset. */
  write(buf: DeviceBuffer, src: HostArray, dstOffset?: number): void;
  /** A host copy of elements [offset, offset + length) of buf (default: all). */
  read(buf: DeviceBuffer, offset?: number, length?: number): HostArray;
  /** Number of calls of each primitive so far (and backend-specific counters such as "gemm.blas"). */
  counters(): Readonly<Record<string, number>>;

  // ---- memory
  /** out[:] = value. */
  fill(out: DeviceBuffer, value: number): void;
  /** Strided gather of a region of src into out (contiguous from dstOffset). Same dtype. */
  copy(src: DeviceBuffer, out: DeviceBuffer, p: CopyParams): void;
  /**
   * out[i] = x[i] converted, i < out.length, between any two float dtypes (f32, f64, bf16):
   * widening is exact, narrowing rounds to nearest even from the exact value (f64 -> bf16 is one
   * rounding, not two through f32). Same dtype is a plain copy.
   */
  cast(x: DeviceBuffer, out: DeviceBuffer): void;

  // ---- elementwise (all float, same dtype; n = out.length unless said)
  unary(op: UnaryOp, x: DeviceBuffer, out: DeviceBuffer): void;
  /** dx = dy * f'(x); y = f(x) is given for ops whose derivative is cheaper from it (exp, sqrt, rsqrt, sigmoid). */
  unaryBackward(op: UnaryOp, x: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer): void;
  binary(op: BinaryOp, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: BinaryParams): void;
  /**
   * Select by mask: out = mask != 0 ? a : b, elementwise, all three broadcast like binary's
   * operands. a, b and out share a float dtype; the mask is i32 or that same float dtype (a NaN
   * in a float mask counts as nonzero). Only the selected operand's value reaches out, so an
   * inf or NaN in the other one does not leak (unlike mask * a + (1 - mask) * b).
   */
  where(mask: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: WhereParams): void;
  scalar(op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void;
  /** out = silu(gate) * up, all [n]. */
  swiglu(gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void;
  /** dGate, dUp from dy for out = silu(gate) * up. */
  swigluBackward(gate: DeviceBuffer, up: DeviceBuffer, dy: DeviceBuffer, dGate: DeviceBuffer, dUp: DeviceBuffer): void;

  // ---- reduce
  reduceSum(x: DeviceBuffer, out: DeviceBuffer, p: ReduceParams): void;

  // ---- gemm
  matmul(a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, p: MatmulParams): void;

  // ---- nn
  /** out[i, :] = table[ids[i], :]; table [V, C], ids [N] i32, out [N, C]. Ids outside [0, V) throw. */
  embedding(table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void;
  /** dTable[ids[i], :] += dOut[i, :] (accumulates; the caller zeroes dTable). */
  embeddingBackward(dOut: DeviceBuffer, ids: DeviceBuffer, dTable: DeviceBuffer, p: { n: number; dim: number }): void;
  /** out = x * rstd * w; writes rstd [rows]. */
  rmsnorm(x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void;
  /** dx (overwritten) and dw (overwritten, summed over rows) from dy. */
  rmsnormBackward(
    x: DeviceBuffer,
    w: DeviceBuffer,
    rstd: DeviceBuffer,
    dy: DeviceBuffer,
    dx: DeviceBuffer,
    dw: DeviceBuffer,
    p: RmsNormParams,
  ): void;
  /** Rotate-half rotary embedding at explicit positions (HF Llama/Qwen convention). */
  rope(x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void;
  softmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void;
  softmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void;
  logSoftmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void;
  logSoftmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void;
  /**
   * logp[r] = logits[r, targets[r]] - logsumexp(logits[r, :]) (0 where targets[r] == ignoreIndex);
   * writes lse [rows]. logits [rows, cols] float, targets [rows] i32.
   */
  logprobGather(logits: DeviceBuffer, targets: DeviceBuffer, logp: DeviceBuffer, lse: DeviceBuffer, p: LogprobParams): void;
  /** dLogits[r, :] = dLogp[r] * (onehot(targets[r]) - softmax(logits[r, :])); 0 on ignored rows. */
  logprobGatherBackward(
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    lse: DeviceBuffer,
    dLogp: DeviceBuffer,
    dLogits: DeviceBuffer,
    p: LogprobParams,
  ): void;
  /**
   * Segment-masked attention with grouped-query heads: query head h uses kv head
   * floor(h * Hkv / H). out [T, H, D]; lse [T, H] = logsumexp of the scaled scores (saved for the
   * backward).
   */
  attention(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    seg: AttentionSegments,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    p: AttentionParams,
  ): void;
  /** dq [T, H, D], dk and dv [S, Hkv, D], all overwritten. */
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
  ): void;

  // ---- optim
  /**
   * One AdamW step in place (decoupled weight decay, bias-corrected moments):
   * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (wd p + m_hat / (sqrt(v_hat) + eps)).
   */
  adamw(param: DeviceBuffer, grad: DeviceBuffer, m: DeviceBuffer, v: DeviceBuffer, p: AdamWParams): void;
}

// ================================================================ optional capabilities
// What a backend may offer beyond the primitives, for the engine's decode fast path. A backend
// lists the ones it implements in `capabilities` and its class `implements` their interfaces (so
// TypeScript holds the methods to these signatures); callers ask through the one guard per
// capability below, never by probing for methods. CudaBackend offers all four; the CPU backend
// none (tests bind float64 stand-ins to a CPU backend by declaring the capability).

export const CAPABILITIES = ["graphCapture", "fusedDecode", "decodeAttention", "deviceSampling"] as const;
export type Capability = (typeof CAPABILITIES)[number];

/** A captured CUDA graph (or the like): replay() queues the recorded work again. */
export interface CapturedGraph {
  replay(): void;
  destroy(): void;
}

export interface ScatterRowsParams {
  /** src is [rows, rowSize]; pages is [slots, rowSize]. */
  rows: number;
  rowSize: number;
}

/** "graphCapture": record a body of ops once, replay it per step, with inputs read on the device. */
export interface GraphCapture {
  /**
   * Records what `body` queues into a replayable graph instead of running it. Every kernel used
   * inside must have run once before (module loads cannot be captured); body must not write, read
   * or allocate from the host.
   */
  captureGraph(body: () => void): CapturedGraph;
  /** A buffer over elements [offset, offset + length) of buf, sharing its memory; never freed alone. */
  view(buf: DeviceBuffer, offset: number, length: number, dtype?: DType): DeviceBuffer;
  /** pages[slots[r], :] = src[r, :] for r < rows; a negative slot writes nothing; slots (i32 [rows]) are read on the device. */
  scatterRows(src: DeviceBuffer, slots: DeviceBuffer, pages: DeviceBuffer, p: ScatterRowsParams): void;
}

export interface DecodeNormParams {
  /** x [rows, dim] f32, w [dim] f32, out16 [rows, dim] bf16. */
  rows: number;
  dim: number;
  eps: number;
}

/** What a fused GEMV does with its sums: store (+ bias), add into y (+ bias), or SwiGLU of [gate, up] into bf16. */
export type GemvEpilogue = "store" | "add" | "swiglu";

/** One matrix of a fused GEMV launch: y[b * ldy + j] (epilogue) sum_k x[b, k] w[j, k]. */
export interface GemvTarget {
  /** bf16 [n, k] (torch.nn.Linear layout), 16-byte aligned. */
  w: DeviceBuffer;
  /** Output rows: f32 for "store" and "add", bf16 for "swiglu" (given on the gate, the first). */
  y: DeviceBuffer;
  n: number;
  /** f32 [n] added to the product ("store", "add"). */
  bias?: DeviceBuffer | null;
  /** Elements between consecutive rows of y (default n). */
  ldy?: number;
}

export interface GemvParams {
  /** x [rows, k]: bf16, or f32 (rounded to bf16 as it is read); k % 8 == 0. */
  rows: number;
  k: number;
  epilogue: GemvEpilogue;
  /**
   * x is the f32 residual [rows, k], RMSNormed with w [k] (f32) as it is read. With `scratch`
   * (bf16 [rows, k]) a backend may run the norm as decodeRmsnorm into scratch first (beyond a few
   * rows, where recomputing every row's norm per block costs more than a kernel).
   */
  norm?: { w: DeviceBuffer; eps: number; scratch?: DeviceBuffer };
}

export interface QkNormRopeParams {
  /** q [rows, heads, D], k and v [rows, kvHeads, D]; pages [slots, kvHeads, D]. */
  rows: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  /** RoPE base, as RopeParams.theta. */
  theta: number;
}

/**
 * "fusedDecode": the decode step's fused ops for a mixed-precision model (bf16 matrices, f32
 * residual and KV pages, a few rows). Each equals the primitives it replaces up to summation order.
 */
export interface FusedDecodeOps {
  /** out16 = bf16(rmsnorm(x, w)): the norm and the GEMM input's cast in one op. */
  decodeRmsnorm(x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: DecodeNormParams): void;
  /** Several bf16 matrices times the same rows of x in one launch, with a fused epilogue. */
  decodeGemv(x: DeviceBuffer, mats: readonly GemvTarget[], p: GemvParams): void;
  /**
   * q normed per head with qNorm [D] and rotated at positions[r] in place; k normed with kNorm and
   * rotated into keys[slots[r]], v copied into values[slots[r]] (slot -1 writes nothing).
   * positions and slots are i32 [rows] read on the device.
   */
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
  ): void;
}

/** Capacities of a packed decode attention plan (decode-attention-plan.ts), fixed per captured graph. */
export interface DecodeAttentionCapacity {
  items: number;
  ranges: number;
  partials: number;
}

export interface DecodeAttentionParams {
  /** B: rows of q / out (the batch bucket); the plan was packed for this many rows. */
  rows: number;
  /** S: slots in the page arrays k and v ([S, Hkv, D]); slots outside [0, S) are skipped. */
  keys: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Multiplies q.k before the softmax (usually 1/sqrt(D)). */
  scale: number;
  /** What the plan buffer was laid out for (fixed while a graph that uses it is captured). */
  capacity: DecodeAttentionCapacity;
}

/**
 * "decodeAttention": attention of decode rows over paged keys by a packed work plan
 * (decode-attention-plan.ts packPlan), read on the device so a captured graph replays with new
 * plans within the capacity. out [B, H * D], lse [B, H]; a row without partials gets zeros and
 * lse -inf.
 */
export interface PagedDecodeAttention {
  decodeAttention(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    plan: DeviceBuffer,
    scratch: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    p: DecodeAttentionParams,
  ): void;
  /** Float elements of decodeAttention's scratch at this capacity. */
  decodeAttentionScratchLength(cap: DecodeAttentionCapacity, heads: number, headDim: number): number;
}

/**
 * The packed input of sampleRows, B rows (i32 words; the first part read as float64):
 *   [0, 2 SAMPLE_REC B)  B records of SAMPLE_REC doubles {temperature, topK, topP, minP, penalty,
 *                        u, mode, forced}; mode is a SAMPLE_MODE; u and forced are 0 / -1 when unused
 *   B words              logits row of each record
 *   B + 1 words          penalty id offsets, then B + 1 words ban id offsets (into the id list)
 *   ids                  penalty ids (unique) of every row, then ban ids of every row
 */
export const SAMPLE_REC = 8;
/** Row modes of the packed records. */
export const SAMPLE_MODE = { greedy: 0, forced: 1, sampled: 2 } as const;

/** "deviceSampling": sample rows of a logits buffer that stays on the device. */
export interface DeviceSampling {
  /** ids [batch] and float64 log-probs [batch] of the packed rows of logits [rows, vocab]; synchronizes. */
  sampleRows(logits: DeviceBuffer, packed: Int32Array, p: { batch: number; vocab: number }): { ids: Int32Array; logprobs: Float64Array };
}

/** The methods each capability names (the guards check them: a declared capability without them is a bug). */
const CAPABILITY_METHODS: Record<Capability, readonly string[]> = {
  graphCapture: ["captureGraph", "view", "scatterRows"],
  fusedDecode: ["decodeRmsnorm", "decodeGemv", "decodeQkNormRope"],
  decodeAttention: ["decodeAttention", "decodeAttentionScratchLength"],
  deviceSampling: ["sampleRows"],
};

function declares(be: Backend, cap: Capability): boolean {
  if (!be.capabilities?.includes(cap)) return false;
  const missing = CAPABILITY_METHODS[cap].filter((m) => typeof (be as unknown as Record<string, unknown>)[m] !== "function");
  invariant(missing.length === 0, () => `backend ${be.name} declares "${cap}" but has no ${missing.join(", ")}`);
  return true;
}

export function hasGraphCapture(be: Backend): be is Backend & GraphCapture {
  return declares(be, "graphCapture");
}

export function hasFusedDecode(be: Backend): be is Backend & FusedDecodeOps {
  return declares(be, "fusedDecode");
}

export function hasDecodeAttention(be: Backend): be is Backend & PagedDecodeAttention {
  return declares(be, "decodeAttention");
}

export function hasDeviceSampling(be: Backend): be is Backend & DeviceSampling {
  return declares(be, "deviceSampling");
}
