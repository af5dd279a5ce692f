/**
 * The CPU backend's kernels split over worker threads (pool.ts, worker-kernels.ts): on sizes large
 * enough to be split, a 2-thread backend must give exactly the bits of a 1-thread one (fixed chunks, no
 * racy sums), its counters must show the split ran, and the f32 results (which use expF) must
 * stay within f32 tolerance of an f64 reference written here. Also: expF against Math.exp, a task
 * that throws inside a worker, and NPR_THREADS=1 turning the workers off.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { CpuBackend, CpuBuffer } from "../../src/tensor/backend/cpu/index.ts";
import { planBands } from "../../src/tensor/backend/cpu/attention.ts";
import { expF } from "../../src/tensor/backend/cpu/exp.ts";
import { sharedPool } from "../../src/tensor/backend/cpu/pool.ts";
import type { DeviceBuffer } from "../../src/tensor/backend/types.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { packedCausalLayout, segmentLayout } from "../../src/util/layout.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats } from "../util/check-close.ts";
import { attentionRef, denseMask } from "./backend.reference.ts";

const one = new CpuBackend({ useBlas: true, threads: 1 });
const two = new CpuBackend({ useBlas: true, threads: 2 });
const F32 = { atol: 1e-5, rtol: 1e-4 };

function randn(rng: Rng, n: number, scale = 1): Float64Array {
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) x[i] = rng.uniform(-1, 1) * scale;
  return x;
}

function up(be: CpuBackend, x: Float64Array | Int32Array, dtype: "f32" | "i32" = "f32"): DeviceBuffer {
  const b = be.alloc(dtype, x.length);
  be.write(b, dtype === "i32" ? (x as Int32Array) : Float32Array.from(x));
  return b;
}

function read(be: CpuBackend, b: DeviceBuffer): Float32Array {
  return be.read(b) as Float32Array;
}

/** Runs op on both backends with fresh copies of the inputs; returns both outputs, asserting the split ran. */
function both(
  task: string,
  inputs: Array<Float64Array | Int32Array>,
  outputs: number[],
  op: (be: CpuBackend, ins: DeviceBuffer[], outs: DeviceBuffer[]) => void,
): Array<[Float32Array, Float32Array]> {
  const run = (be: CpuBackend) => {
    const ins = inputs.map((x) => up(be, x, x instanceof Int32Array ? "i32" : "f32"));
    const outs = outputs.map((n) => be.alloc("f32", n));
    const before = be.counters()[`threads.${task}`] ?? 0;
    op(be, ins, outs);
    return { outs: outs.map((o) => read(be, o)), split: (be.counters()[`threads.${task}`] ?? 0) - before };
  };
  const a = run(one);
  const b = run(two);
  assert.equal(a.split, 0, `${task}: the 1-thread backend must not split`);
  assert.equal(b.split, 1, `${task}: the 2-thread backend did not split (${two.whyNoThreads ?? "pool usable"})`);
  return a.outs.map((o, i) => [o, b.outs[i]]);
}

/** Bit-for-bit equality of the two backends' outputs, with the count of differing elements in the message. */
function sameBits(name: string, [a, b]: [Float32Array, Float32Array]): void {
  let diff = 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) diff++;
  assert.equal(diff, 0, `${name}: ${diff} of ${a.length} elements differ between 1 and 2 threads`);
}

test("expF matches Math.exp to 1e-13 relative, and at the edges", () => {
  const rng = new Rng(11);
  let maxRel = 0;
  let f32Diff = 0;
  for (let i = 0; i < 200_000; i++) {
    const x = rng.uniform(-104, 104);
    const e = Math.exp(x);
    const a = expF(x);
    maxRel = Math.max(maxRel, Math.abs(a - e) / e);
    if (Math.fround(a) !== Math.fround(e)) f32Diff++;
  }
  console.log(`expF: max rel error ${maxRel.toExponential(2)}, f32 roundings that differ ${f32Diff} of 200000`);
  assert.ok(maxRel < 1e-13, `max relative error ${maxRel}`);
  assert.ok(f32Diff <= 2, `${f32Diff} f32 results differ`);
  assert.equal(expF(0), 1);
  assert.equal(Math.fround(expF(-Infinity)), 0);
  assert.equal(Math.fround(expF(-1000)), 0);
  assert.equal(Math.fround(expF(Infinity)), Infinity);
  assert.equal(Math.fround(expF(89)), Infinity);
  assert.ok(Number.isNaN(expF(NaN)));
});

