/**
 * The differentiable ops: each checks shapes, allocates its output, calls one backend primitive
 * and records itself for autograd (its backward rule is in gradients.ts). Composite ops
 * (crossEntropy, mean, linear's bias) are built from these and need no rule of their own.
 * Dimension letters as in backend/types.ts. This file knows the backend contract only.
 */
import type { BinaryOp, DeviceBuffer, FloatDType, ScalarOp, UnaryOp, Backend, AttentionSegments } from "./backend/types.ts";
import type { Layout } from "../util/index.ts";
import { Tensor, numel } from "./tensor.ts";
import { record } from "./autograd.ts";
import { invariant } from "../util/index.ts";

function c(t: Tensor): Tensor {
  return t.contiguous();
}

function shapeStr(t: Tensor): string {
  return `[${t.shape.join(", ")}]`;
}

function newLike(t: Tensor, shape: readonly number[] = t.shape): Tensor {
  return Tensor.empty(shape, { backend: t.backend, dtype: t.dtype });
}

function checkFloat(op: string, ...ts: Tensor[]): void {
  const dtype = ts[0]!.dtype;
  for (const t of ts) {
    invariant(t.dtype !== "i32", () => `${op}: float tensor expected, got i32 ${shapeStr(t)}`);
    invariant(t.dtype === dtype, () => `${op}: dtypes differ (${dtype} vs ${t.dtype})`);
    invariant(t.backend === ts[0]!.backend, () => `${op}: tensors live on different backends`);
  }
}

// ---------------------------------------------------------------- dtype

/**
 * x converted to a float dtype (nearest even when narrowing); x itself when it already is. The
 * gradient is cast back to x's dtype (gradients.ts), so an f32 graph can pass through bf16 GEMMs.
 */
export function cast(x: Tensor, dtype: FloatDType): Tensor {
  invariant(x.dtype !== "i32", () => `cast: float tensor expected, got i32 ${shapeStr(x)}`);
  if (x.dtype === dtype) return x;
  const xc = c(x);
  const out = Tensor.empty(xc.shape, { backend: x.backend, dtype });
  x.backend.cast(xc.buffer, out.buffer);
  return record("cast", out, [xc], { from: x.dtype });
}

// ---------------------------------------------------------------- elementwise

/** NumPy broadcasting: the output shape and each operand's strides in the output index space. */
export function broadcastShapes(
  a: readonly number[],
  b: readonly number[],
): {
  shape: number[];
  aStrides: number[];
  bStrides: number[];
} {
  const n = Math.max(a.length, b.length);
  const shape = new Array<number>(n);
  const aStrides = new Array<number>(n);
  const bStrides = new Array<number>(n);
  let sa = 1;
  let sb = 1;
  for (let i = n - 1; i >= 0; i--) {
    const da = a[i - (n - a.length)] ?? 1;
    const db = b[i - (n - b.length)] ?? 1;
    invariant(da === db || da === 1 || db === 1, () => `cannot broadcast [${a}] with [${b}]`);
    shape[i] = Math.max(da, db);
    aStrides[i] = da === 1 ? 0 : sa;
    bStrides[i] = db === 1 ? 0 : sb;
    sa *= da;
    sb *= db;
  }
  return { shape, aStrides, bStrides };
}

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  checkFloat(op, a, b);
  const ac = c(a);
  const bc = c(b);
  const { shape, aStrides, bStrides } = broadcastShapes(ac.shape, bc.shape);
  const out = newLike(ac, shape);
  a.backend.binary(op, ac.buffer, bc.buffer, out.buffer, { shape, aStrides, bStrides });
  return record(op, out, [ac, bc]);
}

export const add = (a: Tensor, b: Tensor): Tensor => binary("add", a, b);
export const sub = (a: Tensor, b: Tensor): Tensor => binary("sub", a, b);
export const mul = (a: Tensor, b: Tensor): Tensor => binary("mul", a, b);
export const div = (a: Tensor, b: Tensor): Tensor => binary("div", a, b);

// ---------------------------------------------------------------- clipping: min, max, clamp, where

/**
 * Elementwise minimum of a and b (broadcast). A tie returns a, and the whole gradient goes to a
 * there (gradients.ts); a NaN in either operand gives NaN.
 */
export const minimum = (a: Tensor, b: Tensor): Tensor => binary("min", a, b);
/** Elementwise maximum of a and b (broadcast); ties as minimum's: the value and gradient of a. */
export const maximum = (a: Tensor, b: Tensor): Tensor => binary("max", a, b);

