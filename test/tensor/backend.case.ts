/**
 * The backend conformance suite (STYLE.md habit 7): every primitive of the Backend contract,
 * forward and backward, against the naive float64 references of backend.reference.ts (dense
 * masks built from the segments), on seeded random inputs, with per-op tolerances
 * (backend.harness.ts). Every backend runs it (cpu.test.ts, cuda.test.ts).
 * This file holds the GEMM, dtype-mix, nn, attention and optimizer cases; the memory,
 * elementwise, clipping (min, max, le, where) and reduce cases are in backend-elementwise.case.ts,
 * imported first so the report keeps the contract's order. Each case asserts the backend's
 * counter for its primitive rose, so a silent fallback cannot pass; outputs start as garbage (NaN
 * where C must not be read), so an op that accumulates where it should overwrite fails. In bf16
 * every case runs on bf16 buffers (inputs rounded to bf16, references in float64 on those
 * values, outputs held to about one bf16 rounding); a few cases check dtype mixes and `cast`
 * exactly. Knows only the Backend API.
 */
import "./backend-elementwise.case.ts";
import assert from "node:assert/strict";
import type { MatmulParams } from "../../src/tensor/backend/types.ts";
import { causalLayout, packedCausalLayout, type Layout } from "../../src/util/layout.ts";
import type { Rng } from "../../src/util/rng.ts";
import { addCase, Harness, tol, TOL_ATTENTION, TOL_MATMUL, TOL_POINTWISE, TOL_REDUCE } from "./backend.harness.ts";
import {
  attentionRef,
  branchLayout,
  denseMask,
  lseRef,
  matmulRef,
  randomLayout,
  rmsRef,
  ropeRef,
  roundTo,
  softmaxRef,
  type AttnCase,
  type FloatDType,
} from "./backend.reference.ts";

export { runBackendSuite, type BackendSuiteOptions } from "./backend.harness.ts";
export type { FloatDType };

// ---------------------------------------------------------------- gemm

/** Runs one matmul on random A, B and a C pre-filled with cFill (NaN tests beta 0). */
function checkMatmul(h: Harness, label: string, p: MatmulParams, cFill?: number): void {
  const { batch, m, n, k } = p;
  const last = (off: number | undefined, stride: number, size: number) => (off ?? 0) + (batch - 1) * stride + size;
  const a = h.randn(last(p.offsetA, p.strideA, m * k) + 2);
  const b = h.randn(last(p.offsetB, p.strideB, k * n) + 2);
  const c0 =
    cFill === undefined
      ? h.randn(last(p.offsetC, p.strideC, m * n) + 2)
      : new Float64Array(last(p.offsetC, p.strideC, m * n) + 2).fill(cFill);
  const c = h.buf(c0);
  h.be.matmul(h.buf(a), h.buf(b), c, p);
  const expected = matmulRef(a, b, c0, p);
  if (cFill !== undefined && Number.isNaN(cFill)) {
    // Only the written region is compared; the rest of C keeps its NaN.
    const got = h.get(c);
    for (let bi = 0; bi < batch; bi++) {
      const oc = (p.offsetC ?? 0) + bi * p.strideC;
      h.close(`${label} item ${bi}`, got.subarray(oc, oc + m * n), expected.subarray(oc, oc + m * n), TOL_MATMUL);
    }
    return;
  }
  h.close(label, c, expected, TOL_MATMUL);
}

const TRANS: Array<[boolean, boolean]> = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

addCase("matmul", "all four transpose combinations, odd sizes", (h) => {
  for (const [transA, transB] of TRANS) {
    for (const [m, n, k] of [
      [5, 7, 3],
      [17, 9, 33],
      [1, 1, 1],
      [3, 65, 130],
    ]) {
      const label = `${transA ? "T" : "N"}${transB ? "T" : "N"} m${m} n${n} k${k}`;
      checkMatmul(h, label, { batch: 1, m, n, k, transA, transB, strideA: 0, strideB: 0, strideC: 0 });
    }
  }
});