test("threaded buffers are shared, 1-thread ones plain", () => {
  assert.ok((two.alloc("f32", 8) as CpuBuffer).data.buffer instanceof SharedArrayBuffer);
  assert.ok(!((one.alloc("f32", 8) as CpuBuffer).data.buffer instanceof SharedArrayBuffer));
  assert.equal(one.whyNoThreads, "threads is 1");
});

test("swiglu and its backward: 2 threads = 1 thread bit for bit, f32 within tolerance of f64", () => {
  const rng = new Rng(1);
  const n = 60_000;
  const gate = randn(rng, n, 6);
  const upv = randn(rng, n, 2);
  const dy = randn(rng, n);
  const [out] = both("swiglu", [gate, upv], [n], (be, [g, u], [o]) => be.swiglu(g, u, o));
  sameBits("swiglu", out);
  const [dG, dU] = both("swigluBackward", [gate, upv, dy], [n, n], (be, [g, u, d], [a, b]) => be.swigluBackward(g, u, d, a, b));
  sameBits("swiglu dGate", dG);
  sameBits("swiglu dUp", dU);
  const ref = new Float64Array(n);
  const refDG = new Float64Array(n);
  const refDU = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = Math.fround(gate[i]);
    const u = Math.fround(upv[i]);
    const d = Math.fround(dy[i]);
    const s = 1 / (1 + Math.exp(-g));
    ref[i] = g * s * u;
    refDU[i] = d * g * s;
    refDG[i] = d * u * s * (1 + g * (1 - s));
  }
  console.log(formatStats("swiglu vs f64", checkClose("swiglu", out[1], ref, F32)));
  console.log(formatStats("swiglu dGate vs f64", checkClose("dGate", dG[1], refDG, F32)));
  console.log(formatStats("swiglu dUp vs f64", checkClose("dUp", dU[1], refDU, F32)));
});

test("logprobGather and its backward: 2 threads = 1 thread bit for bit, f32 within tolerance of f64", () => {
  const rng = new Rng(2);
  const rows = 300;
  const cols = 512;
  const logits = randn(rng, rows * cols, 8);
  const targets = new Int32Array(rows);
  for (let r = 0; r < rows; r++) targets[r] = r % 17 === 0 ? -100 : rng.int(cols);
  const dLogp = randn(rng, rows);
  const p = { rows, cols, ignoreIndex: -100 };
  const [logp, lse] = both("logprobGather", [logits, targets], [rows, rows], (be, [l, t], [lp, ls]) => be.logprobGather(l, t, lp, ls, p));
  sameBits("logp", logp);
  sameBits("lse", lse);
  const [dL] = both("logprobGatherBackward", [logits, targets, Float64Array.from(lse[0]), dLogp], [rows * cols], (be, [l, t, ls, d], [o]) =>
    be.logprobGatherBackward(l, t, ls, d, o, p),
  );
  sameBits("dLogits", dL);
  const refLse = new Float64Array(rows);
  const refLogp = new Float64Array(rows);
  const refDL = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const row = Array.from(logits.subarray(r * cols, (r + 1) * cols), (x) => Math.fround(x));
    const max = Math.max(...row);
    const l = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
    refLse[r] = l;
    const t = targets[r];
    if (t === -100) continue;
    refLogp[r] = row[t] - l;
    const g = Math.fround(dLogp[r]);
    for (let j = 0; j < cols; j++) refDL[r * cols + j] = -g * Math.exp(row[j] - Math.fround(lse[0][r])) + (j === t ? g : 0);
  }
  console.log(formatStats("lse vs f64", checkClose("lse", lse[1], refLse, F32)));
  console.log(formatStats("logp vs f64", checkClose("logp", logp[1], refLogp, F32)));
  console.log(formatStats("dLogits vs f64", checkClose("dLogits", dL[1], refDL, F32)));
});

