/**
 * The CUDA backend's memory and elementwise primitives: fill (memsets, or a kernel for f64), copy
 * (one device copy when contiguous, the strided gather kernel otherwise), cast between f32, f64
 * and bf16 (convert.cu), unary / binary / scalar ops and their backwards, select by mask (where),
 * SwiGLU and reduceSum (elementwise.cu), and the fused AdamW update, with the CPU backend's
 * argument checks. CudaBackend's methods delegate here.
 * Knows the Backend contract and the kernels' launch shapes; nothing of models.
 */
import { invariant } from "../../../util/index.ts";
import { f32ToBf16Bits } from "../../dtype.ts";
import { runViaF32 } from "../bf16.ts";
import { collapseDims, numel, stridedExtent } from "../extents.ts";
import type {
  AdamWParams,
  BinaryOp,
  BinaryParams,
  CopyParams,
  DeviceBuffer,
  ReduceParams,
  ScalarOp,
  UnaryOp,
  WhereParams,
} from "../types.ts";
import { BINARY_OPS, SCALAR_OPS, UNARY_OPS } from "../types.ts";
import { ELEM_BYTES } from "./buffers.ts";
import type { KernelDType } from "./compile.ts";
import type { KernelArg } from "./ffi/driver.ts";
import type { CudaBackend } from "./index.ts";

/** Threads per block of the 1-D kernels (elementwise.cu, convert.cu). */
const BLOCK = 256;
/** Grid-stride kernels cap their grid here; more blocks would only loop less. */
const MAX_BLOCKS = 65535 * 4;

/** Blocks for a grid-stride kernel over n elements. */
export function grid1d(n: number): number {
  return Math.min(Math.ceil(n / BLOCK), MAX_BLOCKS);
}

// ---------------------------------------------------------------- memory

export function fill(be: CudaBackend, out: DeviceBuffer, value: number): void {
  const o = be.checks.live("fill", "out", out);
  if (o.dtype === "f64") {
    be.launchKernel("elementwise.cu", "fill", "f64", grid1d(o.length), BLOCK, [{ ptr: o.ptr }, { i64: o.length }, { f64: value }]);
  } else if (o.dtype === "bf16") {
    if (o.length > 0) be.driver.memsetD16Async(o.ptr, f32ToBf16Bits(value), o.length, be.streamHandle);
    be.countCall("cuda.memset");
  } else if (o.length > 0) {
    // f32 and i32 fills are a 32-bit pattern: no kernel needed.
    const bits = new DataView(new ArrayBuffer(4));
    if (o.dtype === "f32") bits.setFloat32(0, value, true);
    else bits.setInt32(0, value, true);
    be.driver.memsetD32Async(o.ptr, bits.getUint32(0, true), o.length, be.streamHandle);
    be.countCall("cuda.memset");
  }
  be.countCall("fill");
}

export function copy(be: CudaBackend, src: DeviceBuffer, out: DeviceBuffer, p: CopyParams): void {
  const op = "copy";
  invariant(
    p.srcStrides.length === p.shape.length,
    () => `copy: srcStrides has ${p.srcStrides.length} entries for a rank-${p.shape.length} shape`,
  );
  be.checks.dims(op, { srcOffset: p.srcOffset, dstOffset: p.dstOffset });
  p.shape.forEach((d, i) => be.checks.dims(op, { [`shape[${i}]`]: d, [`srcStrides[${i}]`]: p.srcStrides[i] }));
  const n = numel(p.shape);
  const s = be.checks.sized(op, "src", src, stridedExtent(p.shape, p.srcStrides, p.srcOffset));
  const o = be.checks.sized(op, "out", out, p.dstOffset + n);
  invariant(s.dtype === o.dtype, () => `copy: src is ${s.dtype} but out is ${o.dtype}`);
  // A contiguous region is one device-to-device copy; anything else the gather kernel. The f32
  // kernel moves i32 elements too (same width, bits kept).
  const c = collapseDims(p.shape, [p.srcStrides]);
  const bytes = ELEM_BYTES[s.dtype];
  if (n > 0 && c.shape.length === 1 && c.strides[0][0] === 1) {
    be.driver.dtodAsync(o.ptr + p.dstOffset * bytes, s.ptr + p.srcOffset * bytes, n * bytes, be.streamHandle);
    be.countCall("cuda.memcpy");
  } else if (n > 0 && s.dtype === "bf16") {
    // No 16-bit gather kernel: a strided bf16 copy (rare: weights and activations are
    // contiguous) runs through f32 temporaries; this call is then counted by the inner copy.
    runViaF32(be, "copy", [src, out, p], (...a) => be.copy(...(a as [DeviceBuffer, DeviceBuffer, CopyParams])));
    return;
  } else if (n > 0) {
    const dt: KernelDType = s.dtype === "f64" ? "f64" : "f32";
    const desc = be.checks.strided(op, p.shape, p.srcStrides, p.srcStrides);
    be.launchKernel("elementwise.cu", "copy", dt, grid1d(n), BLOCK, [
      { ptr: s.ptr },
      { ptr: o.ptr },
      desc,
      { i64: n },
      { i64: p.srcOffset },
      { i64: p.dstOffset },
    ]);
  }
  be.countCall(op);
}

