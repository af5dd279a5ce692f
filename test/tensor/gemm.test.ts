/**
 * CPU GEMM: both paths (OpenBLAS through koffi, blocked TypeScript) against a float64 naive triple
 * loop on fresh seeded random inputs, and against each other; the worker-thread split of the
 * TypeScript kernel; size validation; the OPENBLAS_CORETYPE choice. OpenBLAS cases skip, with the
 * reason, where the library does not load.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { GemmTs } from "../../src/tensor/backend/cpu/gemm-ts.ts";
import type { GemmTsCall } from "../../src/tensor/backend/cpu/gemm-ts.ts";
import { CpuGemm } from "../../src/tensor/backend/cpu/gemm.ts";
import { coretypeFromCpuinfo } from "../../src/tensor/backend/cpu/openblas.ts";
import type { MatmulParams } from "../../src/tensor/backend/types.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";

type Floats = Float32Array | Float64Array;
type Ctor = Float32ArrayConstructor | Float64ArrayConstructor;

// Threads fixed at 2 so the worker split is exercised the same way on any machine.
const tsGemm = new CpuGemm({ useBlas: false, threads: 2 });
const blasGemm = new CpuGemm({ useBlas: true, threads: 2 });
const blasSkip = blasGemm.path === "openblas" ? false : `OpenBLAS not loaded: ${blasGemm.whyNoBlas}`;
const paths: [string, CpuGemm, string | false][] = [
  ["typescript", tsGemm, false],
  ["openblas", blasGemm, blasSkip],
];

function randomArray(ctor: Ctor, len: number, rng: Rng): Floats {
  const x = new ctor(len);
  for (let i = 0; i < len; i++) x[i] = rng.uniform(-1, 1);
  return x;
}

/**
 * Float64 naive triple loop over the whole strided batch, straight from the definitions in
 * MatmulParams. Also returns, per element of C, the bound sum |alpha a b| + |beta c| that the
 * rounding error of a k-term dot product scales with.
 */
function reference(a: Floats, b: Floats, c0: Floats, p: MatmulParams): { c: Float64Array; scale: Float64Array } {
  const c = Float64Array.from(c0);
  const scale = new Float64Array(c0.length);
  const { m, n, k } = p;
  const alpha = p.alpha ?? 1;
  const beta = p.beta ?? 0;
  for (let t = 0; t < p.batch; t++) {
    const oa = (p.offsetA ?? 0) + t * p.strideA;
    const ob = (p.offsetB ?? 0) + t * p.strideB;
    const oc = (p.offsetC ?? 0) + t * p.strideC;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        let sAbs = 0;
        for (let q = 0; q < k; q++) {
          const av = p.transA ? a[oa + q * m + i] : a[oa + i * k + q];
          const bv = p.transB ? b[ob + j * k + q] : b[ob + q * n + j];
          s += av * bv;
          sAbs += Math.abs(av * bv);
        }
        const old = beta === 0 ? 0 : c0[oc + i * n + j]; // beta 0: C is never read
        c[oc + i * n + j] = alpha * s + beta * old;
        scale[oc + i * n + j] = Math.abs(alpha) * sAbs + Math.abs(beta * old);
      }
    }
  }
  return { c, scale };
}

interface Diff {
  max: number;
  mean: number;
  worst: number; // max of |diff| / tolerance; must stay <= 1
}

/** Compares got against the reference with a per-element tolerance of (k + 2) eps scale. */
function compare(got: Floats, ref: { c: Float64Array; scale: Float64Array }, k: number, eps: number): Diff {
  let max = 0;
  let sum = 0;
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - ref.c[i]);
    if (!(d <= max)) max = Number.isNaN(d) ? NaN : Math.max(max, d);
    sum += d;
    const tol = 2 * (k + 2) * eps * ref.scale[i] + 1e-300;
    worst = Math.max(worst, Number.isNaN(d) ? Infinity : d / tol);
  }
  return { max, mean: sum / got.length, worst };
}

const EPS = { f32: 2 ** -24, f64: 2 ** -53 };
const SIZES = [1, 3, 17, 65, 130];
// (alpha, beta) per case, cycled; beta 0 cases get a NaN-filled C that must be overwritten.
const SCALARS: [number, number][] = [
  [1, 0],
  [-0.75, 0],
  [1.25, 0.5],
  [1, 1],
];