test("rmsnorm, rope and adamw: 2 threads = 1 thread bit for bit", () => {
  const rng = new Rng(3);
  const rows = 700;
  const dim = 64;
  const x = randn(rng, rows * dim, 3);
  const w = randn(rng, dim);
  const dy = randn(rng, rows * dim);
  const np = { rows, dim, eps: 1e-6 };
  const [out, rstd] = both("rmsnorm", [x, w], [rows * dim, rows], (be, [a, b], [o, r]) => be.rmsnorm(a, b, o, r, np));
  sameBits("rmsnorm out", out);
  sameBits("rmsnorm rstd", rstd);
  const [dx, dw] = both("rmsnormBackward", [x, w, Float64Array.from(rstd[0]), dy], [rows * dim, dim], (be, [a, b, r, d], [o, g]) =>
    be.rmsnormBackward(a, b, r, d, o, g, np),
  );
  sameBits("rmsnorm dx", dx);
  sameBits("rmsnorm dw", dw);
  // dw sums over 700 rows in chunk partials: check it against a plain f64 sum.
  const refDw = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < dim; j++) refDw[j] += Math.fround(dy[r * dim + j]) * Math.fround(x[r * dim + j]) * rstd[0][r];
  }
  console.log(formatStats("rmsnorm dw vs f64", checkClose("dw", dw[1], refDw, F32)));

  const tokens = 400;
  const heads = 4;
  const hd = 32;
  const pos = new Int32Array(tokens);
  for (let t = 0; t < tokens; t++) pos[t] = t % 150;
  const rp = { tokens, heads, dim: hd, theta: 10000, inverse: false };
  const [ro] = both("rope", [randn(rng, tokens * heads * hd), pos], [tokens * heads * hd], (be, [a, b], [o]) => be.rope(a, b, o, rp));
  sameBits("rope", ro);

  const n = 40_000;
  const [param, grad, m, v] = [randn(rng, n), randn(rng, n), randn(rng, n, 0.1), Float64Array.from(randn(rng, n, 0.01), Math.abs)];
  const ap = { n, lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 };
  // AdamW updates param, m and v in place: run it on fresh copies on each backend.
  const adam = (be: CpuBackend) => {
    const bufs = [param, grad, m, v].map((a) => up(be, a));
    const before = be.counters()["threads.adamw"] ?? 0;
    be.adamw(bufs[0], bufs[1], bufs[2], bufs[3], ap);
    assert.equal((be.counters()["threads.adamw"] ?? 0) - before, be === two ? 1 : 0, "adamw split");
    return bufs.map((b) => read(be, b));
  };
  const [a1, a2] = [adam(one), adam(two)];
  for (const [i, name] of ["param", "m", "v"].entries()) sameBits(`adamw ${name}`, [a1[i], a2[i]]);
});

