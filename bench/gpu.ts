/**
 * GPU micro-benchmarks of the CUDA backend's building blocks, on the GPU host, one JSON line each:
 *   gemm    cuBLAS strided-batched GEMM (bf16 in/out with fp32 accumulation, and f32), n^3, TFLOP/s
 *   copy    device-to-device copy bandwidth, GB/s counting bytes read and written
 *   launch  host cost of one backend op (argument checks + koffi + cuLaunchKernel), us
 *   graph   device time per kernel inside a replayed CUDA graph, us
 * Issue 6's parts (a)-(d) (decode roofline, transformers generate, NPR parallel decode, training
 * throughput) need the engine and the bf16 model path and are not measured here yet.
 *
 *   node bench/gpu.ts [--n 8192] [--iters 20]
 */
import { parseArgs } from "node:util";
import { CudaBackend } from "../src/tensor/backend/cuda/index.ts";
import { Cublas, type GemmType } from "../src/tensor/backend/cuda/ffi/cublas.ts";
import { Rng } from "../src/util/rng.ts";

const { values } = parseArgs({ options: { n: { type: "string", default: "8192" }, iters: { type: "string", default: "20" } } });
const N = Number(values.n);
const ITERS = Number(values.iters);

const be = new CudaBackend();
const drv = be.driver;
// The micro-benchmarks drive cuBLAS and copies on the legacy default stream (0) directly: the
// backend's own stream is private, and its ops add host checks that are measured separately.
const blas = Cublas.load(0).cublas!;
const out = (o: Record<string, unknown>) => console.log(JSON.stringify({ device: be.device.name, ...o }));

/** Milliseconds of `iters` runs of fn on stream 0, after `warm` untimed runs. */
function timeMs(fn: () => void, iters: number, warm = 3): number {
  for (let i = 0; i < warm; i++) fn();
  const a = drv.eventCreate();
  const b = drv.eventCreate();
  drv.eventRecord(a, 0);
  for (let i = 0; i < iters; i++) fn();
  drv.eventRecord(b, 0);
  drv.eventSynchronize(b);
  const ms = drv.eventElapsedMs(a, b);
  drv.eventDestroy(a);
  drv.eventDestroy(b);
  return ms / iters;
}

/** A device buffer of `count` random elements (bf16 bit patterns or f32), filled from a small pool. */
function randomDevice(type: GemmType, count: number, rng: Rng): number {
  const bytes = type === "bf16" ? 2 : 4;
  const ptr = drv.allocAsync(count * bytes, 0);
  const chunk = 1 << 20;
  const pool = new Float32Array(chunk).map(() => rng.normal());
  const host = type === "bf16" ? new Uint16Array(chunk) : pool;
  if (type === "bf16") {
    const u32 = new Uint32Array(pool.buffer);
    for (let i = 0; i < chunk; i++) host[i] = u32[i] >>> 16; // truncation to bf16 is fine for timing
  }
  for (let off = 0; off < count; off += chunk) {
    const n = Math.min(chunk, count - off);
    drv.htod(ptr + off * bytes, host.subarray(0, n), n * bytes);
  }
  return ptr;
}

// ---- gemm
const rng = new Rng(1);
for (const type of ["bf16", "f32"] as const) {
  const a = randomDevice(type, N * N, rng);
  const b = randomDevice(type, N * N, rng);
  const c = drv.allocAsync(N * N * (type === "bf16" ? 2 : 4), 0);
  const ms = timeMs(() => blas.gemm({ type, batch: 1, m: N, n: N, k: N, transA: false, transB: true, a, b, c, strideA: 0, strideB: 0, strideC: 0, alpha: 1, beta: 0 }), ITERS);
  out({ bench: "gemm", type, n: N, ms, tflops: (2 * N ** 3) / (ms * 1e-3) / 1e12 });
  for (const p of [a, b, c]) drv.freeAsync(p, 0);
}

// ---- copy
{
  const bytes = 2 ** 30;
  const src = drv.allocAsync(bytes, 0);
  const dst = drv.allocAsync(bytes, 0);
  const ms = timeMs(() => drv.dtodAsync(dst, src, bytes, 0), ITERS);
  out({ bench: "copy", bytes, ms, gbps: (2 * bytes) / (ms * 1e-3) / 1e9 });
  drv.freeAsync(src, 0);
  drv.freeAsync(dst, 0);
}

// ---- launch (host cost of a backend op) and graph replay (device cost per kernel)
{
  const x = be.alloc("f32", 256);
  be.write(x, new Float32Array(256).fill(1));
  be.scalar("mul", x, 1, x); // compile and load the module outside the timings
  be.synchronize();
  const ops = 20000;
  let t0 = performance.now();
  for (let i = 0; i < ops; i++) be.scalar("mul", x, 1, x);
  const hostUs = ((performance.now() - t0) * 1e3) / ops;
  be.synchronize();
  const wallUs = ((performance.now() - t0) * 1e3) / ops;
  out({ bench: "launch", ops, host_us_per_op: hostUs, wall_us_per_op: wallUs });

  const perGraph = 1000;
  const g = be.captureGraph(() => {
    for (let i = 0; i < perGraph; i++) be.scalar("mul", x, 1, x);
  });
  g.replay();
  be.synchronize();
  t0 = performance.now();
  const reps = 20;
  for (let i = 0; i < reps; i++) g.replay();
  be.synchronize();
  const us = ((performance.now() - t0) * 1e3) / (reps * perGraph);
  out({ bench: "graph", kernels_per_graph: perGraph, replays: reps, us_per_kernel: us });
  g.destroy();
  be.free(x);
}
