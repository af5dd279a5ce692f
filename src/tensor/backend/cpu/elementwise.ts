/**
 * CPU kernels for the memory, elementwise and reduce primitives: fill, strided copy, unary ops and
 * their backward, broadcasting binary ops (min, max and the le mask included), select by mask
 * (where), tensor-scalar ops, SwiGLU and reduceSum.
 *
 * Plain functions over typed arrays. They trust their arguments: dtype and size checks happen once
 * in index.ts (CpuBackend), so nothing here knows about DeviceBuffers, counters or errors.
 * Float math runs in JS doubles and is rounded once when stored, so f32 results are within an ulp
 * of the f64 reference for single ops, and every sum accumulates in f64.
 */
import type { BinaryOp, CopyParams, FloatArray, HostArray, ScalarOp, UnaryOp } from "../types.ts";
import { collapseDims, numel } from "../extents.ts";
import { expF, sigmoidF } from "./exp.ts";

// ---------------------------------------------------------------- row walks

/**
 * Calls fn once per innermost row of a collapsed view, with each operand's element offset of the
 * row's first element and the contiguous output offset. The odometer updates offsets
 * incrementally, so the cost per row is O(1) amortized.
 */
function forEachRow(
  shape: readonly number[],
  strides: ReadonlyArray<readonly number[]>,
  base: readonly number[],
  fn: (offsets: readonly number[], outOffset: number) => void,
): void {
  const rank = shape.length;
  const inner = shape[rank - 1];
  const numOps = strides.length;
  const offs = base.slice();
  const idx = new Array<number>(rank).fill(0);
  const numRows = numel(shape) / inner;
  for (let row = 0; row < numRows; row++) {
    fn(offs, row * inner);
    // Advance the odometer over dimensions rank-2 .. 0.
    for (let d = rank - 2; d >= 0; d--) {
      idx[d]++;
      for (let j = 0; j < numOps; j++) offs[j] += strides[j][d];
      if (idx[d] < shape[d]) break;
      for (let j = 0; j < numOps; j++) offs[j] -= strides[j][d] * shape[d];
      idx[d] = 0;
    }
  }
}

// ---------------------------------------------------------------- memory

export function fill(out: HostArray, value: number): void {
  out.fill(value);
}

/** Below this many elements a contiguous run is copied by a loop rather than subarray + set. */
const SET_MIN_RUN = 32;

/** Gathers the strided region p of src into out, contiguous from p.dstOffset. Same array type. */
export function copy(src: HostArray, out: HostArray, p: CopyParams): void {
  const n = numel(p.shape);
  if (n === 0) return;
  const { shape, strides } = collapseDims(p.shape, [p.srcStrides]);
  const inner = shape[shape.length - 1];
  const step = strides[0][shape.length - 1];
  const dst0 = p.dstOffset;
  forEachRow(shape, strides, [p.srcOffset], (offs, o) => {
    const s = offs[0];
    const d = dst0 + o;
    if (step === 1 && inner >= SET_MIN_RUN) {
      // Same element type on both sides (checked by the backend): a memcpy.
      out.set(src.subarray(s, s + inner) as never, d);
    } else if (step === 1) {
      for (let i = 0; i < inner; i++) out[d + i] = src[s + i];
    } else {
      for (let i = 0, si = s; i < inner; i++, si += step) out[d + i] = src[si];
    }
  });
}

// ---------------------------------------------------------------- unary

/** Logistic sigmoid without overflow for large |x|. */
function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** out[i] = f(x[i]) for i < n. One loop per op so no switch runs per element. */
export function unary(op: UnaryOp, x: FloatArray, out: FloatArray, n: number): void {
  switch (op) {
    case "neg":
      for (let i = 0; i < n; i++) out[i] = -x[i];
      return;
    case "exp":
      for (let i = 0; i < n; i++) out[i] = Math.exp(x[i]);
      return;
    case "log":
      for (let i = 0; i < n; i++) out[i] = Math.log(x[i]);
      return;
    case "sqrt":
      for (let i = 0; i < n; i++) out[i] = Math.sqrt(x[i]);
      return;
    case "rsqrt":
      for (let i = 0; i < n; i++) out[i] = 1 / Math.sqrt(x[i]);
      return;
    case "silu":
      for (let i = 0; i < n; i++) {
        const v = x[i];
        out[i] = v * sigmoid(v);
      }
      return;
    case "square":
      for (let i = 0; i < n; i++) {
        const v = x[i];
        out[i] = v * v;
      }
      return;
    case "sigmoid":
      for (let i = 0; i < n; i++) out[i] = sigmoid(x[i]);
      return;
  }
}

