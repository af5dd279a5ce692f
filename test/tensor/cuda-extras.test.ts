/**
 * What the CUDA backend offers beyond the Backend contract, on a GPU: scatterRows (the decode
 * graphs' paged KV write, negative slots skipped) against a host reference, views of a buffer
 * (one write fills several arguments; a view cannot be freed alone and dies with its parent), and
 * the collection of dropped buffers: buffers allocated and dropped without free() are freed by the
 * FinalizationRegistry once collected, so liveBytes returns to where it was; the decode GEMV
 * (bf16 x bf16 -> f32 matmuls, forced on for 1..16 rows) against a float64 host reference and cuBLAS;
 * the flash attention kernels (bf16 tensor-core tiles, forced on) against the f32 reference kernel
 * and the CPU backend on an NPR layout (branches, a token that sees nothing, a partial tile); the
 * RMSNorm backward at shapes that split dw over many row chunks and column tiles (the q/k-norm
 * shape's many rows, a partial column tile, one row) against a float64 host reference.
 * Skipped without a GPU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { bf16BitsToF32Array, toBf16Bits } from "../../src/tensor/dtype.ts";
import { Rng } from "../../src/util/rng.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import type { AttentionParams, Backend, DeviceBuffer } from "../../src/tensor/backend/types.ts";

const why = cudaUnavailable();

if (why) {
  test("cuda extras", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();

  test("decode GEMV (bf16 rows <= 16) matches a float64 reference and cuBLAS", () => {
    const rng = new Rng(12);
    // n = 37: a partial last block of 8 warps; k = 264: 33 chunks of 8, not a multiple of 32 lanes.
    const n = 37;
    const k = 264;
    const wBits = toBf16Bits(Float32Array.from({ length: n * k }, () => rng.normal()));
    const wv = bf16BitsToF32Array(wBits);
    const W = be.alloc("bf16", n * k);
    be.write(W, wBits);
    for (const m of [1, 2, 3, 4, 7, 8, 13, 16]) {
      const xBits = toBf16Bits(Float32Array.from({ length: m * k }, () => rng.normal()));
      const xv = bf16BitsToF32Array(xBits);
      const y0 = Float32Array.from({ length: m * n }, () => rng.normal());
      const X = be.alloc("bf16", m * k);
      be.write(X, xBits);
      const run = (maxRows: number, alpha: number, beta: number) => {
        const Y = be.alloc("f32", m * n);
        be.write(Y, y0);
        const keep = be.gemvMaxRows;
        be.gemvMaxRows = maxRows;
        be.matmul(X, W, Y, { batch: 1, m, n, k, transA: false, transB: true, strideA: 0, strideB: 0, strideC: 0, alpha, beta });
        be.gemvMaxRows = keep;
        const out = be.read(Y) as Float32Array;
        be.free(Y);
        return out;
      };
      const before = be.counters()["cuda.gemv"] ?? 0;
      const [alpha, beta] = m % 2 === 0 ? [1, 0] : [0.5, 2];
      const got = run(16, alpha, beta);
      assert.equal((be.counters()["cuda.gemv"] ?? 0) - before, 1, "the GEMV kernel ran");
      const blas = run(0, alpha, beta);
      let maxRef = 0,
        sumRef = 0,
        maxBlas = 0;
      for (let r = 0; r < m; r++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let i = 0; i < k; i++) s += xv[r * k + i]! * wv[j * k + i]!;
          const want = alpha * s + beta * y0[r * n + j]!;
          const d = Math.abs(got[r * n + j]! - want);
          maxRef = Math.max(maxRef, d);
          sumRef += d;
          maxBlas = Math.max(maxBlas, Math.abs(got[r * n + j]! - blas[r * n + j]!));
        }
      }
      console.log(
        `gemv m=${m}: max abs vs f64 ${maxRef.toExponential(2)}, mean ${(sumRef / (m * n)).toExponential(2)}, max vs cuBLAS ${maxBlas.toExponential(2)}`,
      );
      // Sums of 264 products of magnitude ~1 in fp32: a few 1e-6 at most.
      assert.ok(maxRef < 2e-4, `m=${m}: max abs diff ${maxRef} from the float64 reference`);
      assert.ok(maxBlas < 2e-4, `m=${m}: max abs diff ${maxBlas} from cuBLAS`);
      be.free(X);
    }
    be.free(W);
  });

  test("scatterRows writes rows into their slots and skips negative slots", () => {
    const rng = new Rng(4);
    const rows = 5;
    const row = 12;
    const pagesN = 10 * row;
    const src = Float32Array.from({ length: rows * row }, () => rng.normal());
    const init = Float32Array.from({ length: pagesN }, () => rng.normal());
    const slots = Int32Array.from([7, -1, 0, 3, -5]);
    const s = be.alloc("f32", src.length);
    const p = be.alloc("f32", pagesN);
    const blk = be.alloc("i32", 8);
    be.write(s, src);
    be.write(p, init);
    const sv = be.view(blk, 3, rows);
    be.write(blk, Int32Array.from([9, 9, 9, ...slots]));
    be.scatterRows(s, sv, p, { rows, rowSize: row });
    const want = init.slice();
    for (let r = 0; r < rows; r++) if (slots[r]! >= 0) want.set(src.subarray(r * row, (r + 1) * row), slots[r]! * row);
    const got = be.read(p) as Float32Array;
    let max = 0;
    for (let i = 0; i < pagesN; i++) max = Math.max(max, Math.abs(got[i]! - want[i]!));
    console.log(`scatterRows: max abs diff ${max}`);
    assert.equal(max, 0);
    assert.throws(() => be.free(sv), InvariantError);
    be.free(blk);
    assert.throws(() => be.read(sv), /used after free/);
    be.free(s);
    be.free(p);
  });

  test("dropped buffers are freed after collection (liveBytes returns)", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const before = be.liveBytes();
    const freed0 = be.counters()["cuda.gc.free"] ?? 0;
    (() => {
      for (let i = 0; i < 200; i++) be.alloc("f32", 1 << 16); // 256 KiB each, never freed
    })();
    const peak = be.liveBytes();
    assert.equal(peak - before, 200 * (1 << 18));
    for (let i = 0; i < 5 && be.liveBytes() > before; i++) {
      gc();
      await new Promise((r) => setImmediate(r));
    }
    const after = be.liveBytes();
    console.log(
      `liveBytes: before ${before}, after 200 dropped allocs ${peak}, after gc ${after}; gc frees ${(be.counters()["cuda.gc.free"] ?? 0) - freed0}`,
    );
    assert.equal(after, before);
  });

  test("flash attention (bf16 tiles) matches the f32 reference kernel and the CPU backend", () => {
    // An NPR-like packed layout: two sequences, each a causal prompt, 3 sibling branches that see
    // the prompt and themselves only, and a summary that sees everything of its sequence. Token 0
    // of the second sequence sees no key (out 0, lse -inf, no gradient). T = 239: a partial tile.
    const segs: Array<Array<[number, number]>> = [];
    let base = 0;
    for (const [prompt, branch, summary] of [
      [70, 30, 11],
      [40, 9, 1],
    ]) {
      for (let i = 0; i < prompt; i++) segs.push(base === 0 || i > 0 ? [[base, base + i + 1]] : []);
      for (let b = 0; b < 3; b++) {
        const b0 = base + prompt + b * branch;
        for (let i = 0; i < branch; i++)
          segs.push([
            [base, base + prompt],
            [b0, b0 + i + 1],
          ]);
      }
      const s0 = base + prompt + 3 * branch;
      for (let i = 0; i < summary; i++) segs.push([[base, s0 + i + 1]]);
      base = s0 + summary;
    }
    const T = segs.length;
    assert.equal(T, 239);
    const offsets = [0];
    const starts: number[] = [];
    const ends: number[] = [];
    for (const list of segs) {
      for (const [a, b] of list) {
        starts.push(a);
        ends.push(b);
      }
      offsets.push(starts.length);
    }
    const cpu = new CpuBackend({ useBlas: false });
    const rng = new Rng(31);
    for (const [H, Hkv, D] of [
      [4, 2, 64],
      [3, 1, 128],
    ]) {
      const p: AttentionParams = { tokens: T, keys: T, heads: H, kvHeads: Hkv, headDim: D, scale: 1 / Math.sqrt(D) };
      const rnd = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
      const host = { q: rnd(T * H * D), k: rnd(T * Hkv * D), v: rnd(T * Hkv * D), dO: rnd(T * H * D) };
      const run = (b: Backend) => {
        const put = (x: Float32Array) => {
          const buf = b.alloc("f32", x.length);
          b.write(buf, x);
          return buf;
        };
        const ints = (x: number[]) => {
          const buf = b.alloc("i32", Math.max(1, x.length));
          b.write(buf, Int32Array.from(x));
          return buf;
        };
        const seg = { offsets: ints(offsets), starts: ints(starts), ends: ints(ends) };
        const [q, k, v, dO] = [put(host.q), put(host.k), put(host.v), put(host.dO)];
        const o = b.alloc("f32", T * H * D),
          lse = b.alloc("f32", T * H);
        const dq = b.alloc("f32", T * H * D),
          dk = b.alloc("f32", T * Hkv * D),
          dv = b.alloc("f32", T * Hkv * D);
        b.attention(q, k, v, seg, o, lse, p);
        b.attentionBackward(q, k, v, seg, o, lse, dO, dq, dk, dv, p);
        const rd = (x: DeviceBuffer) => b.read(x) as Float32Array;
        return { out: rd(o), lse: rd(lse), dq: rd(dq), dk: rd(dk), dv: rd(dv) };
      };
      const ref = run(cpu);
      be.attentionKernel = "reference";
      const f32 = run(be);
      be.attentionKernel = "flash";
      const before = be.counters()["cuda.flash"] ?? 0;
      const got = run(be);
      be.attentionKernel = "auto";
      assert.equal((be.counters()["cuda.flash"] ?? 0) - before, 2, "the flash kernels ran (forward and backward)");
      for (const key of ["out", "lse", "dq", "dk", "dv"] as const) {
        // bf16 operands (8-bit mantissa): error ~1e-2 of the values' scale; f32 reference ~1e-6.
        let scaleRef = 0,
          maxF = 0,
          sumF = 0,
          maxR = 0,
          n = 0;
        for (let i = 0; i < ref[key].length; i++) {
          const r = ref[key][i];
          if (!Number.isFinite(r)) {
            assert.equal(got[key][i], r, `${key}[${i}]: flash gives ${got[key][i]} where the reference gives ${r}`);
            continue;
          }
          scaleRef = Math.max(scaleRef, Math.abs(r));
          const d = Math.abs(got[key][i] - r);
          maxF = Math.max(maxF, d);
          sumF += d;
          maxR = Math.max(maxR, Math.abs(f32[key][i] - r));
          n++;
        }
        console.log(
          `flash H=${H} Hkv=${Hkv} D=${D} ${key}: max|ref| ${scaleRef.toExponential(2)}, flash max abs diff ${maxF.toExponential(2)} mean ${(sumF / n).toExponential(2)}, f32 kernel max ${maxR.toExponential(2)}`,
        );
        assert.ok(maxF <= 3e-2 * Math.max(1, scaleRef), `${key}: flash max abs diff ${maxF} vs max|ref| ${scaleRef}`);
        assert.ok(maxR <= 1e-4 * Math.max(1, scaleRef), `${key}: f32 kernel max abs diff ${maxR}`);
      }
      // The token that sees nothing: out 0, lse -inf, dq 0 on the flash path.
      const t = 70 + 90 + 11;
      assert.equal(got.lse[t * H], -Infinity);
      assert.equal(got.out[t * H * D], 0);
      assert.equal(got.dq[t * H * D], 0);
    }
  });

  test("rmsnormBackward over many rows and partial column tiles matches a float64 reference", () => {
    const rng = new Rng(21);
    // [5000, 128]: ~157 row chunks of 4 column tiles (the q/k norms' shape, fewer rows);
    // [333, 1000]: a partial last tile of 8 columns and a partial last chunk; [1, 7] and [3, 40].
    for (const dt of ["f32", "f64"] as const) {
      for (const [rows, dim] of [
        [5000, 128],
        [333, 1000],
        [1, 7],
        [3, 40],
      ] as const) {
        const x = Float64Array.from({ length: rows * dim }, () => rng.normal());
        const w = Float64Array.from({ length: dim }, () => 1 + 0.5 * rng.normal());
        const dy = Float64Array.from({ length: rows * dim }, () => rng.normal());
        const rstd = Float64Array.from({ length: rows }, () => rng.uniform(0.5, 1.5));
        const up = (a: Float64Array) => {
          const b = be.alloc(dt, a.length);
          be.write(b, dt === "f32" ? Float32Array.from(a) : a);
          return b;
        };
        // The inputs as the device holds them (f32-rounded in f32), so the reference sees the same values.
        const xs = dt === "f32" ? Float64Array.from(Float32Array.from(x)) : x;
        const ws = dt === "f32" ? Float64Array.from(Float32Array.from(w)) : w;
        const dys = dt === "f32" ? Float64Array.from(Float32Array.from(dy)) : dy;
        const rs = dt === "f32" ? Float64Array.from(Float32Array.from(rstd)) : rstd;
        const [X, W, DY, R] = [up(x), up(w), up(dy), up(rstd)];
        const DX = be.alloc(dt, rows * dim);
        const DW = be.alloc(dt, dim);
        be.rmsnormBackward(X, W, R, DY, DX, DW, { rows, dim, eps: 1e-6 });
        const dw = be.read(DW);
        const dx = be.read(DX);
        let maxW = 0,
          sumW = 0,
          maxX = 0;
        for (let j = 0; j < dim; j++) {
          let s = 0;
          for (let r = 0; r < rows; r++) s += dys[r * dim + j]! * xs[r * dim + j]! * rs[r]!;
          const d = Math.abs(dw[j]! - s) / Math.max(1, Math.abs(s));
          maxW = Math.max(maxW, d);
          sumW += d;
        }
        for (let r = 0; r < rows; r++) {
          let dot = 0;
          for (let j = 0; j < dim; j++) dot += dys[r * dim + j]! * ws[j]! * xs[r * dim + j]!;
          const c = (rs[r]! ** 3 * dot) / dim;
          for (let j = 0; j < dim; j++) {
            const want = rs[r]! * ws[j]! * dys[r * dim + j]! - xs[r * dim + j]! * c;
            maxX = Math.max(maxX, Math.abs(dx[r * dim + j]! - want) / Math.max(1, Math.abs(want)));
          }
        }
        console.log(
          `rmsnormBackward ${dt} [${rows}, ${dim}]: dw max rel ${maxW.toExponential(2)}, mean ${(sumW / dim).toExponential(2)}; dx max rel ${maxX.toExponential(2)}`,
        );
        // Double accumulation, one rounding to the output dtype.
        const tol = dt === "f32" ? 1e-6 : 1e-13;
        assert.ok(maxW < tol, `${dt} [${rows}, ${dim}]: dw off by ${maxW}`);
        assert.ok(maxX < tol, `${dt} [${rows}, ${dim}]: dx off by ${maxX}`);
        for (const b of [X, W, DY, R, DX, DW]) be.free(b);
      }
    }
  });
}