/** Float conversion (types.ts); kernels in convert.cu, a plain device copy for the same dtype. */
export function cast(be: CudaBackend, x: DeviceBuffer, out: DeviceBuffer): void {
  const n = out.length;
  const o = be.checks.live("cast", "out", out);
  const s = be.checks.sized("cast", "x", x, n);
  for (const [arg, b] of [
    ["x", s],
    ["out", o],
  ] as const) {
    invariant(b.dtype !== "i32", () => `cast: ${arg} is i32, expected f32, f64 or bf16`);
  }
  const args = [{ ptr: s.ptr }, { ptr: o.ptr }, { i64: n }];
  const grid = grid1d(n);
  if (n === 0) {
    // nothing to convert
  } else if (s.dtype === o.dtype) {
    be.driver.dtodAsync(o.ptr, s.ptr, n * ELEM_BYTES[s.dtype], be.streamHandle);
    be.countCall("cuda.memcpy");
  } else if (o.dtype === "bf16") {
    be.launchKernel("convert.cu", "cast_to_bf16", s.dtype as KernelDType, grid, BLOCK, args);
  } else if (s.dtype === "bf16") {
    be.launchKernel("convert.cu", "cast_from_bf16", o.dtype as KernelDType, grid, BLOCK, args);
  } else if (s.dtype === "f32") {
    be.launchKernel("convert.cu", "cast_from_f32", "f64", grid, BLOCK, args); // f32 -> f64
  } else {
    be.launchKernel("convert.cu", "cast_to_f32", "f64", grid, BLOCK, args); // f64 -> f32
  }
  be.countCall("cast");
}

// ---------------------------------------------------------------- elementwise

export function unary(be: CudaBackend, op: UnaryOp, x: DeviceBuffer, out: DeviceBuffer): void {
  invariant(UNARY_OPS.includes(op), () => `unary: unknown op ${op}`);
  const n = out.length;
  const [[O, X], dt] = be.checks.floats(`unary(${op})`, [
    ["out", out, n],
    ["x", x, n],
  ]);
  be.launchKernel("elementwise.cu", "unary", dt, grid1d(n), BLOCK, [
    { ptr: X.ptr },
    { ptr: O.ptr },
    { i64: n },
    { i32: UNARY_OPS.indexOf(op) },
  ]);
  be.countCall("unary");
}

export function unaryBackward(be: CudaBackend, op: UnaryOp, x: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer): void {
  invariant(UNARY_OPS.includes(op), () => `unaryBackward: unknown op ${op}`);
  const n = dx.length;
  const usesY = op === "exp" || op === "sqrt" || op === "rsqrt" || op === "sigmoid";
  // Only the operand the derivative reads is checked and passed (as both x and y).
  const [[DX, DY, IN], dt] = be.checks.floats(`unaryBackward(${op})`, [["dx", dx, n], ["dy", dy, n], usesY ? ["y", y, n] : ["x", x, n]]);
  be.launchKernel("elementwise.cu", "unary_backward", dt, grid1d(n), BLOCK, [
    { ptr: IN.ptr },
    { ptr: IN.ptr },
    { ptr: DY.ptr },
    { ptr: DX.ptr },
    { i64: n },
    { i32: UNARY_OPS.indexOf(op) },
  ]);
  be.countCall("unaryBackward");
}

