/**
 * The memory, elementwise and reduce cases of the backend conformance suite (fill, copy, unary,
 * binary, where, scalar, SwiGLU, reduceSum), against the float64 references of
 * backend.reference.ts; backend.case.ts imports this file first and holds the rest. The clipping
 * ops the RL objectives need are here: min, max and the le mask as binary ops under every
 * broadcasting pattern, their tie / signed-zero / NaN rules pinned exactly, and select by mask
 * (where) with float and i32 masks, broadcasting over all three operands, and no leak of an
 * unselected inf or NaN. Knows only the Backend API.
 */
import assert from "node:assert/strict";
import type { BinaryOp, DeviceBuffer, ScalarOp } from "../../src/tensor/backend/types.ts";
import { BINARY_OPS, UNARY_OPS } from "../../src/tensor/backend/types.ts";
import { addCase, Harness, tol, TOL_POINTWISE, TOL_REDUCE } from "./backend.harness.ts";
import { BINARY_REF, extent, forEachIndex, stridedIndex, UNARY_REF, whereRef } from "./backend.reference.ts";

// ---------------------------------------------------------------- memory

addCase("fill", "float and i32 buffers", (h) => {
  const b = h.out(37);
  h.be.fill(b, -2.5);
  h.close("float", b, new Float64Array(37).fill(-2.5), TOL_POINTWISE);
  const ib = h.ibuf([1, 2, 3, 4, 5]);
  h.be.fill(ib, 7);
  assert.deepEqual(Array.from(h.be.read(ib)), [7, 7, 7, 7, 7]);
});

/** Runs one copy and checks the region written and that nothing around it changed. */
function checkCopy(
  h: Harness,
  label: string,
  srcLen: number,
  shape: number[],
  strides: number[],
  srcOffset: number,
  dstOffset: number,
): void {
  const src = h.randn(srcLen);
  const n = shape.reduce((a, b) => a * b, 1);
  const outLen = dstOffset + n + 3;
  const before = h.randn(outLen, 100);
  const out = h.buf(before);
  h.be.copy(h.buf(src), out, { shape, srcStrides: strides, srcOffset, dstOffset });
  const expected = before.slice();
  forEachIndex(shape, (flat, idx) => {
    expected[dstOffset + flat] = src[stridedIndex(idx, strides, srcOffset)];
  });
  h.close(label, out, expected, tol(0, 0, 0, 0));
}

addCase("copy", "contiguous runs with offsets", (h) => {
  checkCopy(h, "short run", 20, [10], [1], 3, 2);
  checkCopy(h, "long run", 300, [250], [1], 17, 5);
  checkCopy(h, "rows of a matrix [3, 40] of [5, 50]", 250, [3, 40], [50, 1], 55, 0);
});

addCase("copy", "permuted strides (transpose, 3-D permutation)", (h) => {
  checkCopy(h, "transpose [6, 9] -> [9, 6]", 54, [9, 6], [1, 9], 0, 0);
  // src [2, 3, 4] contiguous, viewed as permute(2, 0, 1): shape [4, 2, 3], strides [1, 12, 4].
  checkCopy(h, "permute(2,0,1) of [2,3,4]", 24, [4, 2, 3], [1, 12, 4], 0, 1);
  checkCopy(h, "rank-4 permutation", 120, [5, 2, 3, 4], [1, 60, 20, 5], 0, 0);
});

addCase("copy", "broadcast (stride 0), size-1 dims, rank 0, i32", (h) => {
  checkCopy(h, "repeat a row [4, 7] from [7]", 7, [4, 7], [0, 1], 0, 0);
  checkCopy(h, "repeat a column [5, 3] from [5]", 5, [5, 3], [1, 0], 0, 0);
  checkCopy(h, "size-1 dims", 12, [1, 3, 1, 4], [99, 4, 99, 1], 0, 0);
  checkCopy(h, "rank 0", 5, [], [], 4, 2);
  const src = h.ibuf([1, 2, 3, 4, 5, 6]);
  const out = h.ibuf([0, 0, 0, 0, 0, 0, 0]);
  h.be.copy(src, out, { shape: [3, 2], srcStrides: [1, 3], srcOffset: 0, dstOffset: 1 });
  assert.deepEqual(Array.from(h.be.read(out)), [0, 1, 4, 2, 5, 3, 6]);
});

// ---------------------------------------------------------------- elementwise

for (const op of UNARY_OPS) {
  addCase("unary", op, (h) => {
    const ref = UNARY_REF[op];
    const x = ref.positive ? h.uniform(53, 0.1, 4) : h.randn(53, 2);
    const out = h.out(53);
    h.be.unary(op, h.buf(x), out);
    h.close(op, out, x.map(ref.f), TOL_POINTWISE);
  });
  addCase("unaryBackward", op, (h) => {
    const ref = UNARY_REF[op];
    const x = ref.positive ? h.uniform(53, 0.1, 4) : h.randn(53, 2);
    const y = x.map((v) => h.round(ref.f(v)));
    const dy = h.randn(53);
    const dx = h.out(53);
    h.be.unaryBackward(op, h.buf(x), h.buf(y), h.buf(dy), dx);
    h.close(
      `d${op}`,
      dx,
      x.map((v, i) => dy[i] * ref.df(v)),
      TOL_POINTWISE,
    );
  });
}