test("attention forward and backward: 2 threads = 1 thread bit for bit, and both match the f64 reference", () => {
  const rng = new Rng(4);
  const layout = packedCausalLayout([150, 106, 200]);
  const T = layout.numTokens;
  const [H, Hkv, D] = [4, 2, 32];
  const c = { T, S: T, H, Hkv, D, scale: 1 / Math.sqrt(D) };
  const q = randn(rng, T * H * D);
  const k = randn(rng, T * Hkv * D);
  const v = randn(rng, T * Hkv * D);
  const dO = randn(rng, T * H * D);
  const p = { tokens: T, keys: T, heads: H, kvHeads: Hkv, headDim: D, scale: c.scale };
  const segs = [layout.segOffsets, layout.segStarts, layout.segEnds].map((a) => Int32Array.from(a));
  const [out, lse] = both("attention", [q, k, v, ...segs], [T * H * D, T * H], (be, [bq, bk, bv, o, s, e], [bo, bl]) =>
    be.attention(bq, bk, bv, { offsets: o, starts: s, ends: e }, bo, bl, p),
  );
  sameBits("attention out", out);
  sameBits("attention lse", lse);
  const grads = both(
    "attentionBackward",
    [q, k, v, ...segs, Float64Array.from(out[0]), Float64Array.from(lse[0]), dO],
    [T * H * D, T * Hkv * D, T * Hkv * D],
    (be, [bq, bk, bv, o, s, e, bo, bl, bdo], [dq, dk, dv]) =>
      be.attentionBackward(bq, bk, bv, { offsets: o, starts: s, ends: e }, bo, bl, bdo, dq, dk, dv, p),
  );
  for (const [i, name] of ["dq", "dk", "dv"].entries()) sameBits(`attention ${name}`, grads[i]);
  const f = (x: Float64Array) => Float64Array.from(x, Math.fround);
  const ref = attentionRef(c, denseMask(layout), f(q), f(k), f(v), f(dO));
  const tol = { atol: 2e-5, rtol: 2e-4 };
  console.log(formatStats("attention out vs f64", checkClose("out", out[1], ref.out, tol)));
  console.log(formatStats("attention lse vs f64", checkClose("lse", lse[1], ref.lse, tol)));
  console.log(formatStats("attention dq vs f64", checkClose("dq", grads[0][1], ref.dq, tol)));
  console.log(formatStats("attention dk vs f64", checkClose("dk", grads[1][1], ref.dk, tol)));
  console.log(formatStats("attention dv vs f64", checkClose("dv", grads[2][1], ref.dv, tol)));
});

test("attention backward bands: shared prompts merge, packed sequences split, unseen keys get zero gradients", () => {
  const tile = (t0: number, ranges: number[]) => ({ t0, t1: t0 + 1, ranges: Int32Array.from(ranges), span: 0, dense: false });
  // Two branches reading one prompt [0, 10): one band. A second sequence [40, 60): its own band.
  const bands = planBands([
    tile(0, [0, 10, 0]),
    tile(1, [0, 10, 0, 20, 30, 10]),
    tile(2, [0, 10, 0, 30, 40, 10]),
    tile(3, [40, 60, 0]),
    tile(4, []),
  ]);
  assert.deepEqual(bands, [
    { tiles: [0, 1, 2], k0: 0, k1: 40 },
    { tiles: [3], k0: 40, k1: 60 },
    { tiles: [4], k0: 0, k1: 0 },
  ]);

  // 300 new tokens after 40 cached keys that no token sees: dk/dv there must come out 0 even
  // though the output buffers start as NaN.
  const rng = new Rng(6);
  const past = 40;
  const lengths = [120, 180];
  const visible: Array<Array<[number, number]>> = [];
  let start = past;
  for (const n of lengths) {
    for (let i = 0; i < n; i++) visible.push([[start, start + i + 1]]);
    start += n;
  }
  const layout = segmentLayout(
    Int32Array.from(visible, (_, i) => i),
    visible,
    past + 300,
  );
  const [T, S, H, Hkv, D] = [300, past + 300, 4, 2, 32];
  const p = { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D, scale: 0.2 };
  const q = randn(rng, T * H * D);
  const kv = randn(rng, S * Hkv * D);
  const dO = randn(rng, T * H * D);
  const nan = new Float64Array(S * Hkv * D).fill(NaN);
  const run = (be: CpuBackend) => {
    const seg = { offsets: up(be, layout.segOffsets, "i32"), starts: up(be, layout.segStarts, "i32"), ends: up(be, layout.segEnds, "i32") };
    const [bq, bkv] = [up(be, q), up(be, kv)];
    const [out, lse] = [be.alloc("f32", T * H * D), be.alloc("f32", T * H)];
    be.attention(bq, bkv, bkv, seg, out, lse, p);
    const [dq, dk, dv] = [be.alloc("f32", T * H * D), up(be, nan), up(be, nan)];
    const before = be.counters()["threads.attentionBackward"] ?? 0;
    be.attentionBackward(bq, bkv, bkv, seg, out, lse, up(be, dO), dq, dk, dv, p);
    assert.equal((be.counters()["threads.attentionBackward"] ?? 0) - before, be === two ? 1 : 0);
    return [dq, dk, dv].map((b) => read(be, b));
  };
  const [r1, r2] = [run(one), run(two)];
  for (const [i, name] of ["dq", "dk", "dv"].entries()) sameBits(name, [r1[i], r2[i]]);
  for (const g of [r2[1], r2[2]]) {
    for (let i = 0; i < past * Hkv * D; i++) assert.equal(g[i], 0, `gradient ${i} of an unseen key`);
    for (let i = past * Hkv * D; i < S * Hkv * D; i++) assert.ok(Number.isFinite(g[i]) && g[i] !== 0, `gradient ${i} of a seen key`);
  }
});