test("useBlas: false reports the typescript path and why", () => {
  const g = new CpuGemm({ useBlas: false });
  assert.equal(g.path, "typescript");
  assert.match(g.whyNoBlas ?? "", /useBlas: false/);
  console.log(`openblas path: ${blasGemm.path}${blasSkip ? ` (${blasSkip})` : ""}`);
});

test("a BLAS library that does not load falls back to typescript with the load error", () => {
  const g = new CpuGemm({ useBlas: true, openblasPath: "/nonexistent/libopenblas-npr-test.so" });
  assert.equal(g.path, "typescript");
  assert.match(g.whyNoBlas ?? "", /libopenblas-npr-test\.so did not load/);
  console.log(`whyNoBlas: ${g.whyNoBlas}`);
});

for (const [pathName, gemm, skip] of paths) {
  for (const [dtype, ctor] of [
    ["f32", Float32Array],
    ["f64", Float64Array],
  ] as const) {
    test(`${pathName} ${dtype}: sizes {1,3,17,65,130}^3, 4 trans combos, alpha/beta vs f64 naive`, { skip }, () => {
      const rng = new Rng(dtype === "f32" ? 101 : 202);
      let max = 0;
      let meanSum = 0;
      let worst = 0;
      let cases = 0;
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const m of SIZES) {
            for (const n of SIZES) {
              for (const k of SIZES) {
                const [alpha, beta] = SCALARS[cases % SCALARS.length];
                const a = randomArray(ctor, m * k, rng);
                const b = randomArray(ctor, k * n, rng);
                const c = beta === 0 ? new ctor(m * n).fill(NaN) : randomArray(ctor, m * n, rng);
                const p: MatmulParams = { batch: 1, m, n, k, transA, transB, strideA: 0, strideB: 0, strideC: 0, alpha, beta };
                const ref = reference(a, b, c, p);
                gemm.run(a, b, c, p);
                const d = compare(c, ref, k, EPS[dtype]);
                if (!(d.worst <= 1)) {
                  assert.fail(
                    `m=${m} n=${n} k=${k} transA=${transA} transB=${transB} alpha=${alpha} beta=${beta}: max abs diff ${d.max} is ${d.worst.toFixed(2)}x the tolerance`,
                  );
                }
                max = Math.max(max, d.max);
                meanSum += d.mean;
                worst = Math.max(worst, d.worst);
                cases++;
              }
            }
          }
        }
      }
      console.log(
        `${pathName} ${dtype}: ${cases} cases, max abs diff ${max.toExponential(2)}, mean ${(meanSum / cases).toExponential(2)}, worst/tolerance ${worst.toFixed(3)}`,
      );
    });

    test(`${pathName} ${dtype}: batch with broadcast (stride 0), offsets, untouched guard elements`, { skip }, () => {
      const rng = new Rng(dtype === "f32" ? 303 : 404);
      const [m, n, k, batch] = [17, 13, 65, 3];
      let max = 0;
      for (const [strideA, strideB] of [
        [m * k + 5, 0], // one B for every item
        [0, k * n + 2], // one A for every item
        [m * k, k * n], // packed, no gaps
      ]) {
        for (const [transA, transB, alpha, beta] of [
          [false, false, 1, 0],
          [true, true, -0.5, 0.25],
          [true, false, 2, 1],
          [false, true, 1, 0],
        ] as const) {
          const [offsetA, offsetB, offsetC, strideC] = [7, 3, 11, m * n + 4];
          const a = randomArray(ctor, offsetA + (batch - 1) * strideA + m * k + 9, rng);
          const b = randomArray(ctor, offsetB + (batch - 1) * strideB + k * n + 9, rng);
          const guard = 12345;
          const cLen = offsetC + (batch - 1) * strideC + m * n + 9;
          // Elements of C inside an item start as NaN (beta 0) or random; everything else is guard.
          const c = new ctor(cLen).fill(guard);
          const inside = new Uint8Array(cLen);
          for (let t = 0; t < batch; t++) {
            for (let e = 0; e < m * n; e++) {
              const at = offsetC + t * strideC + e;
              inside[at] = 1;
              c[at] = beta === 0 ? NaN : rng.uniform(-1, 1);
            }
          }
          const p: MatmulParams = { batch, m, n, k, transA, transB, strideA, strideB, strideC, offsetA, offsetB, offsetC, alpha, beta };
          const ref = reference(a, b, c, p);
          gemm.run(a, b, c, p);
          for (let i = 0; i < cLen; i++) {
            if (!inside[i]) assert.equal(c[i], guard, `C[${i}] outside every item was written`);
          }
          const d = compare(c, ref, k, EPS[dtype]);
          assert.ok(
            d.worst <= 1,
            `strides ${strideA}/${strideB} trans ${transA}/${transB}: max abs diff ${d.max} (${d.worst.toFixed(2)}x tolerance)`,
          );
          max = Math.max(max, d.max);
        }
      }
      console.log(`${pathName} ${dtype} batched: max abs diff ${max.toExponential(2)}`);
    });
  }
}