/** Broadcasting patterns: [label, shape, aStrides, bStrides]. */
const BROADCASTS: Array<[string, number[], number[], number[]]> = [
  ["same shape [5, 7]", [5, 7], [7, 1], [7, 1]],
  ["rows: [6, 9] op [9]", [6, 9], [9, 1], [0, 1]],
  ["columns: [6, 9] op [6, 1]", [6, 9], [9, 1], [1, 0]],
  ["scalar-like b", [4, 5], [5, 1], [0, 0]],
  ["broadcast a: [9] op [6, 9]", [6, 9], [0, 1], [9, 1]],
  ["3-D: [3, 1, 5] op [1, 4, 1]", [3, 4, 5], [5, 0, 1], [0, 1, 0]],
  ["transposed a", [4, 6], [1, 4], [6, 1]],
  ["long rows [3, 200] op [200]", [3, 200], [200, 1], [0, 1]],
  ["one element, rank 0", [], [], []],
];

for (const op of BINARY_OPS) {
  addCase("binary", `${op} (every broadcasting pattern)`, (h) => {
    for (const [label, shape, as, bs] of BROADCASTS) {
      const a = h.randn(extent(shape, as));
      // Divisors are kept away from zero so the comparison is well conditioned.
      const b = op === "div" ? h.uniform(extent(shape, bs), 0.5, 2).map((v, i) => (i % 2 ? -v : v)) : h.randn(extent(shape, bs));
      const n = shape.reduce((x, y) => x * y, 1);
      const out = h.out(n);
      h.be.binary(op, h.buf(a), h.buf(b), out, { shape, aStrides: as, bStrides: bs });
      const expected = new Float64Array(n);
      forEachIndex(shape, (flat, idx) => {
        expected[flat] = BINARY_REF[op](a[stridedIndex(idx, as)], b[stridedIndex(idx, bs)]);
      });
      h.close(label, out, expected, TOL_POINTWISE);
    }
  });
}

/** Exact comparison (Object.is: -0 differs from +0, NaN equals NaN) of a case's output with its reference. */
function sameBits(h: Harness, label: string, out: DeviceBuffer, expected: ArrayLike<number>): void {
  const got = h.get(out);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(
      Object.is(got[i], expected[i]),
      `${label} [${i}]: got ${Object.is(got[i], -0) ? "-0" : got[i]}, expected ${Object.is(expected[i], -0) ? "-0" : expected[i]}`,
    );
  }
}

addCase("binary", "min, max, le: ties return a (signed zeros), NaN propagates, infinities", (h) => {
  const a = [1, 2, NaN, 3, NaN, 0, -0, -Infinity, Infinity, 5, -7.25];
  const b = [1, NaN, 2, 3, NaN, -0, 0, 4, 4, -Infinity, -7.25];
  const n = a.length;
  const ops: BinaryOp[] = ["min", "max", "le"];
  for (const op of ops) {
    const out = h.out(n);
    h.be.binary(op, h.buf(a), h.buf(b), out, { shape: [n], aStrides: [1], bStrides: [1] });
    sameBits(
      h,
      op,
      out,
      a.map((v, i) => BINARY_REF[op](v, b[i])),
    );
  }
  // The reference's rule, spelled out: a tie returns a, NaN anywhere gives NaN, le of NaN is 0.
  assert.ok(Object.is(BINARY_REF.min(0, -0), 0) && Object.is(BINARY_REF.max(-0, 0), -0));
  assert.ok(Number.isNaN(BINARY_REF.min(2, NaN)) && Number.isNaN(BINARY_REF.max(NaN, 2)) && BINARY_REF.le(NaN, 1) === 0);
});

/** Broadcasting patterns of where: [label, shape, maskStrides, aStrides, bStrides]. */
const WHERE_BROADCASTS: Array<[string, number[], number[], number[], number[]]> = [
  ["same shape [5, 7]", [5, 7], [7, 1], [7, 1], [7, 1]],
  ["row mask [9], b scalar-like: [6, 9]", [6, 9], [0, 1], [9, 1], [0, 0]],
  ["column mask [6, 1], a row [9]", [6, 9], [1, 0], [0, 1], [9, 1]],
  ["3-D: mask [3, 1, 5], a [1, 4, 1], b [3, 4, 5]", [3, 4, 5], [5, 0, 1], [0, 1, 0], [20, 5, 1]],
  ["transposed a, column b", [4, 6], [6, 1], [1, 4], [1, 0]],
  ["long rows [3, 200]: a [200], b [3, 1]", [3, 200], [200, 1], [0, 1], [1, 0]],
  ["one element, rank 0", [], [], [], []],
];

/** Mask values: zeros and several kinds of nonzero (negative, fractional, NaN in a float mask). */
function maskValues(h: Harness, n: number, float: boolean): number[] {
  const kinds = float ? [0, 1, 0, -2.5, 0.25, NaN] : [0, 1, 0, -3, 7];
  return Array.from({ length: n }, () => kinds[h.rng.int(kinds.length)]);
}