test("worker threads really computed chunks", () => {
  const pool = sharedPool(1);
  console.log(`pool: ${pool.jobs} jobs, ${pool.workerChunks} chunks computed by the worker`);
  assert.equal(pool.broken, null);
  assert.ok(pool.workerChunks > 0, "no chunk was computed by a worker thread");
});

test("a task that throws in a worker is an InvariantError, and the pool stays usable", () => {
  const pool = sharedPool(1);
  const x = new Float32Array(new SharedArrayBuffer(64));
  // The caller's chunks are slow, so the worker takes some of the 8 and throws on each.
  const slow = () => {
    const t0 = performance.now();
    while (performance.now() - t0 < 10);
  };
  assert.throws(
    () => pool.run("noSuchTask", [x], {}, 8, slow),
    (e: unknown) => e instanceof InvariantError && /no task named noSuchTask/.test(e.message),
  );
  assert.equal(pool.broken, null);
  const before = pool.jobs;
  assert.equal(
    pool.run("swiglu", [x, x, x], { n: 16, chunk: 8 }, 2, () => {}),
    true,
  );
  assert.equal(pool.jobs, before + 1);
});

test("shared buffers are collected: 1.5 GiB of dropped buffers do not stay allocated", async () => {
  // V8 does not count shared memory towards its own collections (pool.ts allocShared), so
  // without the forced collection all 1.5 GiB would stay. The collection frees buffers on a
  // background thread, so the check polls for a while.
  const before = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 96; i++) two.alloc("f32", 4 << 20); // 16 MiB each, never touched
  let grown = Infinity;
  for (let wait = 0; wait < 40 && grown >= 2 ** 30; wait++) {
    await new Promise((r) => setTimeout(r, 50));
    grown = process.memoryUsage().arrayBuffers - before;
  }
  console.log(`array-buffer memory after 1.5 GiB of dropped allocations: +${(grown / 2 ** 20).toFixed(0)} MiB`);
  assert.ok(grown < 2 ** 30, `${grown} bytes still allocated`);
});

test("NPR_THREADS=1 turns worker threads off", () => {
  const code = [
    'import { CpuBackend } from "./src/tensor/backend/cpu/index.ts";',
    "const be = new CpuBackend({ useBlas: false });",
    "const b = be.alloc('f32', 100000);",
    "console.log(JSON.stringify({ threads: be.threads, why: be.whyNoThreads, shared: b.data.buffer instanceof SharedArrayBuffer }));",
  ].join("\n");
  const r = spawnSync(process.execPath, ["--input-type=module", "-e", code], {
    cwd: new URL("../..", import.meta.url).pathname,
    env: { ...process.env, NPR_THREADS: "1" },
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout.trim()), { threads: 1, why: "threads is 1", shared: false });
});