addCase("matmul", "strided batch, broadcast B (stride 0), offsets, gaps between items", (h) => {
  for (const [transA, transB] of TRANS) {
    const m = 6;
    const n = 5;
    const k = 7;
    checkMatmul(h, `batch 3, shared B, ${transA}/${transB}`, {
      batch: 3,
      m,
      n,
      k,
      transA,
      transB,
      strideA: m * k + 3,
      strideB: 0,
      strideC: m * n + 1,
      offsetA: 2,
      offsetB: 5,
      offsetC: 4,
    });
  }
  checkMatmul(h, "batch 4, shared A", { batch: 4, m: 3, n: 8, k: 5, transA: false, transB: true, strideA: 0, strideB: 40, strideC: 24 });
});

addCase("matmul", "alpha and beta (accumulate into C), beta 0 never reads C", (h) => {
  checkMatmul(h, "alpha 0.5 beta 0.25", {
    batch: 2,
    m: 9,
    n: 4,
    k: 11,
    transA: false,
    transB: false,
    strideA: 99,
    strideB: 44,
    strideC: 36,
    alpha: 0.5,
    beta: 0.25,
  });
  checkMatmul(h, "beta 1 (gradient accumulation)", {
    batch: 1,
    m: 8,
    n: 8,
    k: 8,
    transA: true,
    transB: false,
    strideA: 0,
    strideB: 0,
    strideC: 0,
    beta: 1,
  });
  checkMatmul(
    h,
    "beta 0 over NaN",
    { batch: 2, m: 7, n: 6, k: 5, transA: false, transB: true, strideA: 35, strideB: 30, strideC: 50, offsetC: 3 },
    NaN,
  );
  checkMatmul(
    h,
    "alpha -2, beta 0 over NaN",
    { batch: 1, m: 4, n: 3, k: 9, transA: true, transB: true, strideA: 0, strideB: 0, strideC: 0, alpha: -2, beta: 0 },
    NaN,
  );
});

// ---------------------------------------------------------------- dtypes: cast and the bf16 mixes

addCase("cast", "every pair of float dtypes, exact rounding to nearest even (no double rounding from f64)", (h) => {
  // Random values over a wide range, ties, infinities, and 1 + 2^-8 + 2^-40, which an f64 -> bf16
  // cast through a nearest-even f32 rounds to 1 instead of 1 + 2^-7.
  const special = [0, -0, 1, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -40, 65504, 3e38, -1e-30, Infinity, -Infinity];
  const values = h.randn(200, 10).map((v, i) => (i % 3 === 0 ? v * 1e6 : v));
  const x = h.buf([...special, ...values]);
  const stored = h.get(x); // the values as x's dtype holds them
  for (const to of ["f32", "f64", "bf16"] as const) {
    const out = h.be.alloc(to, stored.length);
    h.be.cast(x, out);
    const got = h.get(out);
    h.be.free(out);
    h.close(
      `${h.dtype} -> ${to}`,
      got,
      Float64Array.from(stored, (v) => roundTo(to, v)),
      tol(0, 0, 0, 0),
    );
  }
});

addCase("matmul", "bf16 A and B into an f32 C (mixed precision, fp32 accumulation)", (h) => {
  for (const [transA, transB] of TRANS) {
    const p: MatmulParams = { batch: 2, m: 9, n: 17, k: 40, transA, transB, strideA: 360, strideB: 0, strideC: 153 };
    const a = Float64Array.from(h.randn(720), (v) => roundTo("bf16", v));
    const b = Float64Array.from(h.randn(680), (v) => roundTo("bf16", v));
    const c = h.bufAs("f32", new Float64Array(306).fill(NaN));
    h.be.matmul(h.bufAs("bf16", a), h.bufAs("bf16", b), c, p);
    // Products of bf16 values are exact in f32; only the f32 accumulation over k = 40 rounds.
    const expected = matmulRef(a, b, new Float64Array(306), p);
    h.close(`${transA ? "T" : "N"}${transB ? "T" : "N"} f32 C`, h.get(c), expected, {
      f32: { atol: 1e-5, rtol: 1e-5 },
      f64: { atol: 1e-5, rtol: 1e-5 },
      bf16: { atol: 1e-5, rtol: 1e-5 },
    });
  }
});

