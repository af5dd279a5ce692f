/**
 * What the CUDA backend offers beyond the Backend contract, on a GPU: scatterRows (the decode
 * graphs' paged KV write, negative slots skipped) against a host reference, views of a buffer
 * (one write fills several arguments; a view cannot be freed alone and dies with its parent), and
 * the collection of dropped buffers: buffers allocated and dropped without free() are freed by the
 * FinalizationRegistry once collected, so liveBytes returns to where it was; the decode GEMV
 * (bf16 x bf16 -> f32 matmuls, forced on for 1..16 rows) against a float64 host reference and cuBLAS.
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
      let maxRef = 0, sumRef = 0, maxBlas = 0;
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
      console.log(`gemv m=${m}: max abs vs f64 ${maxRef.toExponential(2)}, mean ${(sumRef / (m * n)).toExponential(2)}, max vs cuBLAS ${maxBlas.toExponential(2)}`);
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
    console.log(`liveBytes: before ${before}, after 200 dropped allocs ${peak}, after gc ${after}; gc frees ${(be.counters()["cuda.gc.free"] ?? 0) - freed0}`);
    assert.equal(after, before);
  });
}