test("openblas vs typescript on training-sized shapes, f32", { skip: blasSkip }, () => {
  const rng = new Rng(505);
  // Scaled-down shapes of a small transformer's forward and both backward GEMMs.
  for (const [m, n, k, transA, transB] of [
    [512, 192, 64, false, false],
    [512, 64, 192, false, true],
    [64, 192, 512, true, false],
    [130, 257, 300, true, true],
  ] as const) {
    const a = randomArray(Float32Array, m * k, rng);
    const b = randomArray(Float32Array, k * n, rng);
    const c1 = new Float32Array(m * n).fill(NaN);
    const c2 = new Float32Array(m * n).fill(NaN);
    const p: MatmulParams = { batch: 1, m, n, k, transA, transB, strideA: 0, strideB: 0, strideC: 0 };
    blasGemm.run(a, b, c1, p);
    tsGemm.run(a, b, c2, p);
    let max = 0;
    let sum = 0;
    for (let i = 0; i < c1.length; i++) {
      const d = Math.abs(c1[i] - c2[i]);
      max = Number.isNaN(d) ? NaN : Math.max(max, d);
      sum += d;
    }
    console.log(
      `[${m}x${k}]@[${k}x${n}] transA=${transA} transB=${transB}: max abs diff ${max.toExponential(2)}, mean ${(sum / c1.length).toExponential(2)}`,
    );
    // |entries| <= 1 and sums of k of them: f32 rounding stays far below 1e-5 * k.
    assert.ok(max <= 1e-5 * Math.sqrt(k) * 4, `max abs diff ${max}`);
  }
});

test("typescript kernel split over worker threads (rows, columns, shared inputs) vs f64 naive", () => {
  const rng = new Rng(606);
  const g = new GemmTs({ threads: 2 });
  const chunksBefore = g.workerChunks; // the pool is shared with tsGemm's kernel
  // 2^24 multiply-adds is the split threshold; m = 8 is too few rows to split, so columns split.
  const shapes = [
    { m: 256, n: 260, k: 257, transA: true, transB: false, shared: false },
    { m: 8, n: 2100, k: 1000, transA: false, transB: true, shared: false },
    { m: 260, n: 256, k: 256, transA: false, transB: false, shared: true },
  ];
  for (const s of shapes) {
    const { m, n, k } = s;
    const [offA, offB, offC] = [5, 2, 3];
    const alloc = (len: number): Float32Array => (s.shared ? new Float32Array(new SharedArrayBuffer(len * 4)) : new Float32Array(len));
    const a = alloc(offA + m * k);
    const b = alloc(offB + k * n);
    for (let i = 0; i < a.length; i++) a[i] = rng.uniform(-1, 1);
    for (let i = 0; i < b.length; i++) b[i] = rng.uniform(-1, 1);
    const c = new Float32Array(offC + m * n);
    for (let i = 0; i < c.length; i++) c[i] = rng.uniform(-1, 1);
    const p: MatmulParams = {
      batch: 1,
      m,
      n,
      k,
      transA: s.transA,
      transB: s.transB,
      strideA: 0,
      strideB: 0,
      strideC: 0,
      offsetA: offA,
      offsetB: offB,
      offsetC: offC,
      alpha: 0.5,
      beta: -1,
    };
    const ref = reference(a, b, c, p);
    const before = g.parallelRuns;
    const call: GemmTsCall = {
      m,
      n,
      k,
      transA: s.transA,
      transB: s.transB,
      alpha: 0.5,
      beta: -1,
      a,
      offA,
      lda: s.transA ? m : k,
      b,
      offB,
      ldb: s.transB ? k : n,
      c,
      offC,
      ldc: n,
    };
    g.run(call);
    assert.equal(g.whyNoWorkers, null, "worker threads should be available");
    assert.equal(g.parallelRuns, before + 1, `m=${m} n=${n} k=${k} did not take the worker path`);
    const d = compare(c, ref, k, EPS.f32);
    console.log(`workers m=${m} n=${n} k=${k} shared=${s.shared}: max abs diff ${d.max.toExponential(2)}, mean ${d.mean.toExponential(2)}`);
    assert.ok(d.worst <= 1, `max abs diff ${d.max} (${d.worst.toFixed(2)}x tolerance)`);
    assert.equal(c[0], ref.c[0], "C before offsetC must be untouched"); // ref keeps c0 there
  }
  // The caller takes chunks too, so a worker that wakes late may get none of a product; over
  // three products of 10-30 ms each, none at all would mean the workers do not work.
  console.log(`chunks computed by the worker: ${g.workerChunks - chunksBefore}`);
  assert.ok(g.workerChunks > chunksBefore, "no chunk was computed by a worker thread");
});

