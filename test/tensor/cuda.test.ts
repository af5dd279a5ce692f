/**
 * The CUDA backend: the shared conformance suite (backend.case.ts) on the GPU in f32, f64 and bf16,
 * each op against the float64 references with per-op tolerances; then what only this backend
 * promises: the GPU path really ran (kernel launches and cuBLAS calls counted), bad ids surface at
 * the next read as InvariantErrors naming the op, and a captured CUDA graph replays. Without a GPU
 * (no libcuda, no device, no NVRTC or cuBLAS) every test is skipped with the reason.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats } from "../util/check-close.ts";
import { runBackendSuite } from "./backend.case.ts";

const why = cudaUnavailable();

if (why) {
  test("cuda backend", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  let backend: CudaBackend | undefined;
  const get = (): CudaBackend => (backend ??= new CudaBackend());
  runBackendSuite("cuda", get, { dtypes: ["f32", "f64", "bf16"] });

  describe("cuda backend specifics", () => {
    test("the GPU path ran: kernels launched and cuBLAS called", (t) => {
      const c = get().counters();
      t.diagnostic(`device ${get().device.name} (${get().arch}); counters ${JSON.stringify(c)}`);
      assert.ok((c["cuda.launch"] ?? 0) > 100, `cuda.launch = ${c["cuda.launch"]}`);
      assert.ok((c["cublas.gemm"] ?? 0) > 10, `cublas.gemm = ${c["cublas.gemm"]}`);
      assert.ok((c["cuda.compile"] ?? 0) + (c["cuda.compile.cached"] ?? 0) >= 8, "all 8 kernel units were loaded");
    });

    test("an id outside the table surfaces at the next read, naming the op", () => {
      const be = get();
      const table = be.alloc("f32", 4 * 3);
      be.write(table, new Float32Array(12).fill(1));
      const ids = be.alloc("i32", 3);
      be.write(ids, Int32Array.from([0, 7, 1]));
      const out = be.alloc("f32", 9);
      be.embedding(table, ids, out, { n: 3, dim: 3 });
      assert.throws(
        () => be.read(out),
        (e: unknown) => e instanceof InvariantError && /embedding: an id is outside/.test(e.message) && /element 1 is 7/.test(e.message),
      );
      // The status word is cleared: the next read is fine.
      assert.equal(be.read(out, 0, 3)[0], 1);
      for (const b of [table, ids, out]) be.free(b);
    });

    test("a captured graph replays its kernels (exp then x 2, twice)", (t) => {
      const be = get();
      const rng = new Rng(7);
      const n = 1000;
      const x0 = Float32Array.from({ length: n }, () => rng.normal() * 0.1);
      const x = be.alloc("f32", n);
      const y = be.alloc("f32", n);
      be.write(x, x0);
      // Warm the kernels once outside the capture (module loads cannot be captured).
      be.unary("exp", x, y);
      be.scalar("mul", y, 1, y);
      const g = be.captureGraph(() => {
        be.unary("exp", x, y);
        be.scalar("mul", y, 2, x);
      });
      g.replay();
      g.replay();
      const expected = Array.from(x0, (v) => 2 * Math.exp(2 * Math.exp(v)));
      const stats = checkClose("graph replay", be.read(x), expected, { atol: 1e-5, rtol: 1e-5 });
      t.diagnostic(formatStats("graph replay", stats));
      g.destroy();
      be.free(x);
      be.free(y);
    });
  });
}
