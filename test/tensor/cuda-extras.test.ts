/**
 * What the CUDA backend offers beyond the Backend contract, on a GPU: scatterRows (the decode
 * graphs' paged KV write, negative slots skipped) against a host reference, views of a buffer
 * (one write fills several arguments; a view cannot be freed alone and dies with its parent), and
 * the collection of dropped buffers: buffers allocated and dropped without free() are freed by the
 * FinalizationRegistry once collected, so liveBytes returns to where it was. Skipped without a GPU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";

const why = cudaUnavailable();

if (why) {
  test("cuda extras", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();

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
