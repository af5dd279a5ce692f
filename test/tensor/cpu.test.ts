/**
 * The CPU backend: the conformance suite (backend.case.ts) with the pure-TypeScript GEMM and
 * with OpenBLAS (skipped, with the reason, when the library does not load), in f32 and f64; then
 * what only the CPU backend promises: use-after-free and dtype mismatches are InvariantErrors
 * naming the op and argument, ids and targets are range-checked, read returns a copy, and the
 * GEMM path counters say which path ran. Attention's two paths (GEMM tiles and row-wise) are
 * each forced on layouts large enough to span several tiles and checked against the reference.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import type { DeviceBuffer } from "../../src/tensor/backend/types.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { causalLayout, packedCausalLayout, segmentLayout, type Layout } from "../../src/util/layout.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats } from "../util/check-close.ts";
import { runBackendSuite } from "./backend.case.ts";
import { attentionRef, denseMask, randomLayout } from "./backend.reference.ts";

runBackendSuite("cpu, TypeScript GEMM", () => new CpuBackend({ useBlas: false }));

const blas = new CpuBackend({ useBlas: true });
if (blas.gemmPath === "openblas") {
  runBackendSuite("cpu, OpenBLAS GEMM", () => blas);
} else {
  test("cpu, OpenBLAS GEMM", { skip: `OpenBLAS did not load: ${blas.whyNoBlas}` }, () => {});
}

/** Asserts fn throws an InvariantError whose message matches every pattern. */
function throwsInvariant(fn: () => void, ...patterns: RegExp[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvariantError, `expected an InvariantError, got ${String(err)}`);
    for (const p of patterns) assert.match(err.message, p);
    return true;
  });
}