/**
 * a <= b as 1 or 0 in the operands' dtype (broadcast; 0 where either is NaN). A mask, not a
 * differentiable op: the result never requires a gradient, whatever its inputs do.
 */
export function lessEqual(a: Tensor, b: Tensor): Tensor {
  checkFloat("lessEqual", a, b);
  const ac = c(a);
  const bc = c(b);
  const { shape, aStrides, bStrides } = broadcastShapes(ac.shape, bc.shape);
  const out = newLike(ac, shape);
  a.backend.binary("le", ac.buffer, bc.buffer, out.buffer, { shape, aStrides, bStrides });
  return out;
}

/**
 * x clamped to [lo, hi]: maximum(minimum(x, hi), lo), a composite (no rule of its own). A bound
 * is a number or a tensor broadcast against x; lo <= hi is the caller's business (with lo > hi
 * every element is lo, as torch.clamp gives). The gradient passes where lo <= x <= hi, boundaries
 * included (x is the first operand of both ops, and ties go to it), and is 0 outside: torch.clamp's
 * convention. A bound tensor that requires a gradient gets it where its side is the one clipped.
 */
export function clamp(x: Tensor, lo: number | Tensor, hi: number | Tensor): Tensor {
  checkFloat("clamp", x);
  const bound = (v: number | Tensor): Tensor => (typeof v === "number" ? Tensor.full([1], v, { backend: x.backend, dtype: x.dtype }) : v);
  return maximum(minimum(x, bound(hi)), bound(lo));
}

/**
 * Select by mask: mask != 0 ? a : b, elementwise, the three broadcast together. The mask is an
 * i32 tensor or a float one of a's dtype (a 0/1 mask from lessEqual, or a loss mask); it gets no
 * gradient. a and b get the output's gradient where they were selected and 0 elsewhere; unlike
 * mask * a + (1 - mask) * b, an inf or NaN in the unselected operand leaks into neither the value
 * nor the gradient.
 */
export function where(mask: Tensor, a: Tensor, b: Tensor): Tensor {
  checkFloat("where", a, b);
  invariant(
    mask.dtype === "i32" || mask.dtype === a.dtype,
    () => `where: mask ${shapeStr(mask)} is ${mask.dtype}, a is ${a.dtype}: a mask is i32 or the values' float dtype (cast it)`,
  );
  invariant(mask.backend === a.backend, "where: mask and values live on different backends");
  const mc = c(mask);
  const ac = c(a);
  const bc = c(b);
  const ab = broadcastShapes(ac.shape, bc.shape);
  const mab = broadcastShapes(mc.shape, ab.shape);
  const shape = mab.shape;
  // Each operand's strides in the final shape: broadcast it against the result once more.
  const stridesIn = (t: Tensor): number[] => broadcastShapes(t.shape, shape).aStrides;
  const out = newLike(ac, shape);
  a.backend.where(mc.buffer, ac.buffer, bc.buffer, out.buffer, {
    shape,
    maskStrides: mab.aStrides,
    aStrides: stridesIn(ac),
    bStrides: stridesIn(bc),
  });
  return record("where", out, [mc, ac, bc]);
}

function scalarOp(op: ScalarOp, x: Tensor, s: number): Tensor {
  checkFloat(`${op}Scalar`, x);
  const xc = c(x);
  const out = newLike(xc);
  x.backend.scalar(op, xc.buffer, s, out.buffer);
  return record(`${op}Scalar`, out, [xc], { s });
}

export const addScalar = (x: Tensor, s: number): Tensor => scalarOp("add", x, s);
export const mulScalar = (x: Tensor, s: number): Tensor => scalarOp("mul", x, s);
export const powScalar = (x: Tensor, s: number): Tensor => scalarOp("pow", x, s);

function unary(op: UnaryOp, x: Tensor): Tensor {
  checkFloat(op, x);
  const xc = c(x);
  const out = newLike(xc);
  x.backend.unary(op, xc.buffer, out.buffer);
  return record(op, out, [xc], { unary: op });
}

export const neg = (x: Tensor): Tensor => unary("neg", x);
export const exp = (x: Tensor): Tensor => unary("exp", x);
export const log = (x: Tensor): Tensor => unary("log", x);
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x);
export const rsqrt = (x: Tensor): Tensor => unary("rsqrt", x);
export const silu = (x: Tensor): Tensor => unary("silu", x);
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x);
export const square = (x: Tensor): Tensor => unary("square", x);