test("k = 0 and alpha = 0 give beta C without reading A or B", () => {
  for (const [, gemm, skip] of paths) {
    if (skip) continue;
    const c = new Float32Array([1, 2, 3, 4]);
    gemm.run(new Float32Array(0), new Float32Array(0), c, {
      batch: 1,
      m: 2,
      n: 2,
      k: 0,
      transA: false,
      transB: false,
      strideA: 0,
      strideB: 0,
      strideC: 0,
      beta: 2,
    });
    assert.deepEqual(Array.from(c), [2, 4, 6, 8]);
    const nanC = new Float32Array(4).fill(NaN);
    const nanA = new Float32Array(6).fill(NaN);
    gemm.run(nanA, nanA, nanC, { batch: 1, m: 2, n: 2, k: 3, transA: false, transB: false, strideA: 0, strideB: 0, strideC: 0, alpha: 0 });
    assert.deepEqual(Array.from(nanC), [0, 0, 0, 0]);
  }
});

test("bad sizes, overlapping outputs and mixed dtypes are InvariantErrors naming the problem", () => {
  const p = (over: Partial<MatmulParams>): MatmulParams => ({
    batch: 1,
    m: 4,
    n: 5,
    k: 6,
    transA: false,
    transB: false,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    ...over,
  });
  const a = new Float32Array(24);
  const b = new Float32Array(30);
  const c = new Float32Array(20);
  for (const [, gemm, skip] of paths) {
    if (skip) continue;
    assert.throws(
      () => gemm.run(a.subarray(1), b, c, p({})),
      (e: unknown) => e instanceof InvariantError && /m=4 n=5 k=6/.test(e.message) && /buffer A has length 23/.test(e.message),
    );
    assert.throws(
      () => gemm.run(a, b, c, p({ offsetB: 1 })),
      (e: unknown) => e instanceof InvariantError && /buffer B has length 30/.test(e.message),
    );
    assert.throws(
      () => gemm.run(a, b, c, p({ batch: 2, strideA: 0, strideB: 0, strideC: 20 })),
      (e: unknown) => e instanceof InvariantError && /buffer C/.test(e.message),
    );
    assert.throws(() => gemm.run(a, b, new Float32Array(40), p({ batch: 2, strideC: 0 })), /batch items of C overlap/);
    const shared = new Float32Array(64);
    assert.throws(() => gemm.run(shared.subarray(0, 24), b, shared.subarray(20, 40), p({})), /C overlaps A/);
    assert.throws(() => gemm.run(new Float64Array(24), b, c, p({})), /must all be Float32Array or all Float64Array/);
    assert.throws(() => gemm.run(a, b, c, p({ m: -1 })), /m must be a non-negative integer/);
  }
});

test("OPENBLAS_CORETYPE from /proc/cpuinfo flags", () => {
  assert.equal(coretypeFromCpuinfo("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw\n"), "SKYLAKEX");
  assert.equal(coretypeFromCpuinfo("flags\t\t: fpu sse2 avx avx2 fma\n"), "HASWELL");
  assert.equal(coretypeFromCpuinfo("flags\t\t: fpu sse2 avx\n"), null);
  assert.equal(coretypeFromCpuinfo("no flags here\n"), null);
});