export function binary(be: CudaBackend, op: BinaryOp, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: BinaryParams): void {
  const name = `binary(${op})`;
  invariant(BINARY_OPS.includes(op), () => `binary: unknown op ${op}`);
  const rank = p.shape.length;
  invariant(
    p.aStrides.length === rank && p.bStrides.length === rank,
    () => `${name}: aStrides/bStrides have ${p.aStrides.length}/${p.bStrides.length} entries for rank ${rank}`,
  );
  p.shape.forEach((d, i) =>
    be.checks.dims(name, { [`shape[${i}]`]: d, [`aStrides[${i}]`]: p.aStrides[i], [`bStrides[${i}]`]: p.bStrides[i] }),
  );
  const n = numel(p.shape);
  const [[A, B, O], dt] = be.checks.floats(name, [
    ["a", a, stridedExtent(p.shape, p.aStrides)],
    ["b", b, stridedExtent(p.shape, p.bStrides)],
    ["out", out, n],
  ]);
  if (n > 0) {
    be.launchKernel("elementwise.cu", "binary", dt, grid1d(n), BLOCK, [
      { ptr: A.ptr },
      { ptr: B.ptr },
      { ptr: O.ptr },
      be.checks.strided(name, p.shape, p.aStrides, p.bStrides),
      { i64: n },
      { i32: BINARY_OPS.indexOf(op) },
    ]);
  }
  be.countCall("binary");
}

/**
 * Select by mask (types.ts), one thread per output element over the three broadcast operands; the
 * mask is i32 (kernel `where_i32`) or the values' float dtype (`where`).
 */
export function where(be: CudaBackend, mask: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: WhereParams): void {
  const name = "where";
  const rank = p.shape.length;
  invariant(
    p.maskStrides.length === rank && p.aStrides.length === rank && p.bStrides.length === rank,
    () =>
      `${name}: maskStrides/aStrides/bStrides have ${p.maskStrides.length}/${p.aStrides.length}/${p.bStrides.length} entries for rank ${rank}`,
  );
  p.shape.forEach((d, i) =>
    be.checks.dims(name, {
      [`shape[${i}]`]: d,
      [`maskStrides[${i}]`]: p.maskStrides[i],
      [`aStrides[${i}]`]: p.aStrides[i],
      [`bStrides[${i}]`]: p.bStrides[i],
    }),
  );
  const n = numel(p.shape);
  const [[A, B, O], dt] = be.checks.floats(name, [
    ["a", a, stridedExtent(p.shape, p.aStrides)],
    ["b", b, stridedExtent(p.shape, p.bStrides)],
    ["out", out, n],
  ]);
  const m = be.checks.sized(name, "mask", mask, stridedExtent(p.shape, p.maskStrides));
  invariant(
    m.dtype === "i32" || m.dtype === dt,
    () => `${name}: mask is ${m.dtype} but a is ${dt} (a mask is i32 or the values' float dtype)`,
  );
  if (n > 0) {
    be.launchKernel("elementwise.cu", m.dtype === "i32" ? "where_i32" : "where", dt, grid1d(n), BLOCK, [
      { ptr: m.ptr },
      { ptr: A.ptr },
      { ptr: B.ptr },
      { ptr: O.ptr },
      be.checks.strided(name, p.shape, p.maskStrides, p.aStrides, p.bStrides),
      { i64: n },
    ]);
  }
  be.countCall(name);
}