/** silu(gate) * up, fused. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  checkFloat("swiglu", gate, up);
  invariant(gate.size === up.size, () => `swiglu: gate ${shapeStr(gate)} and up ${shapeStr(up)} differ`);
  const g = c(gate);
  const u = c(up);
  const out = newLike(g);
  gate.backend.swiglu(g.buffer, u.buffer, out.buffer);
  return record("swiglu", out, [g, u]);
}

// ---------------------------------------------------------------- reductions

function normAxes(axis: number | readonly number[] | undefined, ndim: number): number[] {
  if (axis === undefined) return [...Array(ndim).keys()];
  const list = typeof axis === "number" ? [axis] : [...axis];
  return [...new Set(list.map((a) => (a < 0 ? a + ndim : a)))].sort((x, y) => x - y);
}

/** Sum over one axis; the primitive behind sum(). */
function sumAxis(x: Tensor, axis: number, keepdim: boolean): Tensor {
  const xc = c(x);
  const outer = numel(xc.shape.slice(0, axis));
  const inner = numel(xc.shape.slice(axis + 1));
  const shape = keepdim ? xc.shape.map((d, i) => (i === axis ? 1 : d)) : xc.shape.filter((_, i) => i !== axis);
  const out = newLike(xc, shape);
  x.backend.reduceSum(xc.buffer, out.buffer, { outer, reduce: xc.shape[axis]!, inner });
  return record("sum", out, [xc], { axis, keepdim });
}

/** Sum over the given axes (all by default). */
export function sum(x: Tensor, axis?: number | readonly number[], keepdim = false): Tensor {
  checkFloat("sum", x);
  const axes = normAxes(axis, x.ndim);
  let out = x;
  // Reduce the highest axis first so the lower axis numbers stay valid.
  for (let i = axes.length - 1; i >= 0; i--) out = sumAxis(out, axes[i]!, keepdim);
  return out === x ? x.contiguous() : out;
}

export function mean(x: Tensor, axis?: number | readonly number[], keepdim = false): Tensor {
  const axes = normAxes(axis, x.ndim);
  const count = axes.reduce((a, ax) => a * x.shape[ax]!, 1);
  return mulScalar(sum(x, axes, keepdim), 1 / count);
}

// ---------------------------------------------------------------- matmul

/** Runs one GEMM primitive; shapes are the caller's business. */
function gemm(
  backend: Backend,
  a: DeviceBuffer,
  b: DeviceBuffer,
  out: DeviceBuffer,
  p: { batch: number; m: number; n: number; k: number; transA: boolean; transB: boolean; strideA: number; strideB: number },
): void {
  backend.matmul(a, b, out, { ...p, strideC: p.m * p.n });
}

/**
 * [m, k] @ [k, n] -> [m, n]; [B, m, k] @ [B, k, n] -> [B, m, n]; [B, m, k] @ [k, n] -> [B, m, n].
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  checkFloat("matmul", a, b);
  const ac = c(a);
  const bc = c(b);
  invariant(ac.ndim === 2 || ac.ndim === 3, () => `matmul: a must be 2-D or 3-D, got ${shapeStr(a)}`);
  invariant(bc.ndim === 2 || bc.ndim === ac.ndim, () => `matmul: b ${shapeStr(b)} does not fit a ${shapeStr(a)}`);
  const batch = ac.ndim === 3 ? ac.shape[0]! : 1;
  const [m, k] = ac.shape.slice(-2) as [number, number];
  const [k2, n] = bc.shape.slice(-2) as [number, number];
  invariant(k === k2, () => `matmul: inner dimensions differ, ${shapeStr(a)} @ ${shapeStr(b)}`);
  if (bc.ndim === 3) invariant(bc.shape[0] === batch, () => `matmul: batch sizes differ, ${shapeStr(a)} @ ${shapeStr(b)}`);
  const shape = ac.ndim === 3 ? [batch, m, n] : [m, n];
  const out = newLike(ac, shape);
  gemm(a.backend, ac.buffer, bc.buffer, out.buffer, {
    batch,
    m,
    n,
    k,
    transA: false,
    transB: false,
    strideA: m * k,
    strideB: bc.ndim === 3 ? k * n : 0,
  });
  return record("matmul", out, [ac, bc]);
}

/**
 * x [..., in] times w [out, in] transposed (+ bias [out]) -> [..., out], the HF nn.Linear.
 * Mixed precision: with a bf16 weight, an f32 x is cast to bf16 and the GEMM accumulates in fp32
 * into an f32 output (torch autocast's bf16 linear, without its final rounding to bf16); a bf16 x
 * gives an f32 output too.
 */