addCase("embedding", "a bf16 table gathered into an f32 out (exact widening)", (h) => {
  const V = 11;
  const C = 6;
  const table = Float64Array.from(h.randn(V * C), (v) => roundTo("bf16", v));
  const out = h.bufAs("f32", h.randn(EMB_IDS.length * C, 100));
  h.be.embedding(h.bufAs("bf16", table), h.ibuf(EMB_IDS), out, { n: EMB_IDS.length, dim: C });
  const expected = Float64Array.from({ length: EMB_IDS.length * C }, (_, i) => table[EMB_IDS[Math.floor(i / C)] * C + (i % C)]);
  h.close("out", h.get(out), expected, tol(0, 0, 0, 0));
});

addCase("unary", "dtype mixes the contract refuses: f32 beside bf16, f64 C of a bf16 GEMM", (h) => {
  const x = h.bufAs("bf16", h.randn(8));
  const y = h.bufAs("f32", h.randn(8));
  assert.throws(() => h.be.unary("exp", x, y), /unary.*f32 beside bf16|float args must share/);
  assert.throws(
    () =>
      h.be.matmul(x, y, h.bufAs("bf16", h.randn(4)), {
        batch: 1,
        m: 2,
        n: 2,
        k: 2,
        transA: false,
        transB: false,
        strideA: 0,
        strideB: 0,
        strideC: 0,
      }),
    /a bf16 GEMM needs both bf16/,
  );
  assert.throws(
    () =>
      h.be.matmul(x, x, h.bufAs("f64", h.randn(4)), {
        batch: 1,
        m: 2,
        n: 2,
        k: 2,
        transA: false,
        transB: false,
        strideA: 0,
        strideB: 0,
        strideC: 0,
      }),
    /accumulate into f32 or bf16/,
  );
  h.be.unary("neg", x, x); // the counter must rise: one legal bf16 call, in place
  const back = h.get(x);
  assert.ok(back.every((v) => Number.isFinite(v)));
});

const EMB_IDS = [3, 0, 10, 3, 7, 7, 7, 1, 10];

addCase("embedding", "rows gathered, repeated ids", (h) => {
  const V = 11;
  const C = 6;
  const table = h.randn(V * C);
  const out = h.out(EMB_IDS.length * C);
  h.be.embedding(h.buf(table), h.ibuf(EMB_IDS), out, { n: EMB_IDS.length, dim: C });
  const expected = Float64Array.from({ length: EMB_IDS.length * C }, (_, i) => table[EMB_IDS[Math.floor(i / C)] * C + (i % C)]);
  h.close("out", out, expected, tol(0, 0, 0, 0));
});

addCase("embeddingBackward", "scatter-add accumulates into dTable, repeated ids sum", (h) => {
  const V = 11;
  const C = 6;
  const dOut = h.randn(EMB_IDS.length * C);
  const d0 = h.randn(V * C);
  const dTable = h.buf(d0);
  h.be.embeddingBackward(h.buf(dOut), h.ibuf(EMB_IDS), dTable, { n: EMB_IDS.length, dim: C });
  const expected = d0.slice();
  EMB_IDS.forEach((id, i) => {
    for (let j = 0; j < C; j++) expected[id * C + j] += dOut[i * C + j];
  });
  h.close("dTable", dTable, expected, TOL_REDUCE);
});

const RMS = { rows: 6, dim: 24, eps: 1e-6 };

addCase("rmsnorm", "out and rstd", (h) => {
  const x = h.randn(RMS.rows * RMS.dim, 3);
  const w = h.randn(RMS.dim, 0.5).map((v) => h.round(v + 1));
  const out = h.out(RMS.rows * RMS.dim);
  const rstd = h.out(RMS.rows);
  h.be.rmsnorm(h.buf(x), h.buf(w), out, rstd, RMS);
  const ref = rmsRef(x, w, RMS);
  h.close("out", out, ref.out, TOL_REDUCE);
  h.close("rstd", rstd, ref.rstd, TOL_REDUCE);
});

