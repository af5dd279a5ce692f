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
 *   fused_gemv       with --gemm-graph, the fused decode GEMV (cuda/decode.ts) as the fused step
 *                    launches it, per launch group (GB/s of its weights) and over the step, at 1,
 *                    4, 8, 16 rows; fused_step_parts: the step's norms, q/k norm + RoPE and
 *                    attention alone
 *   fused_step_mix   with --gemm-graph, the fused step's kernel sequence rebuilt here (same
 *                    weights, one row), with PDL off and on: GEMVs alone, + q/k norm + RoPE, +
 *                    decode attention (= the step): what each kind of kernel adds to a step
 *   decode_graph     the fused graph step (kernels and replayed ms per step, fraction of the
 *                    roofline); decode_graph_unfused the graph body without the fused ops;
 *                    decode_graph_pdl the fused step with PDL off and on
 * The kernel variants that were measured and dropped (GEMV launch shapes and k-split, L2
 * prefetch, early PDL scheduling, attention merge variants) are timed by dev/cuda/ (dev/LOG.md).
 * --no-collect turns off the backend's collection of dropped buffers (for comparison).
 *
 *   node bench/gpu.ts [--n 8192] [--iters 20] [--decode DIR [--prompt 32] [--steps 128] [--hf] [--npr 8x512] [--gc-steps 64] [--gemm-graph] [--no-collect]]
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { FINAL_NORM, PagedKVStorage, layerParamNames, loadQwen3, pagedForward, qwen3ParamSpecs } from "../src/model/index.ts";
import { Engine, ModelRunner, engineVocab, forcedMaxPlans, parseForceStructure } from "../src/engine/index.ts";
import { GraphDecoder } from "../src/engine/graph-decode.ts";
import type { PlanItem } from "../src/engine/index.ts";
import { noGrad } from "../src/tensor/index.ts";
import { byteTokenizer } from "../src/tokenizer/index.ts";
import { causalLayout } from "../src/util/layout.ts";
import { CudaBackend } from "../src/tensor/backend/cuda/index.ts";
import { Cublas, type GemmType } from "../src/tensor/backend/cuda/ffi/cublas.ts";
import { growCapacity, packPlan, planAttention, planCapacityNeeded, planLayout } from "../src/tensor/backend/decode-attention-plan.ts";
import { Rng } from "../src/util/rng.ts";