describe("cpu backend specifics", () => {
  const be = new CpuBackend({ useBlas: false });
  const f32 = (values: number[]): DeviceBuffer => {
    const b = be.alloc("f32", values.length);
    be.write(b, Float32Array.from(values));
    return b;
  };
  const i32 = (values: number[]): DeviceBuffer => {
    const b = be.alloc("i32", values.length);
    be.write(b, Int32Array.from(values));
    return b;
  };

  test("the TypeScript GEMM path is chosen and counted when BLAS is off", () => {
    assert.equal(be.gemmPath, "typescript");
    assert.ok(be.whyNoBlas, "whyNoBlas should say why OpenBLAS is not used");
    const before = be.counters()["gemm.typescript"] ?? 0;
    const c = be.alloc("f32", 4);
    be.matmul(f32([1, 2, 3, 4]), f32([5, 6, 7, 8]), c, {
      batch: 1,
      m: 2,
      n: 2,
      k: 2,
      transA: false,
      transB: false,
      strideA: 0,
      strideB: 0,
      strideC: 0,
    });
    assert.deepEqual(Array.from(be.read(c)), [19, 22, 43, 50]);
    assert.equal(be.counters()["gemm.typescript"], before + 1);
    assert.equal(be.counters()["gemm.openblas"], undefined);
  });

  test("the OpenBLAS path is counted when it loads", (t) => {
    if (blas.gemmPath !== "openblas") return t.skip(`OpenBLAS did not load: ${blas.whyNoBlas}`);
    const before = blas.counters()["gemm.openblas"] ?? 0;
    const a = blas.alloc("f64", 4);
    blas.write(a, Float64Array.from([1, 2, 3, 4]));
    const c = blas.alloc("f64", 4);
    blas.matmul(a, a, c, { batch: 1, m: 2, n: 2, k: 2, transA: false, transB: false, strideA: 0, strideB: 0, strideC: 0 });
    assert.deepEqual(Array.from(blas.read(c)), [7, 10, 15, 22]);
    assert.equal(blas.counters()["gemm.openblas"], before + 1);
  });

  test("alloc zero-fills; read returns a copy", () => {
    const b = be.alloc("f64", 5);
    assert.deepEqual(Array.from(be.read(b)), [0, 0, 0, 0, 0]);
    const host = be.read(b);
    host[0] = 42;
    assert.equal(be.read(b)[0], 0);
    be.write(b, Float64Array.from([1, 2]), 3);
    assert.deepEqual(Array.from(be.read(b, 2, 3)), [0, 1, 2]);
  });

  test("use after free and double free are InvariantErrors", () => {
    const x = f32([1, 2, 3]);
    const out = be.alloc("f32", 3);
    be.free(x);
    throwsInvariant(() => be.read(x), /read/, /used after free/);
    throwsInvariant(() => be.write(x, Float32Array.from([1])), /write/, /used after free/);
    throwsInvariant(() => be.unary("exp", x, out), /unary\(exp\)/, /x was used after free/);
    throwsInvariant(() => be.free(x), /free/, /used after free/);
  });

  test("dtype mismatches name the op and the argument", () => {
    const a = f32([1, 2, 3]);
    const b = be.alloc("f64", 3);
    const out = be.alloc("f32", 3);
    const ids = i32([1, 2, 3]);
    const shape = { shape: [3], aStrides: [1], bStrides: [1] };
    throwsInvariant(() => be.binary("add", a, b, out, shape), /binary\(add\)/, /b is f64 but a is f32/);
    throwsInvariant(() => be.unary("neg", ids, be.alloc("i32", 3)), /unary\(neg\)/, /out is i32, expected f32 or f64/);
    throwsInvariant(() => be.unary("neg", ids, out), /unary\(neg\)/, /x is i32/);
    throwsInvariant(() => be.write(a, Float64Array.from([1])), /write/, /Float64Array.*f32/);
    throwsInvariant(() => be.copy(a, ids, { shape: [3], srcStrides: [1], srcOffset: 0, dstOffset: 0 }), /copy/, /f32.*i32/);
    throwsInvariant(
      () => be.embedding(f32([1, 2, 3, 4]), f32([0]), be.alloc("f32", 2), { n: 1, dim: 2 }),
      /embedding/,
      /ids is f32, expected i32/,
    );
  });

  test("too-small buffers and bad sizes name the argument", () => {
    const a = f32([1, 2, 3, 4, 5, 6]);
    const small = be.alloc("f32", 5);
    throwsInvariant(
      () => be.binary("mul", a, small, be.alloc("f32", 6), { shape: [6], aStrides: [1], bStrides: [1] }),
      /binary\(mul\): b has 5 elements/,
    );
    throwsInvariant(
      () => be.matmul(a, a, small, { batch: 1, m: 2, n: 3, k: 3, transA: false, transB: false, strideA: 0, strideB: 0, strideC: 0 }),
      /matmul: b has 6 elements, the sizes given need at least 9/,
    );
    throwsInvariant(
      () =>
        be.matmul(a, f32(new Array(9).fill(1)), small, {
          batch: 1,
          m: 2,
          n: 3,
          k: 3,
          transA: false,
          transB: false,
          strideA: 0,
          strideB: 0,
          strideC: 0,
        }),
      /matmul: c has 5 elements/,
    );
    throwsInvariant(() => be.copy(a, small, { shape: [2, 3], srcStrides: [3, 1], srcOffset: 0, dstOffset: 0 }), /copy: out/);
    throwsInvariant(() => be.copy(a, small, { shape: [2], srcStrides: [-1], srcOffset: 3, dstOffset: 0 }), /srcStrides\[0\] = -1/);
    throwsInvariant(() => be.reduceSum(a, small, { outer: 2, reduce: 2, inner: 2 }), /reduceSum: x has 6 elements/);
    throwsInvariant(
      () => be.rope(a, i32([0]), be.alloc("f32", 6), { tokens: 1, heads: 2, dim: 3, theta: 1e4, inverse: false }),
      /rope: dim 3 is odd/,
    );
  });

  test("embedding ids outside [0, V) are errors, forward and backward", () => {
    const table = f32([0, 1, 2, 3, 4, 5]); // V = 3, dim = 2
    const out = be.alloc("f32", 4);
    throwsInvariant(() => be.embedding(table, i32([0, 3]), out, { n: 2, dim: 2 }), /embedding: ids\[1\] = 3/, /\[0, 3\)/);
    throwsInvariant(() => be.embedding(table, i32([-1, 0]), out, { n: 2, dim: 2 }), /ids\[0\] = -1/);
    throwsInvariant(() => be.embeddingBackward(out, i32([2, 7]), table, { n: 2, dim: 2 }), /embeddingBackward: ids\[1\] = 7/);
  });

  test("logprob targets and attention segments are range-checked", () => {
    const logits = f32([0, 1, 2, 3, 4, 5]); // 2 rows of 3
    const lp = be.alloc("f32", 2);
    const lse = be.alloc("f32", 2);
    const p = { rows: 2, cols: 3, ignoreIndex: -100 };
    throwsInvariant(() => be.logprobGather(logits, i32([1, 3]), lp, lse, p), /logprobGather: targets\[1\] = 3/);
    be.logprobGather(logits, i32([1, -100]), lp, lse, p); // the ignore index is fine
    assert.equal(be.read(lp)[1], 0);
    const q = f32(new Array(4).fill(0.5)); // T=2, H=1, D=2
    const seg = { offsets: i32([0, 1, 2]), starts: i32([0, 0]), ends: i32([1, 3]) };
    throwsInvariant(
      () =>
        be.attention(q, q, q, seg, be.alloc("f32", 4), be.alloc("f32", 2), {
          tokens: 2,
          keys: 2,
          heads: 1,
          kvHeads: 1,
          headDim: 2,
          scale: 1,
        }),
      /attention: segment 1 = \[0, 3\) is not inside \[0, 2\)/,
    );
    const unsorted = { offsets: i32([0, 1, 3]), starts: i32([0, 1, 0]), ends: i32([1, 2, 1]) };
    throwsInvariant(
      () =>
        be.attention(q, q, q, unsorted, be.alloc("f32", 4), be.alloc("f32", 2), {
          tokens: 2,
          keys: 2,
          heads: 1,
          kvHeads: 1,
          headDim: 2,
          scale: 1,
        }),
      /attention: token 1's segments 1 and 2 are not sorted and disjoint/,
    );
  });

  test("a buffer of another backend is rejected", () => {
    const fake = { dtype: "f32", length: 3 } as DeviceBuffer;
    throwsInvariant(() => be.read(fake), /read: buf is not a buffer of the cpu backend/);
  });

  test("attention of a token that sees no key gives 0 and lse -Infinity, not NaN", () => {
    const q = f32([1, 2, 3, 4]); // T=2, H=1, D=2
    const seg = { offsets: i32([0, 0, 1]), starts: i32([0]), ends: i32([2]) };
    const out = be.alloc("f32", 4);
    const lse = be.alloc("f32", 2);
    const p = { tokens: 2, keys: 2, heads: 1, kvHeads: 1, headDim: 2, scale: 1 };
    be.attention(q, q, q, seg, out, lse, p);
    assert.deepEqual(Array.from(be.read(out)).slice(0, 2), [0, 0]);
    assert.equal(be.read(lse)[0], -Infinity);
    const dq = be.alloc("f32", 4);
    const dk = be.alloc("f32", 4);
    const dv = be.alloc("f32", 4);
    be.attentionBackward(q, q, q, seg, out, lse, f32([1, 1, 1, 1]), dq, dk, dv, p);
    for (const b of [dq, dk, dv]) assert.ok(Array.from(be.read(b)).every(Number.isFinite));
  });
});