addCase("rmsnormBackward", "dx and dw through the explicit Jacobian", (h) => {
  const { rows, dim } = RMS;
  const x = h.randn(rows * dim, 3);
  const w = h.randn(dim, 0.5).map((v) => h.round(v + 1));
  const rstd = rmsRef(x, w, RMS).rstd.map((v) => h.round(v));
  const dy = h.randn(rows * dim);
  const dx = h.out(rows * dim);
  const dw = h.out(dim);
  h.be.rmsnormBackward(h.buf(x), h.buf(w), h.buf(rstd), h.buf(dy), dx, dw, RMS);
  // d out[i] / d x[j] = r w[i] (delta_ij - x[i] x[j] r^2 / dim); d out[i] / d w[i] = x[i] r.
  const edx = new Float64Array(rows * dim);
  const edw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const rs = rstd[r];
    for (let i = 0; i < dim; i++) {
      const xi = x[r * dim + i];
      edw[i] += dy[r * dim + i] * xi * rs;
      for (let j = 0; j < dim; j++) {
        const jac = rs * w[i] * ((i === j ? 1 : 0) - (xi * x[r * dim + j] * rs * rs) / dim);
        edx[r * dim + j] += dy[r * dim + i] * jac;
      }
    }
  }
  h.close("dx", dx, edx, TOL_REDUCE);
  h.close("dw", dw, edw, TOL_REDUCE);
});

addCase("rope", "forward and inverse at explicit positions (incl. large ones)", (h) => {
  const heads = 3;
  const dim = 16;
  const theta = 1e6;
  const pos = [0, 1, 5, 5, 130, 4095, 70000];
  const x = h.randn(pos.length * heads * dim);
  const params = { tokens: pos.length, heads, dim, theta };
  const fwd = h.out(x.length);
  h.be.rope(h.buf(x), h.ibuf(pos), fwd, { ...params, inverse: false });
  h.close("forward", fwd, ropeRef(x, pos, heads, dim, theta, 1), TOL_POINTWISE);
  const inv = h.out(x.length);
  h.be.rope(h.buf(x), h.ibuf(pos), inv, { ...params, inverse: true });
  h.close("inverse", inv, ropeRef(x, pos, heads, dim, theta, -1), TOL_POINTWISE);
  const back = h.out(x.length);
  h.be.rope(fwd, h.ibuf(pos), back, { ...params, inverse: true });
  h.close("inverse(forward(x)) = x", back, x, TOL_REDUCE);
});

// ---------------------------------------------------------------- nn: softmax family, logprob

const ROWS = { rows: 5, cols: 13 };

/** Rows of logits, two of them shifted far from 0 to catch a softmax without max subtraction. */
function logits(h: Harness, rows: number, cols: number): Float64Array {
  const x = h.randn(rows * cols, 2);
  for (let j = 0; j < cols; j++) {
    x[cols + j] = h.round(x[cols + j] + 1000);
    if (rows > 2) x[2 * cols + j] = h.round(x[2 * cols + j] - 1000);
  }
  return x;
}

addCase("softmax", "rows, including far-shifted ones", (h) => {
  const x = logits(h, ROWS.rows, ROWS.cols);
  const out = h.out(x.length);
  h.be.softmax(h.buf(x), out, ROWS);
  h.close("out", out, softmaxRef(x, ROWS.rows, ROWS.cols), TOL_REDUCE);
});

addCase("softmaxBackward", "through the explicit Jacobian", (h) => {
  const { rows, cols } = ROWS;
  const y = softmaxRef(logits(h, rows, cols), rows, cols).map((v) => h.round(v));
  const dy = h.randn(y.length);
  const dx = h.out(y.length);
  h.be.softmaxBackward(h.buf(y), h.buf(dy), dx, ROWS);
  const expected = new Float64Array(y.length);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        const jac = y[r * cols + i] * ((i === j ? 1 : 0) - y[r * cols + j]);
        expected[r * cols + j] += dy[r * cols + i] * jac;
      }
    }
  }
  h.close("dx", dx, expected, TOL_REDUCE);
});

addCase("logSoftmax", "rows, including far-shifted ones", (h) => {
  const x = logits(h, ROWS.rows, ROWS.cols);
  const out = h.out(x.length);
  h.be.logSoftmax(h.buf(x), out, ROWS);
  const p = softmaxRef(x, ROWS.rows, ROWS.cols);
  h.close("out", out, p.map(Math.log), tol(1e-4, 1e-5)); // |x| ~ 1000: f32 ulp there is 6e-5
});