/** The unary ops whose derivative is read from y = f(x) instead of x. */
export const UNARY_USES_Y: ReadonlySet<UnaryOp> = new Set<UnaryOp>(["exp", "sqrt", "rsqrt", "sigmoid"]);

/** dx[i] = dy[i] * f'(x[i]); y is read only for the ops in UNARY_USES_Y. */
export function unaryBackward(op: UnaryOp, x: FloatArray, y: FloatArray, dy: FloatArray, dx: FloatArray, n: number): void {
  switch (op) {
    case "neg":
      for (let i = 0; i < n; i++) dx[i] = -dy[i];
      return;
    case "exp": // d/dx e^x = y
      for (let i = 0; i < n; i++) dx[i] = dy[i] * y[i];
      return;
    case "log":
      for (let i = 0; i < n; i++) dx[i] = dy[i] / x[i];
      return;
    case "sqrt": // 1 / (2 sqrt x)
      for (let i = 0; i < n; i++) dx[i] = (0.5 * dy[i]) / y[i];
      return;
    case "rsqrt": // d/dx x^(-1/2) = -x^(-3/2) / 2 = -y^3 / 2
      for (let i = 0; i < n; i++) {
        const r = y[i];
        dx[i] = -0.5 * dy[i] * r * r * r;
      }
      return;
    case "silu": // s (1 + x (1 - s)), s = sigmoid(x)
      for (let i = 0; i < n; i++) {
        const v = x[i];
        const s = sigmoid(v);
        dx[i] = dy[i] * s * (1 + v * (1 - s));
      }
      return;
    case "square":
      for (let i = 0; i < n; i++) dx[i] = 2 * x[i] * dy[i];
      return;
    case "sigmoid":
      for (let i = 0; i < n; i++) {
        const s = y[i];
        dx[i] = dy[i] * s * (1 - s);
      }
      return;
  }
}

// ---------------------------------------------------------------- binary

/** out[o + i] = a[ao + i*as] (op) b[bo + i*bs] for i < n. */
function binaryRow(
  op: BinaryOp,
  a: FloatArray,
  ao: number,
  as: number,
  b: FloatArray,
  bo: number,
  bs: number,
  out: FloatArray,
  o: number,
  n: number,
): void {
  const end = o + n;
  switch (op) {
    case "add":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) out[i] = a[ai] + b[bi];
      return;
    case "sub":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) out[i] = a[ai] - b[bi];
      return;
    case "mul":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) out[i] = a[ai] * b[bi];
      return;
    case "div":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) out[i] = a[ai] / b[bi];
      return;
    // min and max: ties return a; `u !== u` (u is NaN) keeps a NaN a, and a NaN b fails the
    // comparison so b is returned: NaN either way, as the CUDA kernel does. Not Math.min, whose
    // min(+0, -0) = -0 would break the tie rule.
    case "min":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) {
        const u = a[ai];
        const v = b[bi];
        out[i] = u <= v || u !== u ? u : v;
      }
      return;
    case "max":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) {
        const u = a[ai];
        const v = b[bi];
        out[i] = u >= v || u !== u ? u : v;
      }
      return;
    case "le":
      for (let i = o, ai = ao, bi = bo; i < end; i++, ai += as, bi += bs) out[i] = a[ai] <= b[bi] ? 1 : 0;
      return;
  }
}

/**
 * out = a (op) b over p.shape with broadcasting through zero strides. After collapsing, the
 * common cases are one call of binaryRow: same shape (one row of n, both strides 1), scalar-like
 * (b stride 0), and [R, C] op [C] (R rows of C, b's row stride 0).
 */
export function binary(
  op: BinaryOp,
  a: FloatArray,
  b: FloatArray,
  out: FloatArray,
  p: {
    shape: readonly number[];
    aStrides: readonly number[];
    bStrides: readonly number[];
  },
): void {
  if (numel(p.shape) === 0) return;
  const { shape, strides } = collapseDims(p.shape, [p.aStrides, p.bStrides]);
  const r = shape.length - 1;
  const inner = shape[r];
  const as = strides[0][r];
  const bs = strides[1][r];
  if (r === 0) {
    binaryRow(op, a, 0, as, b, 0, bs, out, 0, inner);
    return;
  }
  forEachRow(shape, strides, [0, 0], (offs, o) => binaryRow(op, a, offs[0], as, b, offs[1], bs, out, o, inner));
}