export function linear(x: Tensor, w: Tensor, bias?: Tensor | null): Tensor {
  // x may come already cast (the model casts an activation once for several GEMMs).
  const mixed = w.dtype === "bf16" && (x.dtype === "f32" || x.dtype === "bf16");
  if (mixed) x = cast(x, "bf16");
  checkFloat("linear", x, w);
  const xc = c(x);
  const wc = c(w);
  invariant(wc.ndim === 2, () => `linear: weight must be 2-D, got ${shapeStr(w)}`);
  const [nOut, nIn] = wc.shape as [number, number];
  invariant(xc.shape[xc.ndim - 1] === nIn, () => `linear: input ${shapeStr(x)} does not end in ${nIn} (weight ${shapeStr(w)})`);
  const rows = xc.size / nIn;
  const outShape = [...xc.shape.slice(0, -1), nOut];
  const out = mixed ? Tensor.empty(outShape, { backend: x.backend, dtype: "f32" }) : newLike(xc, outShape);
  gemm(x.backend, xc.buffer, wc.buffer, out.buffer, {
    batch: 1,
    m: rows,
    n: nOut,
    k: nIn,
    transA: false,
    transB: true,
    strideA: 0,
    strideB: 0,
  });
  const y = record("linear", out, [xc, wc]);
  return bias ? add(y, bias) : y;
}

// ---------------------------------------------------------------- nn

/**
 * table [V, C] gathered at ids (i32) -> [...ids.shape, C]. A bf16 table gathers into f32 (the
 * mixed-precision forward keeps its residual stream in f32); its gradient is then f32 too.
 */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  checkFloat("embedding", table);
  invariant(ids.dtype === "i32", () => `embedding: ids must be i32, got ${ids.dtype}`);
  invariant(table.ndim === 2, () => `embedding: table must be 2-D, got ${shapeStr(table)}`);
  const tc = c(table);
  const ic = c(ids);
  const dim = tc.shape[1]!;
  const outShape = [...ic.shape, dim];
  const out = table.dtype === "bf16" ? Tensor.empty(outShape, { backend: table.backend, dtype: "f32" }) : newLike(tc, outShape);
  table.backend.embedding(tc.buffer, ic.buffer, out.buffer, { n: ic.size, dim });
  return record("embedding", out, [tc, ic]);
}

/** RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w. */
export function rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
  checkFloat("rmsnorm", x, w);
  const xc = c(x);
  const wc = c(w);
  const dim = xc.shape[xc.ndim - 1]!;
  invariant(wc.size === dim, () => `rmsnorm: weight ${shapeStr(w)} for last axis ${dim}`);
  const rows = xc.size / dim;
  const out = newLike(xc);
  const rstd = newLike(xc, [rows]);
  x.backend.rmsnorm(xc.buffer, wc.buffer, out.buffer, rstd.buffer, { rows, dim, eps });
  return record("rmsnorm", out, [xc, wc], { rstd, eps });
}

/** Rotate-half rotary embedding of x [T, H, D] at positions [T] (i32). */
export function rope(x: Tensor, positions: Tensor, theta: number): Tensor {
  checkFloat("rope", x);
  invariant(x.ndim === 3, () => `rope: x must be [T, H, D], got ${shapeStr(x)}`);
  invariant(positions.dtype === "i32" && positions.size === x.shape[0], () => `rope: positions must be i32 [${x.shape[0]}]`);
  const [T, H, D] = x.shape as [number, number, number];
  invariant(D % 2 === 0, () => `rope: head dimension ${D} is odd`);
  const xc = c(x);
  const pc = c(positions);
  const out = newLike(xc);
  x.backend.rope(xc.buffer, pc.buffer, out.buffer, { tokens: T, heads: H, dim: D, theta, inverse: false });
  return record("rope", out, [xc, pc], { theta });
}

/** Segment buffers of a layout, uploaded once per (layout, backend). */
const segmentCache = new WeakMap<Layout, Map<Backend, AttentionSegments>>();

export function layoutSegments(layout: Layout, backend: Backend): AttentionSegments {
  let perBackend = segmentCache.get(layout);
  if (!perBackend) segmentCache.set(layout, (perBackend = new Map()));
  let seg = perBackend.get(backend);
  if (!seg) {
    const upload = (a: Int32Array): DeviceBuffer => {
      const buf = backend.alloc("i32", Math.max(1, a.length));
      if (a.length > 0) backend.write(buf, a);
      return buf;
    };
    seg = { offsets: upload(layout.segOffsets), starts: upload(layout.segStarts), ends: upload(layout.segEnds) };
    perBackend.set(backend, seg);
  }
  return seg;
}

