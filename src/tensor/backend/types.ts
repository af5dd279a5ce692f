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
 * (unary, unaryBackward, binary, scalar, swiglu) allow an output to alias an input of the same
 * shape (in-place update); no other op does.
 *
 * Dimension letters: T query tokens, S key slots, H query heads, Hkv key/value heads, D head
 * dimension, V vocabulary, C channels, R rows, N elements.
 */

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
  elementwise: ["unary", "unaryBackward", "binary", "scalar", "swiglu", "swigluBackward"],
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

/** Elementwise binary ops (with broadcasting through zero strides). */
export const BINARY_OPS = ["add", "sub", "mul", "div"] as const;
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
  scalar(op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void;
  /** out = silu(gate) * up, all [n]. */
  swiglu(gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void;
  /** dGate, dUp from dy for out = silu(gate) * up. */
  swigluBackward(
    gate: DeviceBuffer,
    up: DeviceBuffer,
    dy: DeviceBuffer,
    dGate: DeviceBuffer,
    dUp: DeviceBuffer,
  ): void;

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
  logprobGather(
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    logp: DeviceBuffer,
    lse: DeviceBuffer,
    p: LogprobParams,
  ): void;
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