export function scalar(be: CudaBackend, op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void {
  invariant(SCALAR_OPS.includes(op), () => `scalar: unknown op ${op}`);
  const n = out.length;
  const [[O, X], dt] = be.checks.floats(`scalar(${op})`, [
    ["out", out, n],
    ["x", x, n],
  ]);
  be.launchKernel("elementwise.cu", "scalar", dt, grid1d(n), BLOCK, [
    { ptr: X.ptr },
    { ptr: O.ptr },
    { i64: n },
    { i32: SCALAR_OPS.indexOf(op) },
    dt === "f32" ? { f32: value } : { f64: value },
  ]);
  be.countCall("scalar");
}

export function swiglu(be: CudaBackend, gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void {
  const n = out.length;
  const [[O, G, U], dt] = be.checks.floats("swiglu", [
    ["out", out, n],
    ["gate", gate, n],
    ["up", up, n],
  ]);
  be.launchKernel("elementwise.cu", "swiglu", dt, grid1d(n), BLOCK, [{ ptr: G.ptr }, { ptr: U.ptr }, { ptr: O.ptr }, { i64: n }]);
  be.countCall("swiglu");
}

export function swigluBackward(
  be: CudaBackend,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  dy: DeviceBuffer,
  dGate: DeviceBuffer,
  dUp: DeviceBuffer,
): void {
  const n = dGate.length;
  const [[DG, DU, G, U, DY], dt] = be.checks.floats("swigluBackward", [
    ["dGate", dGate, n],
    ["dUp", dUp, n],
    ["gate", gate, n],
    ["up", up, n],
    ["dy", dy, n],
  ]);
  be.launchKernel("elementwise.cu", "swiglu_backward", dt, grid1d(n), BLOCK, [
    { ptr: G.ptr },
    { ptr: U.ptr },
    { ptr: DY.ptr },
    { ptr: DG.ptr },
    { ptr: DU.ptr },
    { i64: n },
  ]);
  be.countCall("swigluBackward");
}

// ---------------------------------------------------------------- reduce

export function reduceSum(be: CudaBackend, x: DeviceBuffer, out: DeviceBuffer, p: ReduceParams): void {
  be.checks.dims("reduceSum", { outer: p.outer, reduce: p.reduce, inner: p.inner });
  const [[X, O], dt] = be.checks.floats("reduceSum", [
    ["x", x, p.outer * p.reduce * p.inner],
    ["out", out, p.outer * p.inner],
  ]);
  if (p.inner === 1 && p.reduce >= 1024) {
    // Long rows: a block per row keeps the GPU busy where one thread per output would not.
    be.launchKernel("elementwise.cu", "reduce_sum_rows", dt, p.outer, BLOCK, [{ ptr: X.ptr }, { ptr: O.ptr }, { i64: p.reduce }]);
  } else {
    be.launchKernel("elementwise.cu", "reduce_sum", dt, grid1d(p.outer * p.inner), BLOCK, [
      { ptr: X.ptr },
      { ptr: O.ptr },
      { i64: p.outer },
      { i64: p.reduce },
      { i64: p.inner },
    ]);
  }
  be.countCall("reduceSum");
}

// ---------------------------------------------------------------- optim

export function adamw(be: CudaBackend, param: DeviceBuffer, grad: DeviceBuffer, m: DeviceBuffer, v: DeviceBuffer, p: AdamWParams): void {
  be.checks.dims("adamw", { n: p.n });
  invariant(Number.isInteger(p.step) && p.step >= 1, () => `adamw: step ${p.step} must be a 1-based integer`);
  const [[P, G, M, V], dt] = be.checks.floats("adamw", [
    ["param", param, p.n],
    ["grad", grad, p.n],
    ["m", m, p.n],
    ["v", v, p.n],
  ]);
  // Hyper-parameters go in the buffers' dtype; the bias corrections 1 - beta^step are made in
  // double on the host once per call rather than per element.
  const s = (x: number): KernelArg => (dt === "f32" ? { f32: x } : { f64: x });
  be.launchKernel("elementwise.cu", "adamw", dt, grid1d(p.n), BLOCK, [
    { ptr: P.ptr },
    { ptr: G.ptr },
    { ptr: M.ptr },
    { ptr: V.ptr },
    { i64: p.n },
    s(p.lr),
    s(p.beta1),
    s(p.beta2),
    s(p.eps),
    s(p.weightDecay),
    s(1 - Math.pow(p.beta1, p.step)),
    s(1 - Math.pow(p.beta2, p.step)),
  ]);
  be.countCall("adamw");
}
