/**
 * GPU micro-benchmarks of the CUDA backend's building blocks, on the GPU host, one JSON line each:
 *   gemm    cuBLAS strided-batched GEMM (bf16 in/out with fp32 accumulation, and f32), n^3, TFLOP/s
 *   copy    device-to-device copy bandwidth, GB/s counting bytes read and written
 *   launch  host cost of one backend op (argument checks + koffi + cuLaunchKernel), us
 *   graph   device time per kernel inside a replayed CUDA graph, us
 * With --decode DIR (a checkpoint written by bench/hf_parity.py, e.g. the 4b shape), issue 6's
 *   (a) decode   batch-1 greedy decode in mixed precision (bf16 weights), tokens/s against the
 *                bandwidth roofline: bytes read per step / the copy bandwidth measured above
 *   (b) hf       with --hf, bench/hf_generate.py on the same checkpoint, prompt and lengths
 * Parts (c) (NPR parallel vs sequential decode) and (d) (training throughput) are not here yet.
 *
 *   node bench/gpu.ts [--n 8192] [--iters 20] [--decode DIR [--prompt 32] [--steps 128] [--hf]]
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { loadQwen3, qwen3ParamSpecs } from "../src/model/index.ts";
import { causalLayout } from "../src/util/layout.ts";
import { CudaBackend } from "../src/tensor/backend/cuda/index.ts";
import { Cublas, type GemmType } from "../src/tensor/backend/cuda/ffi/cublas.ts";
import { Rng } from "../src/util/rng.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "8192" }, iters: { type: "string", default: "20" },
    decode: { type: "string" }, prompt: { type: "string", default: "32" }, steps: { type: "string", default: "128" }, hf: { type: "boolean", default: false },
  },
});
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
let copyGbps = 0;
{
  const bytes = 2 ** 30;
  const src = drv.allocAsync(bytes, 0);
  const dst = drv.allocAsync(bytes, 0);
  const ms = timeMs(() => drv.dtodAsync(dst, src, bytes, 0), ITERS);
  copyGbps = (2 * bytes) / (ms * 1e-3) / 1e9;
  out({ bench: "copy", bytes, ms, gbps: copyGbps });
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

// ---- (a) batch-1 decode in mixed precision, against the bandwidth roofline
function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
  return best;
}

if (values.decode) {
  const dir = values.decode;
  const P = Number(values.prompt);
  const steps = Number(values.steps);
  let t0 = performance.now();
  const model = loadQwen3(dir, { backend: be, dtype: "bf16", requiresGrad: false });
  const loadS = (performance.now() - t0) / 1000;
  const c = model.config;
  const prompt = Int32Array.from((JSON.parse(readFileSync(path.join(dir, "ids.json"), "utf8")) as number[]).slice(0, P));
  /** Greedy decode of n tokens after the prompt; returns the tokens and the decode seconds. */
  const decode = (n: number): { tokens: number[]; s: number } => {
    const kv = model.newKVCache(P + n + 1);
    let logits = model.forward(prompt, causalLayout(P), kv);
    let next = argmax(logits.toArray().subarray((P - 1) * c.vocabSize));
    const tokens = [next];
    const start = performance.now();
    for (let i = 1; i < n; i++) {
      logits.dispose();
      logits = model.forward([next], causalLayout(1, kv.length), kv);
      next = argmax(logits.toArray()); // the read synchronizes: each step is timed to its end
      tokens.push(next);
    }
    logits.dispose();
    return { tokens, s: (performance.now() - start) / 1000 };
  };
  decode(4); // warm-up: kernel loads, cuBLAS heuristics
  const launches0 = be.counters()["cuda.launch"] ?? 0;
  const r = decode(steps + 1);
  const launchesPerStep = ((be.counters()["cuda.launch"] ?? 0) - launches0) / (steps + 1);
  const tokPerS = steps / r.s;
  // Bytes one decode step must read: every parameter once (bf16 matrices, f32 vectors; a tied
  // head counted once) plus the f32 KV cache at the average length.
  let weightBytes = 0;
  for (const spec of qwen3ParamSpecs(c)) {
    const t = model.param(spec.name);
    weightBytes += t.size * (t.dtype === "bf16" ? 2 : 4);
  }
  const kvBytes = 2 * c.numHiddenLayers * c.numKeyValueHeads * c.headDim * 4 * (P + steps / 2);
  const rooflineTokPerS = (copyGbps * 1e9) / (weightBytes + kvBytes);
  out({
    bench: "decode", dir: path.basename(dir), layers: c.numHiddenLayers, hidden: c.hiddenSize, prompt: P, steps, load_s: loadS,
    s: r.s, ms_per_token: (1000 * r.s) / steps, tokens_per_s: tokPerS, bytes_per_step: weightBytes + kvBytes,
    roofline_tokens_per_s: rooflineTokPerS, fraction_of_roofline: tokPerS / rooflineTokPerS, first_tokens: r.tokens.slice(0, 16),
    kernel_launches_per_token: Math.round(launchesPerStep),
  });
  if (values.hf) {
    // ---- (b) transformers generate, same checkpoint, prompt and lengths, in this run
    const script = path.join(path.dirname(new URL(import.meta.url).pathname), "hf_generate.py");
    const line = execFileSync("python3", [script, "--dir", dir, "--prompt", String(P), "--steps", String(steps)], { encoding: "utf8" }).trim().split("\n").pop()!;
    const hf = JSON.parse(line) as { tokens_per_s: number };
    out({ ...hf, npr_over_hf: tokPerS / hf.tokens_per_s });
  }
}