const { values } = parseArgs({
  options: {
    n: { type: "string", default: "8192" },
    iters: { type: "string", default: "20" },
    decode: { type: "string" },
    prompt: { type: "string", default: "32" },
    steps: { type: "string", default: "128" },
    hf: { type: "boolean", default: false },
    npr: { type: "string" },
    "no-collect": { type: "boolean", default: false },
    "gemm-graph": { type: "boolean", default: false },
    "gc-steps": { type: "string", default: "0" },
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
  const ms = timeMs(
    () =>
      blas.gemm({
        type,
        batch: 1,
        m: N,
        n: N,
        k: N,
        transA: false,
        transB: true,
        a,
        b,
        c,
        strideA: 0,
        strideB: 0,
        strideC: 0,
        alpha: 1,
        beta: 0,
      }),
    ITERS,
  );
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
  /**
   * Greedy decode of n tokens after the prompt; returns the tokens, the decode seconds and, per
   * token, the gap between its logit and the runner-up's (how near a tie each choice was: where a
   * faster path first picks another token, this says whether summation order could flip it).
   */
  const decode = (n: number): { tokens: number[]; s: number; gaps: number[] } => {
    const kv = model.newKVCache(P + n + 1);
    let logits = model.forward(prompt, causalLayout(P), kv);
    let row = logits.toArray().subarray((P - 1) * c.vocabSize);
    let next = argmax(row);
    const tokens = [next];
    const rows: ArrayLike<number>[] = [row];
    const start = performance.now();
    for (let i = 1; i < n; i++) {
      logits.dispose();
      logits = model.forward([next], causalLayout(1, kv.length), kv);
      row = logits.toArray(); // the read synchronizes: each step is timed to its end
      next = argmax(row);
      tokens.push(next);
      rows.push(row);
    }
    const s = (performance.now() - start) / 1000;
    logits.dispose();
    const gaps = rows.map((x, i) => {
      let second = -Infinity;
      for (let j = 0; j < x.length; j++) if (j !== tokens[i] && x[j]! > second) second = x[j]!;
      return x[tokens[i]!]! - second;
    });
    return { tokens, s, gaps };
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
    bench: "decode",
    dir: path.basename(dir),
    layers: c.numHiddenLayers,
    hidden: c.hiddenSize,
    prompt: P,
    steps,
    load_s: loadS,
    s: r.s,
    ms_per_token: (1000 * r.s) / steps,
    tokens_per_s: tokPerS,
    bytes_per_step: weightBytes + kvBytes,
    roofline_tokens_per_s: rooflineTokPerS,
    fraction_of_roofline: tokPerS / rooflineTokPerS,
    first_tokens: r.tokens.slice(0, 16),
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
  /**
   * Greedy decode of n tokens through a GraphDecoder (`fused`: its fused decode ops, or the
   * unfused graph body), timed after `warm` untimed steps; kernels per step are the launches the
   * first step queued (its eager run and its capture: two bodies); replay_ms is one replayed step
   * with fixed inputs (device time).
   */
  const graphDecode = (n: number, warm: number, fused: boolean, variant: { pdl?: boolean } = {}) => {
    const keepPdl = be.pdl;
    // The variant holds while the graph is captured (the first steps) and replayed.
    if (variant.pdl !== undefined) be.pdl = variant.pdl && be.pdlSupported;
    try {
      return graphDecodeNow(n, warm, fused);
    } finally {
      be.pdl = keepPdl;
    }
  };
  const graphDecodeNow = (n: number, warm: number, fused: boolean) => {
    const bs = 16;
    const storage = new PagedKVStorage(model, Math.ceil((P + n + warm + 1) / bs) + 1, bs);
    const dec = new GraphDecoder(model, storage, { fused });
    const pos0 = Array.from({ length: P }, (_, i) => i);
    const pre = noGrad(() => pagedForward(model, storage, [{ ids: prompt, positions: pos0, writeSlots: pos0, visible: table(0, bs) }]));
    let next = argmax(pre.toArray().subarray((P - 1) * c.vocabSize));
    pre.dispose();
    const tokens = [next];
    let start = 0;
    let l0 = 0;
    let kernels = 0;
    let pdlKernels = 0;
    for (let i = 1; i < n + warm; i++) {
      if (i === warm) {
        start = performance.now();
        l0 = be.counters()["cuda.launch"] ?? 0;
      }
      const p = P + i - 1;
      const item: PlanItem = { seqId: 0, ids: [next], positions: [p], writeSlots: Int32Array.of(p), visible: table(p, bs), sample: null };
      const k0 = be.counters()["cuda.launch"] ?? 0;
      const p0 = be.counters()["cuda.launch.pdl"] ?? 0;
      next = argmax(dec.run([item]));
      if (i === 1) {
        kernels = ((be.counters()["cuda.launch"] ?? 0) - k0) / 2;
        pdlKernels = ((be.counters()["cuda.launch.pdl"] ?? 0) - p0) / 2;
      }
      tokens.push(next);
    }
    const sec = (performance.now() - start) / 1000;
    const launches = ((be.counters()["cuda.launch"] ?? 0) - l0) / n;
    // Replay alone (the last bucket's graph, inputs unchanged): device time of one step.
    dec.replayOnly(1);
    be.synchronize();
    const t0r = performance.now();
    for (let i = 0; i < 50; i++) dec.replayOnly(1);
    be.synchronize();
    const replayMs = (performance.now() - t0r) / 50;
    const info = { fused: dec.fused, captures: dec.captures, replays: dec.replays };
    dec.dispose();
    storage.dispose();
    return { tokens, s: sec, launches, kernels, pdlKernels, replayMs, info };
  };
  /** Device ms of one replay of a graph of `body` (run once eagerly first: kernel loads). */
  const graphMs = (body: () => void, reps = 20): number => {
    body();
    const gg = be.captureGraph(body);
    gg.replay();
    be.synchronize();
    const t0g = performance.now();
    for (let i = 0; i < reps; i++) gg.replay();
    be.synchronize();
    const ms = (performance.now() - t0g) / reps;
    gg.destroy();
    return ms;
  };
  const WARM = 3;
  const agreeing = (t: number[]) => {
    let agree = 0;
    while (agree < r.tokens.length && r.tokens[agree] === t[agree]) agree++;
    return agree;
  };
  // ---- the fused step with programmatic dependent launch off and on (measured first: everything
  // else in this file runs with the backend's default).
  const same = (a: number[], b: number[]) => {
    let n = 0;
    while (n < a.length && a[n] === b[n]) n++;
    return n;
  };
  const pdlVariants: Array<[string, { pdl: boolean }]> = [
    ["off", { pdl: false }],
    ["on", { pdl: true }],
  ];
  let pdlOffTokens: number[] | null = null;
  for (const [name, variant] of pdlVariants) {
    if (variant.pdl && !be.pdlSupported) {
      out({ bench: "decode_graph_pdl", variant: name, skipped: `PDL needs sm_90+ and cuLaunchKernelEx (${be.arch})` });
      continue;
    }
    try {
      const gv = graphDecode(steps, WARM, true, variant);
      pdlOffTokens ??= gv.tokens;
      out({
        bench: "decode_graph_pdl",
        variant: name,
        pdl: variant.pdl,
        steps,
        tokens_per_s: steps / gv.s,
        replay_ms_per_step: gv.replayMs,
        replay_fraction_of_roofline: 1000 / gv.replayMs / rooflineTokPerS,
        kernels_per_step: gv.kernels,
        pdl_kernels_per_step: gv.pdlKernels,
        tokens_agreeing_with_generic: agreeing(gv.tokens),
        tokens_agreeing_with_pdl_off: same(pdlOffTokens, gv.tokens),
        of: r.tokens.length,
      });
    } catch (e) {
      out({ bench: "decode_graph_pdl", variant: name, error: e instanceof Error ? (e.stack ?? e.message) : String(e) });
      // The rest of the run goes on without PDL rather than stopping here.
      if (variant.pdl && name === "on") be.pdl = false;
    }
  }
  const gu = graphDecode(steps, WARM, false); // the unfused graph body (the previous fast path)
  const g = graphDecode(steps, WARM, true); // steps timed after WARM untimed ones (eager first step + capture)
  const gTokPerS = steps / g.s;
  out({
    bench: "decode_graph_unfused",
    steps,
    s: gu.s,
    ms_per_token: (1000 * gu.s) / steps,
    tokens_per_s: steps / gu.s,
    replay_ms_per_step: gu.replayMs,
    fraction_of_roofline: steps / gu.s / rooflineTokPerS,
    kernels_per_step: gu.kernels,
    tokens_agreeing_with_generic: agreeing(gu.tokens),
    of: r.tokens.length,
  });
  out({
    bench: "decode_graph",
    fused: g.info.fused,
    pdl: be.pdl,
    steps,
    s: g.s,
    ms_per_token: (1000 * g.s) / steps,
    tokens_per_s: gTokPerS,
    roofline_tokens_per_s: rooflineTokPerS,
    fraction_of_roofline: gTokPerS / rooflineTokPerS,
    speedup_over_generic: gTokPerS / tokPerS,
    replay_ms_per_step: g.replayMs,
    replay_fraction_of_roofline: 1000 / g.replayMs / rooflineTokPerS,
    kernels_per_step: g.kernels,
    pdl_kernels_per_step: g.pdlKernels,
    host_launches_per_token: g.launches,
    graph_captures: g.info.captures,
    graph_replays: g.info.replays,
    tokens_agreeing_with_generic: agreeing(g.tokens),
    tokens_agreeing_with_unfused: (() => {
      let a = 0;
      while (a < gu.tokens.length && gu.tokens[a] === g.tokens[a]) a++;
      return a;
    })(),
    of: r.tokens.length,
    first_tokens: g.tokens.slice(0, 16),
    // At the first token where the fused step chose differently: the generic path's top-2 logit gap
    // there, against the median gap over all tokens (a near-tie flipped by summation order, or not).
    generic_top2_gap_at_divergence: agreeing(g.tokens) < r.tokens.length ? r.gaps[agreeing(g.tokens)] : null,
    generic_top2_gap_median: [...r.gaps].sort((a, b) => a - b)[r.gaps.length >> 1],
  });
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
    const head = c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    gemms.push([head, 0, 0]);
    // The backend's matmul GEMV (gemvMaxRows 16) against cuBLAS (0), at 1 and more rows.
    for (const [kernel, maxRows, m] of [
      ["gemv", 16, 1],
      ["cublas", 0, 1],
      ["gemv", 16, 4],
      ["cublas", 0, 4],
      ["gemv", 16, 8],
      ["cublas", 0, 8],
      ["gemv", 16, 16],
      ["cublas", 0, 16],
    ] as const) {
      const keep = be.gemvMaxRows;
      be.gemvMaxRows = maxRows;
      const ms = graphMs(() => {
        for (const [name] of gemms) {
          const w = model.param(name);
          const [n, k] = w.shape as [number, number];
          be.matmul(x16, w.buffer, y, { batch: 1, m, n, k, transA: false, transB: true, strideA: 0, strideB: 0, strideC: 0 });
        }
      });
      out({ bench: "gemm_graph", kernel, rows: m, gemms: gemms.length, ms_per_step: ms, weight_gb_s: weightBytes / ms / 1e6 });
      be.gemvMaxRows = keep;
    }
    // The fused decode GEMV (cuda/decode.ts) as the fused step launches it: q/k/v in one launch,
    // o_proj and down_proj adding into an f32 residual, gate/up with the SwiGLU epilogue, lm_head.
    // Per group, a graph of its 36 launches over the 36 layers' (distinct, so uncached) matrices.
    const w = (name: string) => model.param(name).buffer;
    const C = c.hiddenSize;
    const I = c.intermediateSize;
    const HD = c.numAttentionHeads * c.headDim;
    const KV = c.numKeyValueHeads * c.headDim;
    const h32 = be.alloc("f32", 16 * C); // the residual the add epilogues write
    be.fill(h32, 0.01);
    const a32 = be.alloc("f32", 16 * HD); // o_proj's f32 input (the attention output)
    be.fill(a32, 0.01);
    const mlp16 = be.alloc("bf16", 16 * I);
    const L = c.numHiddenLayers;
    const at = (l: number, k: string) => `model.layers.${l}.${k}.weight`;
    // The norms are fused into q/k/v, gate/up and lm_head (a separate kernel into x16 beyond 4 rows).
    const norm = { w: w(FINAL_NORM), eps: 1e-6, scratch: x16 };
    const groups: Array<{ name: string; bytes: number; launch: (l: number, rows: number) => void }> = [
      {
        name: "norm_qkv",
        bytes: 2 * (HD + 2 * KV) * C,
        launch: (l, rows) =>
          be.decodeGemv(
            h32,
            [
              { w: w(at(l, "self_attn.q_proj")), y, n: HD },
              { w: w(at(l, "self_attn.k_proj")), y, n: KV },
              { w: w(at(l, "self_attn.v_proj")), y, n: KV },
            ],
            { rows, k: C, epilogue: "store", norm },
          ),
      },
      {
        name: "o_add",
        bytes: 2 * C * HD,
        launch: (l, rows) => be.decodeGemv(a32, [{ w: w(at(l, "self_attn.o_proj")), y: h32, n: C }], { rows, k: HD, epilogue: "add" }),
      },
      {
        name: "norm_gate_up_swiglu",
        bytes: 2 * 2 * I * C,
        launch: (l, rows) =>
          be.decodeGemv(
            h32,
            [
              { w: w(at(l, "mlp.gate_proj")), y: mlp16, n: I },
              { w: w(at(l, "mlp.up_proj")), y: mlp16, n: I },
            ],
            { rows, k: C, epilogue: "swiglu", norm },
          ),
      },
      {
        name: "down_add",
        bytes: 2 * C * I,
        launch: (l, rows) => be.decodeGemv(x16, [{ w: w(at(l, "mlp.down_proj")), y: h32, n: C }], { rows, k: I, epilogue: "add" }),
      },
    ];
    const headBytes = 2 * c.vocabSize * C;
    for (const rows of [1, 4, 8, 16]) {
      const per: Record<string, { ms: number; gb_s: number }> = {};
      let total = 0;
      for (const gr of groups) {
        const ms = graphMs(() => {
          for (let l = 0; l < L; l++) gr.launch(l, rows);
        });
        per[gr.name] = { ms: ms / L, gb_s: gr.bytes / (ms / L) / 1e6 };
        total += ms;
      }
      const hms = graphMs(() => be.decodeGemv(h32, [{ w: w(head), y, n: c.vocabSize }], { rows, k: C, epilogue: "store", norm }));
      per["norm_lm_head"] = { ms: hms, gb_s: headBytes / hms / 1e6 };
      total += hms;
      out({
        bench: "fused_gemv",
        pdl: be.pdl,
        rows,
        ms_per_step: total,
        weight_gb_s: weightBytes / total / 1e6,
        fraction_of_copy: weightBytes / total / 1e6 / copyGbps,
        per_launch: per,
      });
    }
    // The other kernels of a fused batch-1 step, each kind alone as a graph: the norms (2 per layer
    // + final; a separate kernel only beyond 4 rows), q/k norm + RoPE + KV write, and the decode
    // attention pair (partial + combine) over P + steps keys, as the step calls it.
    {
      const H = c.numAttentionHeads;
      const Hkv = c.numKeyValueHeads;
      const D = c.headDim;
      const len = P + steps;
      const q = be.alloc("f32", H * D);
      be.fill(q, 0.01);
      const kv = be.alloc("f32", 2 * Hkv * D);
      be.fill(kv, 0.01);
      const kb = be.view(kv, 0, Hkv * D);
      const vb = be.view(kv, Hkv * D, Hkv * D);
      const pages = [be.alloc("f32", len * Hkv * D), be.alloc("f32", len * Hkv * D)];
      for (const pg of pages) be.fill(pg, 0.01);
      // [position, write slot]: the row writes slot len - 1 and sees keys [0, len).
      const iblk = be.alloc("i32", 2);
      be.write(iblk, Int32Array.of(len - 1, len - 1));
      const ints = (o: number) => be.view(iblk, o, 1);
      const plan = planAttention([[[0, len]]]);
      const cap = growCapacity(null, planCapacityNeeded(plan));
      const lay = planLayout(1, cap);
      const planHost = new Int32Array(lay.length);
      packPlan(plan, lay, planHost);
      const planBuf = be.alloc("i32", lay.length);
      be.write(planBuf, planHost);
      const scratch = be.alloc("f32", be.decodeAttentionScratchLength(cap, H, D));
      const att = be.alloc("f32", H * D);
      const lse = be.alloc("f32", H);
      const nw = w(FINAL_NORM);
      const qn = w(layerParamNames(0).qNorm);
      const kn = w(layerParamNames(0).kNorm);
      const rope = () =>
        be.decodeQkNormRope(q, kb, vb, qn, kn, ints(0), ints(1), pages[0]!, pages[1]!, {
          rows: 1,
          heads: H,
          kvHeads: Hkv,
          headDim: D,
          eps: 1e-6,
          theta: c.ropeTheta,
        });
      const attend = () =>
        be.decodeAttention(q, pages[0]!, pages[1]!, planBuf, scratch, att, lse, {
          rows: 1,
          keys: len,
          heads: H,
          kvHeads: Hkv,
          headDim: D,
          scale: 1 / Math.sqrt(D),
          capacity: cap,
        });
      const keepPdl = be.pdl;
      for (const pdl of be.pdlSupported ? [false, true] : [false]) {
        be.pdl = pdl;
        const normMs = graphMs(() => {
          for (let l = 0; l < 2 * L + 1; l++) be.decodeRmsnorm(h32, nw, x16, { rows: 1, dim: C, eps: 1e-6 });
        });
        const ropeMs = graphMs(() => {
          for (let l = 0; l < L; l++) rope();
        });
        const attMs = graphMs(() => {
          for (let l = 0; l < L; l++) attend();
        });
        out({
          bench: "fused_step_parts",
          pdl,
          rows: 1,
          keys: len,
          attention_items: cap.items,
          rmsnorm_ms: normMs,
          qk_norm_rope_ms: ropeMs,
          decode_attention_ms: attMs,
          launches: { rmsnorm: 2 * L + 1, qk_norm_rope: L, decode_attention: 2 * L },
        });
        // The step's kernel sequence (embedding aside), rebuilt: GEMVs alone, + q/k norm + RoPE, +
        // attention (= the fused step). The differences are what those kernels cost inside the step.
        const mix: Record<string, number> = {};
        for (const [name, withRope, withAtt] of [
          ["gemvs", false, false],
          ["gemvs_rope", true, false],
          ["gemvs_rope_attention", true, true],
        ] as const) {
          mix[name] = graphMs(() => {
            for (let l = 0; l < L; l++) {
              be.decodeGemv(
                h32,
                [
                  { w: w(at(l, "self_attn.q_proj")), y: q, n: HD },
                  { w: w(at(l, "self_attn.k_proj")), y: kb, n: KV },
                  { w: w(at(l, "self_attn.v_proj")), y: vb, n: KV },
                ],
                { rows: 1, k: C, epilogue: "store", norm },
              );
              if (withRope) rope();
              if (withAtt) attend();
              be.decodeGemv(att, [{ w: w(at(l, "self_attn.o_proj")), y: h32, n: C }], { rows: 1, k: HD, epilogue: "add" });
              be.decodeGemv(
                h32,
                [
                  { w: w(at(l, "mlp.gate_proj")), y: mlp16, n: I },
                  { w: w(at(l, "mlp.up_proj")), y: mlp16, n: I },
                ],
                { rows: 1, k: C, epilogue: "swiglu", norm },
              );
              be.decodeGemv(mlp16, [{ w: w(at(l, "mlp.down_proj")), y: h32, n: C }], { rows: 1, k: I, epilogue: "add" });
            }
            be.decodeGemv(h32, [{ w: w(head), y, n: c.vocabSize }], { rows: 1, k: C, epilogue: "store", norm });
          }, 50);
        }
        const perLayerUs = (a: number, b: number) => ((b - a) * 1000) / L;
        out({
          bench: "fused_step_mix",
          pdl,
          rows: 1,
          keys: len,
          ms: mix,
          weight_bytes: weightBytes,
          gemvs_fraction_of_copy: weightBytes / mix["gemvs"]! / 1e6 / copyGbps,
          step_fraction_of_roofline: 1000 / mix["gemvs_rope_attention"]! / rooflineTokPerS,
          added_us_per_layer: {
            qk_norm_rope: perLayerUs(mix["gemvs"]!, mix["gemvs_rope"]!),
            attention_pair: perLayerUs(mix["gemvs_rope"]!, mix["gemvs_rope_attention"]!),
          },
        });
      }
      be.pdl = keepPdl;
      for (const b of [q, kv, ...pages, iblk, planBuf, scratch, att, lse]) be.free(b);
    }
    for (const b of [h32, a32, mlp16]) be.free(b);
  }
  if (values.hf) {
    // ---- (b) transformers generate, same checkpoint, prompt and lengths, in this run
    const script = path.join(path.dirname(new URL(import.meta.url).pathname), "hf_generate.py");
    const line = execFileSync("python3", [script, "--dir", dir, "--prompt", String(P), "--steps", String(steps)], { encoding: "utf8" })
      .trim()
      .split("\n")
      .pop()!;
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
      const [res] = engine.generateSync([chat], {
        mode,
        temperature: 0,
        maxNewTokens: 100_000,
        minForkBudget: 0,
        forceStructure: structure,
        maxPlans: forcedMaxPlans(structure),
      });
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
      bench: "npr",
      structure: values.npr,
      serialized_tokens: par.tokens,
      critical_path: par.critical,
      sequential_tokens_per_s: seq.tokens / seq.s,
      parallel_tokens_per_s: par.tokens / par.s,
      speedup: seq.s / par.s,
      sequential: seq,
      parallel: par,
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