addCase("logSoftmaxBackward", "through the explicit Jacobian", (h) => {
  const { rows, cols } = ROWS;
  const p = softmaxRef(logits(h, rows, cols), rows, cols);
  const y = p.map((v) => h.round(Math.log(v)));
  const dy = h.randn(y.length);
  const dx = h.out(y.length);
  h.be.logSoftmaxBackward(h.buf(y), h.buf(dy), dx, ROWS);
  const expected = new Float64Array(y.length);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        expected[r * cols + j] += dy[r * cols + i] * ((i === j ? 1 : 0) - p[r * cols + j]);
      }
    }
  }
  h.close("dx", dx, expected, TOL_REDUCE);
});

const LP = { rows: 7, cols: 19, ignoreIndex: -100 };
const LP_TARGETS = [4, -100, 0, 18, -100, 9, 9];

addCase("logprobGather", "logp and lse, ignored rows give 0", (h) => {
  const { rows, cols } = LP;
  const x = logits(h, rows, cols);
  const logp = h.out(rows);
  const lse = h.out(rows);
  h.be.logprobGather(h.buf(x), h.ibuf(LP_TARGETS), logp, lse, LP);
  const eLse = lseRef(x, rows, cols);
  h.close("lse", lse, eLse, tol(1e-4, 1e-5));
  const eLogp = LP_TARGETS.map((t, r) => (t === LP.ignoreIndex ? 0 : x[r * cols + t] - eLse[r]));
  h.close("logp", logp, eLogp, tol(1e-4, 1e-5));
});

addCase("logprobGatherBackward", "dLogits, zero on ignored rows", (h) => {
  const { rows, cols } = LP;
  const x = logits(h, rows, cols);
  const lse = lseRef(x, rows, cols).map((v) => h.round(v));
  const dLogp = h.randn(rows);
  const dLogits = h.out(rows * cols);
  h.be.logprobGatherBackward(h.buf(x), h.ibuf(LP_TARGETS), h.buf(lse), h.buf(dLogp), dLogits, LP);
  // The softmax the op computes is exp(x - lse) from the lse it is given, rounded to the dtype: in
  // bf16 an lse near 1000 is off by up to 2 (ulp 4), so the reference uses that same rounded lse.
  const expected = new Float64Array(rows * cols);
  LP_TARGETS.forEach((t, r) => {
    if (t === LP.ignoreIndex) return;
    for (let j = 0; j < cols; j++) expected[r * cols + j] = dLogp[r] * ((j === t ? 1 : 0) - Math.exp(x[r * cols + j] - lse[r]));
  });
  // f32: lse is rounded near |x| ~ 1000, so exp(x - lse) carries ~6e-5 relative error there.
  h.close("dLogits", dLogits, expected, tol(2e-4, 2e-4));
});

// ---------------------------------------------------------------- nn: attention

interface AttnSpec {
  label: string;
  layout: (rng: Rng) => Layout;
  H: number;
  Hkv: number;
  D: number;
  /** Rows of k/v beyond S (filled with huge values that must never be read). */
  extraRows?: number;
  /** Multiplies q, for peaked softmaxes. */
  qScale?: number;
}

const ATTENTION_SPECS: AttnSpec[] = [
  { label: "causal T=S=9, H=Hkv=2, D=8", layout: () => causalLayout(9), H: 2, Hkv: 2, D: 8 },
  { label: "packed causal [3,1,5], GQA H=4 Hkv=2, D=6", layout: () => packedCausalLayout([3, 1, 5]), H: 4, Hkv: 2, D: 6 },
  { label: "random segments, GQA H=4 Hkv=1, D=5", layout: (rng) => randomLayout(rng, 10, 0), H: 4, Hkv: 1, D: 5 },
  { label: "NPR branches, GQA H=6 Hkv=3, D=8", layout: () => branchLayout(), H: 6, Hkv: 3, D: 8 },
  { label: "KV cache T=3 after 6 (S > T), S' = S + 4", layout: () => causalLayout(3, 6), H: 4, Hkv: 2, D: 8, extraRows: 4 },
  {
    label: "decode T=1 after 11, random segments over the cache",
    layout: (rng) => randomLayout(rng, 1, 11),
    H: 2,
    Hkv: 1,
    D: 16,
    extraRows: 2,
  },
  { label: "peaked scores (q x 8), causal", layout: () => causalLayout(6), H: 2, Hkv: 2, D: 4, qScale: 8 },
  { label: "uneven groups H=5 Hkv=2 (heads 0-2 read kv 0), causal", layout: () => causalLayout(8), H: 5, Hkv: 2, D: 4 },
];