for (const maskKind of ["float", "i32"] as const) {
  addCase("where", `${maskKind} mask (every broadcasting pattern)`, (h) => {
    for (const [label, shape, ms, as, bs] of WHERE_BROADCASTS) {
      const mask = maskValues(h, extent(shape, ms), maskKind === "float");
      const a = h.randn(extent(shape, as));
      const b = h.randn(extent(shape, bs));
      const n = shape.reduce((x, y) => x * y, 1);
      const out = h.out(n);
      const m = maskKind === "float" ? h.buf(mask) : h.ibuf(mask);
      h.be.where(m, h.buf(a), h.buf(b), out, { shape, maskStrides: ms, aStrides: as, bStrides: bs });
      const expected = new Float64Array(n);
      forEachIndex(shape, (flat, idx) => {
        expected[flat] = whereRef(mask[stridedIndex(idx, ms)], a[stridedIndex(idx, as)], b[stridedIndex(idx, bs)]);
      });
      h.close(label, out, expected, tol(0, 0, 0, 0)); // a select moves values: exact
    }
  });
}

addCase("where", "an unselected inf or NaN does not leak; out may alias a; a mask of another float dtype is refused", (h) => {
  const n = 40;
  const mask = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 0 : 1));
  const a = Array.from(h.randn(n), (v, i) => (mask[i] === 0 ? (i % 2 ? Infinity : NaN) : v));
  const b = Array.from(h.randn(n), (v, i) => (mask[i] !== 0 ? (i % 2 ? -Infinity : NaN) : v));
  const p = { shape: [n], maskStrides: [1], aStrides: [1], bStrides: [1] };
  const aBuf = h.buf(a);
  h.be.where(h.buf(mask), aBuf, h.buf(b), aBuf, p); // in place over a
  h.close(
    "in place over a",
    aBuf,
    mask.map((m, i) => (m !== 0 ? a[i] : b[i])),
    tol(0, 0, 0, 0),
  );
  const other = h.dtype === "f64" ? "f32" : "f64";
  assert.throws(() => h.be.where(h.bufAs(other, mask), h.buf(a), h.buf(b), h.out(n), p), /mask is|beside bf16/);
});

const SCALARS: Array<[ScalarOp, number]> = [
  ["add", 0.75],
  ["mul", -1.5],
  ["pow", 2],
  ["pow", 3],
  ["pow", 0.5],
  ["pow", -1],
  ["pow", 1.7],
];

addCase("scalar", "add, mul, pow (integer, fractional and negative exponents)", (h) => {
  for (const [op, value] of SCALARS) {
    const x = op === "pow" ? h.uniform(41, 0.2, 3) : h.randn(41);
    const out = h.out(41);
    h.be.scalar(op, h.buf(x), value, out);
    const f = op === "add" ? (v: number) => v + value : op === "mul" ? (v: number) => v * value : (v: number) => v ** value;
    h.close(`${op} ${value}`, out, x.map(f), TOL_POINTWISE);
  }
});

addCase("swiglu", "silu(gate) * up", (h) => {
  const gate = h.randn(77, 2);
  const up = h.randn(77);
  const out = h.out(77);
  h.be.swiglu(h.buf(gate), h.buf(up), out);
  h.close(
    "out",
    out,
    gate.map((g, i) => UNARY_REF.silu.f(g) * up[i]),
    TOL_POINTWISE,
  );
});

addCase("swigluBackward", "dGate and dUp", (h) => {
  const gate = h.randn(77, 2);
  const up = h.randn(77);
  const dy = h.randn(77);
  const dGate = h.out(77);
  const dUp = h.out(77);
  h.be.swigluBackward(h.buf(gate), h.buf(up), h.buf(dy), dGate, dUp);
  h.close(
    "dGate",
    dGate,
    gate.map((g, i) => dy[i] * up[i] * UNARY_REF.silu.df(g)),
    TOL_POINTWISE,
  );
  h.close(
    "dUp",
    dUp,
    gate.map((g, i) => dy[i] * UNARY_REF.silu.f(g)),
    TOL_POINTWISE,
  );
});

// ---------------------------------------------------------------- reduce

addCase("reduceSum", "[outer, reduce, inner] shapes, including reduce 0", (h) => {
  const shapes: Array<[number, number, number]> = [
    [1, 50, 1],
    [4, 7, 1],
    [3, 5, 6],
    [1, 1, 8],
    [2, 33, 17],
    [2, 0, 3],
  ];
  for (const [outer, reduce, inner] of shapes) {
    const x = h.randn(outer * reduce * inner);
    const out = h.out(outer * inner);
    h.be.reduceSum(h.buf(x.length ? x : [0]), out, { outer, reduce, inner });
    const expected = new Float64Array(outer * inner);
    for (let o = 0; o < outer; o++) {
      for (let r = 0; r < reduce; r++) {
        for (let i = 0; i < inner; i++) expected[o * inner + i] += x[(o * reduce + r) * inner + i];
      }
    }
    h.close(`[${outer}, ${reduce}, ${inner}]`, out, expected, TOL_REDUCE);
  }
});