/**
 * Attention of q [T, H, D] over k, v [S, Hkv, D] (only the first layout.numKeys rows are read),
 * each query seeing the key segments its layout gives. Returns [T, H, D]. `bf16Inner` lets the
 * backend round the inner products to bf16 (tensor cores), as bf16-compute models accept.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, layout: Layout, scale?: number, opts: { bf16Inner?: boolean } = {}): Tensor {
  checkFloat("attention", q, k, v);
  invariant(q.ndim === 3 && k.ndim === 3 && v.ndim === 3, "attention: q, k, v must be 3-D");
  const [T, H, D] = q.shape as [number, number, number];
  const [S, Hkv, Dk] = k.shape as [number, number, number];
  invariant(
    Dk === D && v.shape[1] === Hkv && v.shape[2] === D && v.shape[0] === S,
    () => `attention: q ${shapeStr(q)}, k ${shapeStr(k)}, v ${shapeStr(v)} do not fit`,
  );
  invariant(H % Hkv === 0, () => `attention: ${H} query heads not a multiple of ${Hkv} kv heads`);
  invariant(layout.numTokens === T, () => `attention: layout has ${layout.numTokens} tokens, q has ${T}`);
  invariant(layout.numKeys <= S, () => `attention: layout sees ${layout.numKeys} keys, k has ${S}`);
  const qc = c(q);
  const kc = c(k);
  const vc = c(v);
  const seg = layoutSegments(layout, q.backend);
  const params = {
    tokens: T,
    keys: layout.numKeys,
    heads: H,
    kvHeads: Hkv,
    headDim: D,
    scale: scale ?? 1 / Math.sqrt(D),
    ...(opts.bf16Inner ? { bf16Inner: true } : {}),
  };
  const out = newLike(qc);
  const lse = newLike(qc, [T, H]);
  q.backend.attention(qc.buffer, kc.buffer, vc.buffer, seg, out.buffer, lse.buffer, params);
  return record("attention", out, [qc, kc, vc], { seg, params, lse });
}

function rowsOf(x: Tensor): { rows: number; cols: number } {
  const cols = x.shape[x.ndim - 1]!;
  return { rows: x.size / cols, cols };
}

/** Softmax over the last axis. */
export function softmax(x: Tensor): Tensor {
  checkFloat("softmax", x);
  const xc = c(x);
  const out = newLike(xc);
  x.backend.softmax(xc.buffer, out.buffer, rowsOf(xc));
  return record("softmax", out, [xc]);
}

/** Log-softmax over the last axis. */
export function logSoftmax(x: Tensor): Tensor {
  checkFloat("logSoftmax", x);
  const xc = c(x);
  const out = newLike(xc);
  x.backend.logSoftmax(xc.buffer, out.buffer, rowsOf(xc));
  return record("logSoftmax", out, [xc]);
}

/** log p(targets[i] | logits[i]) for logits [N, V], targets i32 [N] -> [N]; 0 where ignored. */
export function logprobs(logits: Tensor, targets: Tensor, ignoreIndex = -100): Tensor {
  checkFloat("logprobs", logits);
  invariant(logits.ndim === 2, () => `logprobs: logits must be [N, V], got ${shapeStr(logits)}`);
  invariant(
    targets.dtype === "i32" && targets.size === logits.shape[0],
    () => `logprobs: targets must be i32 [${logits.shape[0]}], got ${targets.dtype} ${shapeStr(targets)}`,
  );
  const lc = c(logits);
  const tc = c(targets);
  const [rows, cols] = lc.shape as [number, number];
  const out = newLike(lc, [rows]);
  const lse = newLike(lc, [rows]);
  const params = { rows, cols, ignoreIndex };
  logits.backend.logprobGather(lc.buffer, tc.buffer, out.buffer, lse.buffer, params);
  return record("logprobs", out, [lc, tc], { lse, params });
}

/** Mean negative log-likelihood over the targets that are not ignoreIndex (0 when all are). */
export function crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex = -100): Tensor {
  const lp = logprobs(logits, targets, ignoreIndex);
  const t = targets.toArray();
  let count = 0;
  for (let i = 0; i < t.length; i++) if (t[i] !== ignoreIndex) count++;
  return mulScalar(sum(lp), -1 / Math.max(1, count));
}