/** Inputs and dense reference of one attention spec. */
function attentionSetup(h: Harness, spec: AttnSpec) {
  const layout = spec.layout(h.rng);
  const T = layout.numTokens;
  const S = layout.numKeys;
  const { H, Hkv, D } = spec;
  const c: AttnCase = { T, S, H, Hkv, D, scale: 1 / Math.sqrt(D) };
  const rows = S + (spec.extraRows ?? 0);
  const q = h.randn(T * H * D, spec.qScale ?? 1);
  const k = h.randn(rows * Hkv * D);
  const v = h.randn(rows * Hkv * D);
  // Rows past S hold huge values: reading them would wreck the result.
  k.fill(1e4, S * Hkv * D);
  v.fill(1e4, S * Hkv * D);
  const dO = h.randn(T * H * D);
  const ref = attentionRef(c, denseMask(layout), q, k, v, dO);
  const seg = { offsets: h.ibuf(layout.segOffsets), starts: h.ibuf(layout.segStarts), ends: h.ibuf(layout.segEnds) };
  const params = { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D, scale: c.scale };
  return { c, q, k, v, dO, ref, seg, params };
}

for (const spec of ATTENTION_SPECS) {
  addCase("attention", spec.label, (h) => {
    const { c, q, k, v, ref, seg, params } = attentionSetup(h, spec);
    const out = h.out(c.T * c.H * c.D);
    const lse = h.out(c.T * c.H);
    h.be.attention(h.buf(q), h.buf(k), h.buf(v), seg, out, lse, params);
    h.close("out", out, ref.out, TOL_ATTENTION);
    h.close("lse", lse, ref.lse, TOL_ATTENTION);
  });
  addCase("attentionBackward", spec.label, (h) => {
    const { c, q, k, v, dO, ref, seg, params } = attentionSetup(h, spec);
    const dq = h.out(c.T * c.H * c.D);
    const dk = h.out(c.S * c.Hkv * c.D);
    const dv = h.out(c.S * c.Hkv * c.D);
    const round = (a: Float64Array) => a.map((x) => h.round(x));
    h.be.attentionBackward(h.buf(q), h.buf(k), h.buf(v), seg, h.buf(round(ref.out)), h.buf(round(ref.lse)), h.buf(dO), dq, dk, dv, params);
    // bf16 with peaked scores: lse reaches ~20, where a bf16 ulp is 0.125, so the probabilities
    // the backward rebuilds as exp(s - lse) from the rounded lse are off by up to ~6%.
    const t = spec.qScale ? { ...TOL_ATTENTION, bf16: { atol: 0.05, rtol: 2 ** -4 } } : TOL_ATTENTION;
    h.close("dq", dq, ref.dq, t);
    h.close("dk", dk, ref.dk, t);
    h.close("dv", dv, ref.dv, t);
  });
}

// ---------------------------------------------------------------- optim

addCase("adamw", "three steps, weight decay, bias correction", (h) => {
  const n = 61;
  const hp = { n, lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
  let param = h.randn(n);
  let m = new Float64Array(n);
  let v = new Float64Array(n);
  const bp = h.buf(param);
  const bm = h.buf(m);
  const bv = h.buf(v);
  for (let step = 1; step <= 3; step++) {
    const g = h.randn(n, step);
    h.be.adamw(bp, h.buf(g), bm, bv, { ...hp, step });
    m = m.map((mi, i) => hp.beta1 * mi + (1 - hp.beta1) * g[i]);
    v = v.map((vi, i) => hp.beta2 * vi + (1 - hp.beta2) * g[i] * g[i]);
    const mHat = m.map((mi) => mi / (1 - hp.beta1 ** step));
    const vHat = v.map((vi) => vi / (1 - hp.beta2 ** step));
    param = param.map((p, i) => p - hp.lr * hp.weightDecay * p - (hp.lr * mHat[i]) / (Math.sqrt(vHat[i]) + hp.eps));
    h.close(`step ${step} param`, bp, param, TOL_REDUCE);
    h.close(`step ${step} m`, bm, m, TOL_REDUCE);
    h.close(`step ${step} v`, bv, v, TOL_REDUCE);
  }
});
