/**
 * GPU micro-benchmarks of the CUDA backend's building blocks, on the GPU host, one JSON line each:
 *   gemm    cuBLAS strided-batched GEMM (bf16 in/out with fp32 accumulation, and f32), n^3, TFLOP/s
 *   copy    device-to-device copy bandwidth, GB/s counting bytes read and written
 *   launch  host cost of one backend op (argument checks + koffi + cuLaunchKernel), us
 *   graph   device time per kernel inside a replayed CUDA graph, us
 * With --decode DIR (a checkpoint written by bench/hf_parity.py, e.g. the 4b shape), issue 6's
 *   (a) decode       batch-1 greedy decode in mixed precision (bf16 weights), tokens/s against the
 *                    bandwidth roofline: bytes read per step / the copy bandwidth measured above;
 *                    "decode" is the generic path (one launch per op), "decode_graph" the engine's
 *                    GraphDecoder (paged KV, one replayed CUDA graph per token)
 *   (b) hf           with --hf, bench/hf_generate.py on the same checkpoint, prompt and lengths
 *   (c) npr          with --npr BxL, the engine on a forced structure of B branches x L tokens,
 *                    parallel vs sequential mode, same serialized tokens, greedy
 *   memory           with --gc-steps N, N generic decode steps that drop their intermediates,
 *                    yielding between steps: the backend's live device bytes must stay flat
 * Part (d) (training throughput) is bench/gpu-train.ts (it needs the whole device for the 0.6B shape).
 *
 *   gemm_graph       with --gemm-graph, the step's GEMMs alone as one graph (device time), the
 *                    backend's decode GEMV against cuBLAS at 1, 4, 8 and 16 rows
 * --no-collect turns off the backend's collection of dropped buffers (for comparison).
 *
 *   node bench/gpu.ts [--n 8192] [--iters 20] [--decode DIR [--prompt 32] [--steps 128] [--hf] [--npr 8x512] [--gc-steps 64] [--gemm-graph] [--no-collect]]
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { PagedKVStorage, loadQwen3, pagedForward, qwen3ParamSpecs } from "../src/model/index.ts";
import { Engine, ModelRunner, engineVocab, forcedMaxPlans, parseForceStructure } from "../src/engine/index.ts";
import { GraphDecoder } from "../src/engine/graph-decode.ts";
import type { PlanItem } from "../src/engine/index.ts";
import { noGrad } from "../src/tensor/index.ts";
import { byteTokenizer } from "../src/tokenizer/index.ts";
import { causalLayout } from "../src/util/layout.ts";
import { CudaBackend } from "../src/tensor/backend/cuda/index.ts";
import { Cublas, type GemmType } from "../src/tensor/backend/cuda/ffi/cublas.ts";
import { Rng } from "../src/util/rng.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "8192" }, iters: { type: "string", default: "20" },
    decode: { type: "string" }, prompt: { type: "string", default: "32" }, steps: { type: "string", default: "128" }, hf: { type: "boolean", default: false },
    npr: { type: "string" }, "no-collect": { type: "boolean", default: false }, "gemm-graph": { type: "boolean", default: false }, "gc-steps": { type: "string", default: "0" },
  },
});
const N = Number(values.n);
const ITERS = Number(values.iters);

const be = new CudaBackend({ collect: !values["no-collect"] });
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
  // ---- (a) again through the engine's GraphDecoder: paged KV, one CUDA graph replay per token
  /** Slot ranges [0, len) of a table whose blocks are 0, 1, 2, ... (one sequence from slot 0). */
  const table = (len: number, bs: number) => {
    const blocks: number[] = [];
    const starts: number[] = [];
    const ends: number[] = [];
    for (let b = 0; b * bs < len; b++) {
      blocks.push(b);
      starts.push(0);
      ends.push(Math.min(bs, len - b * bs));
    }
    return { blocks, starts, ends };
  };
  const graphDecode = (n: number, warm: number): { tokens: number[]; s: number; launches: number; dec: GraphDecoder } => {
    const bs = 16;
    const storage = new PagedKVStorage(model, Math.ceil((P + n + warm + 1) / bs) + 1, bs);
    const dec = new GraphDecoder(model, storage);
    const pos0 = Array.from({ length: P }, (_, i) => i);
    const pre = noGrad(() => pagedForward(model, storage, [{ ids: prompt, positions: pos0, writeSlots: pos0, visible: table(0, bs) }]));
    let next = argmax(pre.toArray().subarray((P - 1) * c.vocabSize));
    pre.dispose();
    const tokens = [next];
    let start = 0;
    let l0 = 0;
    for (let i = 1; i < n + warm; i++) {
      if (i === warm) {
        start = performance.now();
        l0 = be.counters()["cuda.launch"] ?? 0;
      }
      const p = P + i - 1;
      const item: PlanItem = { seqId: 0, ids: [next], positions: [p], writeSlots: Int32Array.of(p), visible: table(p, bs), sample: null };
      next = argmax(dec.run([item]));
      tokens.push(next);
    }
    const sec = (performance.now() - start) / 1000;
    // Replay alone (the last bucket's graph, inputs unchanged): device time of one step.
    const t0r = performance.now();
    for (let i = 0; i < 20; i++) dec.replayOnly(1);
    be.synchronize();
    out({ bench: "decode_graph_replay_only", ms_per_step: (performance.now() - t0r) / 20 });
    const launches = ((be.counters()["cuda.launch"] ?? 0) - l0) / (n + warm - warm);
    dec.dispose();
    storage.dispose();
    return { tokens, s: sec, launches, dec };
  };
  if (values["gemm-graph"]) {
    // Device time of the step's GEMMs alone (same shapes, bf16 weights, f32 out), as one graph.
    const x16 = be.alloc("bf16", 16 * Math.max(c.hiddenSize, c.intermediateSize, c.numAttentionHeads * c.headDim));
    be.fill(x16, 0.01);
    const y = be.alloc("f32", 16 * c.vocabSize);
    const gemms: Array<[string, number, number]> = [];
    for (let l = 0; l < c.numHiddenLayers; l++) {
      for (const k of ["q_proj", "k_proj", "v_proj", "o_proj"]) gemms.push([`model.layers.${l}.self_attn.${k}.weight`, 0, 0]);
      for (const k of ["gate_proj", "up_proj", "down_proj"]) gemms.push([`model.layers.${l}.mlp.${k}.weight`, 0, 0]);
    }
    gemms.push([c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight", 0, 0]);
    // The backend's decode GEMV (gemvMaxRows 16) against cuBLAS (0), at 1 and more rows.
    for (const [kernel, maxRows, m] of [["gemv", 16, 1], ["cublas", 0, 1], ["gemv", 16, 4], ["cublas", 0, 4], ["gemv", 16, 8], ["cublas", 0, 8], ["gemv", 16, 16], ["cublas", 0, 16]] as const) {
      const keep = be.gemvMaxRows;
      be.gemvMaxRows = maxRows;
      const body = () => {
        for (const [name] of gemms) {
          const w = model.param(name);
          const [n, k] = w.shape as [number, number];
          be.matmul(x16, w.buffer, y, { batch: 1, m, n, k, transA: false, transB: true, strideA: 0, strideB: 0, strideC: 0 });
        }
      };
      body();
      const gg = be.captureGraph(body);
      gg.replay();
      be.synchronize();
      const t0g = performance.now();
      for (let i = 0; i < 20; i++) gg.replay();
      be.synchronize();
      const ms = (performance.now() - t0g) / 20;
      out({ bench: "gemm_graph", kernel, rows: m, gemms: gemms.length, ms_per_step: ms, weight_gb_s: weightBytes / ms / 1e6 });
      gg.destroy();
      be.gemvMaxRows = keep;
    }
  }
  const WARM = 3;
  const g = graphDecode(steps, WARM); // steps timed after WARM untimed ones (eager first step + capture)
  const gTokPerS = steps / g.s;
  let agree = 0;
  while (agree < r.tokens.length && r.tokens[agree] === g.tokens[agree]) agree++;
  out({
    bench: "decode_graph", steps, s: g.s, ms_per_token: (1000 * g.s) / steps, tokens_per_s: gTokPerS,
    roofline_tokens_per_s: rooflineTokPerS, fraction_of_roofline: gTokPerS / rooflineTokPerS, speedup_over_generic: gTokPerS / tokPerS,
    host_launches_per_token: g.launches, graph_captures: g.dec.captures, graph_replays: g.dec.replays,
    tokens_agreeing_with_generic: agree, of: r.tokens.length, first_tokens: g.tokens.slice(0, 16),
  });
  if (values.hf) {
    // ---- (b) transformers generate, same checkpoint, prompt and lengths, in this run
    const script = path.join(path.dirname(new URL(import.meta.url).pathname), "hf_generate.py");
    const line = execFileSync("python3", [script, "--dir", dir, "--prompt", String(P), "--steps", String(steps)], { encoding: "utf8" }).trim().split("\n").pop()!;
    const hf = JSON.parse(line) as { tokens_per_s: number };
    out({ ...hf, npr_over_hf: tokPerS / hf.tokens_per_s, npr_graph_over_hf: gTokPerS / hf.tokens_per_s });
  }

  if (values.npr) {
    // ---- (c) NPR forced structure, parallel vs sequential, greedy, same serialized tokens
    const structure = parseForceStructure(values.npr);
    const tok = byteTokenizer();
    const vocab = engineVocab(tok, c.vocabSize);
    const chat = tok.encodeChat([{ role: "user", content: "Benchmark prompt: add the numbers 1 to 10, in parallel." }]);
    const run = (mode: "parallel" | "sequential", graphs: boolean) => {
      const numBlocks = 1024;
      const runner = new ModelRunner(model, numBlocks, 16, { graphDecode: graphs });
      const engine = new Engine(runner, vocab, { numBlocks, blockSize: 16, maxBatchTokens: 512 });
      const t0 = performance.now();
      const [res] = engine.generateSync([chat], { mode, temperature: 0, maxNewTokens: 100_000, minForkBudget: 0, forceStructure: structure, maxPlans: forcedMaxPlans(structure) });
      const sec = (performance.now() - t0) / 1000;
      const stats = { steps: runner.steps, graphSteps: runner.decoder?.steps ?? 0 };
      engine.dispose();
      if (res!.finishReason !== "stop" || res!.malformed !== null) throw new Error(`npr ${mode}: ${res!.finishReason} ${res!.malformed}`);
      return { tokens: res!.stats.serializedTokens, critical: res!.stats.criticalPathTokens, s: sec, ...stats };
    };
    run("parallel", true); // warm-up: every bucket's graph captured once per runner anyway
    const seq = run("sequential", true);
    const par = run("parallel", true);
    if (seq.tokens !== par.tokens) throw new Error(`npr: sequential serialized ${seq.tokens} tokens, parallel ${par.tokens}`);
    out({
      bench: "npr", structure: values.npr, serialized_tokens: par.tokens, critical_path: par.critical,
      sequential_tokens_per_s: seq.tokens / seq.s, parallel_tokens_per_s: par.tokens / par.s, speedup: seq.s / par.s,
      sequential: seq, parallel: par,
    });
  }

  const gcSteps = Number(values["gc-steps"]);
  if (gcSteps > 0) {
    // ---- memory: generic decode steps drop their activations; collected buffers are freed
    const kv = model.newKVCache(P + gcSteps + 1);
    noGrad(() => model.forward(prompt, causalLayout(P), kv)).dispose();
    const samples: Array<[number, number]> = [];
    let next = 0;
    for (let i = 0; i < gcSteps; i++) {
      const logits = model.forward([next], causalLayout(1, kv.length), kv);
      next = argmax(logits.toArray());
      // Intermediates are not disposed: only the FinalizationRegistry can return them. Yield so
      // its callbacks run (they never run inside a synchronous loop).
      await new Promise((res) => setImmediate(res));
      if (i % Math.max(1, Math.floor(gcSteps / 8)) === 0 || i === gcSteps - 1) samples.push([i, be.liveBytes()]);
    }
    out({ bench: "memory", steps: gcSteps, live_bytes_by_step: samples, gc_frees: be.counters()["cuda.gc.free"] ?? 0 });
  }
}