/**
 * out = mask != 0 ? a : b over p.shape, broadcasting all three through zero strides. The mask is
 * an i32 array or a float array of the others' dtype (a NaN in it is nonzero: it selects a).
 */
export function where(
  mask: FloatArray | Int32Array,
  a: FloatArray,
  b: FloatArray,
  out: FloatArray,
  p: {
    shape: readonly number[];
    maskStrides: readonly number[];
    aStrides: readonly number[];
    bStrides: readonly number[];
  },
): void {
  if (numel(p.shape) === 0) return;
  const { shape, strides } = collapseDims(p.shape, [p.maskStrides, p.aStrides, p.bStrides]);
  const r = shape.length - 1;
  const inner = shape[r];
  const [ms, as, bs] = [strides[0][r], strides[1][r], strides[2][r]];
  forEachRow(shape, strides, [0, 0, 0], (offs, o) => {
    for (let i = o, mi = offs[0], ai = offs[1], bi = offs[2], end = o + inner; i < end; i++, mi += ms, ai += as, bi += bs) {
      out[i] = mask[mi] !== 0 ? a[ai] : b[bi];
    }
  });
}

// ---------------------------------------------------------------- scalar, swiglu

/** out[i] = x[i] + s, x[i] * s or x[i] ** s, for i < n. */
export function scalar(op: ScalarOp, x: FloatArray, value: number, out: FloatArray, n: number): void {
  switch (op) {
    case "add":
      for (let i = 0; i < n; i++) out[i] = x[i] + value;
      return;
    case "mul":
      for (let i = 0; i < n; i++) out[i] = x[i] * value;
      return;
    case "pow":
      if (value === 2) {
        for (let i = 0; i < n; i++) out[i] = x[i] * x[i];
      } else {
        for (let i = 0; i < n; i++) out[i] = Math.pow(x[i], value);
      }
      return;
  }
}

/**
 * out = silu(gate) * up over elements [start, end) of arrays [n]. f32 arrays take expF (exp.ts);
 * the loop is written twice so each copy stays monomorphic and keeps its exp inlined.
 */
export function swiglu(gate: FloatArray, up: FloatArray, out: FloatArray, start: number, end: number): void {
  if (out instanceof Float32Array) {
    for (let i = start; i < end; i++) {
      const g = gate[i];
      out[i] = (g * up[i]) / (1 + expF(-g));
    }
    return;
  }
  for (let i = start; i < end; i++) {
    const g = gate[i];
    out[i] = g * sigmoid(g) * up[i];
  }
}

/**
 * dUp = dy silu(gate); dGate = dy up silu'(gate), silu'(g) = s (1 + g (1 - s)), over [start, end).
 * Each element of up is read before dUp's is written: the caller may pass dUp aliasing up.
 */
export function swigluBackward(
  gate: FloatArray,
  up: FloatArray,
  dy: FloatArray,
  dGate: FloatArray,
  dUp: FloatArray,
  start: number,
  end: number,
): void {
  if (dGate instanceof Float32Array) {
    for (let i = start; i < end; i++) {
      const g = gate[i];
      const s = sigmoidF(g);
      const d = dy[i];
      const u = up[i];
      dUp[i] = d * g * s;
      dGate[i] = d * u * s * (1 + g * (1 - s));
    }
    return;
  }
  for (let i = start; i < end; i++) {
    const g = gate[i];
    const s = sigmoid(g);
    const d = dy[i];
    const u = up[i];
    dUp[i] = d * g * s;
    dGate[i] = d * u * s * (1 + g * (1 - s));
  }
}

// ---------------------------------------------------------------- reduce

/**
 * x viewed as [outer, reduce, inner]; out [outer, inner] = sum over the middle axis, accumulated
 * in f64 (one scratch row of `inner` doubles per call) and rounded once when stored.
 */
export function reduceSum(x: FloatArray, out: FloatArray, outer: number, reduce: number, inner: number): void {
  if (inner === 1) {
    for (let o = 0; o < outer; o++) {
      let s = 0;
      const base = o * reduce;
      for (let r = 0; r < reduce; r++) s += x[base + r];
      out[o] = s;
    }
    return;
  }
  const acc = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    acc.fill(0);
    // Walk x row by row (stride-1 over inner), the cache-friendly order for [reduce, inner].
    for (let r = 0; r < reduce; r++) {
      const base = (o * reduce + r) * inner;
      for (let i = 0; i < inner; i++) acc[i] += x[base + i];
    }
    const ob = o * inner;
    for (let i = 0; i < inner; i++) out[ob + i] = acc[i];
  }
}