/** Three branches of 15 tokens after a 20-token prompt, then a takeaway that sees everything. */
function branches(): Layout {
  const visible: Array<Array<[number, number]>> = [];
  for (let i = 0; i < 20; i++) visible.push([[0, i + 1]]);
  for (let b = 0; b < 3; b++) {
    const start = 20 + 15 * b;
    for (let i = start; i < start + 15; i++)
      visible.push([
        [0, 20],
        [start, i + 1],
      ]);
  }
  for (let i = 65; i < 70; i++) visible.push([[0, i + 1]]);
  return segmentLayout(
    Array.from({ length: 70 }, (_, i) => i),
    visible,
  );
}

describe("cpu attention: GEMM tiles and row-wise loop, forced, over several tiles", () => {
  const layouts: Array<[string, (rng: Rng) => Layout]> = [
    ["packed causal [40, 1, 23]", () => packedCausalLayout([40, 1, 23])],
    ["random segments T=50 after 20", (rng) => randomLayout(rng, 50, 20)],
    ["NPR branches (70 tokens)", () => branches()],
    ["KV cache T=7 after 60", () => causalLayout(7, 60)],
  ];
  const paths: Array<[string, () => CpuBackend, "attention.dense" | "attention.rowwise"]> = [
    ["row-wise", () => new CpuBackend({ useBlas: false, attention: { minDensity: Infinity } }), "attention.rowwise"],
    ["TS GEMM tiles of 5", () => new CpuBackend({ useBlas: false, attention: { tile: 5, minDensity: 0 } }), "attention.dense"],
    ["TS GEMM tiles of 1", () => new CpuBackend({ useBlas: false, attention: { tile: 1, minDensity: 0 } }), "attention.dense"],
    ["OpenBLAS tiles of 16", () => new CpuBackend({ useBlas: true, attention: { tile: 16, minDensity: 0 } }), "attention.dense"],
  ];
  for (const [pathName, make, counter] of paths) {
    for (const dtype of ["f32", "f64"] as const) {
      test(`${pathName} [${dtype}]`, (t) => {
        const be = make();
        if (pathName.startsWith("OpenBLAS") && be.gemmPath !== "openblas") return t.skip(`OpenBLAS did not load: ${be.whyNoBlas}`);
        const rng = new Rng(dtype === "f32" ? 11 : 12);
        const H = 6;
        const Hkv = 2;
        const D = 10;
        const tol = dtype === "f32" ? { atol: 3e-5, rtol: 1e-4 } : { atol: 1e-12, rtol: 1e-11 };
        const round = (x: number) => (dtype === "f32" ? Math.fround(x) : x);
        const arr = (values: ArrayLike<number>) => (dtype === "f32" ? Float32Array.from(values) : Float64Array.from(values));
        const upload = (values: ArrayLike<number>, type: "f32" | "f64" | "i32" = dtype) => {
          const b = be.alloc(type, values.length);
          be.write(b, type === "i32" ? Int32Array.from(values) : arr(values));
          return b;
        };
        for (const [label, makeLayout] of layouts) {
          const layout = makeLayout(rng);
          const T = layout.numTokens;
          const S = layout.numKeys;
          const randn = (n: number) => Float64Array.from({ length: n }, () => round(rng.normal()));
          const [q, k, v, dO] = [randn(T * H * D), randn(S * Hkv * D), randn(S * Hkv * D), randn(T * H * D)];
          const c = { T, S, H, Hkv, D, scale: 1 / Math.sqrt(D) };
          const ref = attentionRef(c, denseMask(layout), q, k, v, dO);
          const seg = {
            offsets: upload(layout.segOffsets, "i32"),
            starts: upload(layout.segStarts, "i32"),
            ends: upload(layout.segEnds, "i32"),
          };
          const p = { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D, scale: c.scale };
          const [bq, bk, bv] = [upload(q), upload(k), upload(v)];
          const out = be.alloc(dtype, T * H * D);
          const lse = be.alloc(dtype, T * H);
          const before = be.counters()[counter] ?? 0;
          be.attention(bq, bk, bv, seg, out, lse, p);
          const [dq, dk, dv] = [be.alloc(dtype, T * H * D), be.alloc(dtype, S * Hkv * D), be.alloc(dtype, S * Hkv * D)];
          be.attentionBackward(bq, bk, bv, seg, out, lse, upload(dO), dq, dk, dv, p);
          assert.ok((be.counters()[counter] ?? 0) > before, `${label}: the ${counter} path did not run`);
          const checks: Array<[string, DeviceBuffer, Float64Array]> = [
            ["out", out, ref.out],
            ["lse", lse, ref.lse],
            ["dq", dq, ref.dq],
            ["dk", dk, ref.dk],
            ["dv", dv, ref.dv],
          ];
          for (const [name, buf, expected] of checks) {
            const stats = checkClose(`${pathName} ${dtype} ${label}: ${name}`, be.read(buf), expected, tol);
            t.diagnostic(formatStats(`${label}: ${name}`, stats));
          }
        }
        const other = counter === "attention.dense" ? "attention.rowwise" : "attention.dense";
        assert.equal(be.counters()[other], undefined, `the ${other} path ran although the options rule it out`);
      });
    }
  }
});
