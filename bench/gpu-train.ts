/**
 * Issue 6 part (d): mixed-precision training forward + backward tokens/s on the Qwen3-0.6B shape
 * over an NPR-shaped layout, npr on the CUDA backend against PyTorch eager on the same device in
 * the same run (bench/torch_train_gpu.py: bf16 autocast, SDPA with the layout as a dense bool
 * mask, the same tokens, targets and positions).
 * npr: f32 master parameters, `computeDtype: "bf16"` (each matrix cast to bf16 at use, bf16 GEMM
 * inputs with fp32 accumulation, f32 norms / softmax / attention / residual). One step =
 * forward, cross-entropy, backward (no optimizer), inside a tidy, synchronized; median of --iters
 * after --warm. Also times the attention op alone (one layer's shapes, forward + backward) and
 * a forward alone, so the gap can be attributed. `--profile` then runs one more step with every
 * backend primitive timed alone (see installProfiler) and prints the top entries.
 *
 *   node bench/gpu-train.ts [--seqs 4] [--iters 5] [--warm 2] [--torch] [--layers 28] [--profile [--top 15]] [--skip-attn]
 *     [--pool-release]   (CUDA's default pool release threshold 0 instead of keeping freed memory)
 */
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { Qwen3Model } from "../src/model/index.ts";
import { makeQwen3Config } from "../src/model/config.ts";
import { Tensor, attention, crossEntropy, noGrad, tidy } from "../src/tensor/index.ts";
import { CudaBackend } from "../src/tensor/backend/cuda/index.ts";
import { segmentLayout } from "../src/util/layout.ts";
import type { Layout } from "../src/util/layout.ts";
import type { DeviceBuffer } from "../src/tensor/backend/types.ts";
import { PRIMITIVES } from "../src/tensor/backend/types.ts";
import { Rng } from "../src/util/rng.ts";

const { values } = parseArgs({
  options: {
    seqs: { type: "string", default: "4" },
    iters: { type: "string", default: "5" },
    warm: { type: "string", default: "2" },
    torch: { type: "boolean", default: false },
    layers: { type: "string", default: "28" },
    profile: { type: "boolean", default: false },
    top: { type: "string", default: "15" },
    "skip-attn": { type: "boolean", default: false },
    "pool-release": { type: "boolean", default: false },
  },
});

/**
 * `seqs` packed NPR sequences, each: prompt 128, block 1 (guideline 32, 4 steps x 128, takeaway
 * 32), block 2 (guideline 32, 3 steps x 96, takeaway 32), answer 64 = 1120 tokens. Visibility as
 * format/npr-layout.ts builds it: a step sees its sequence up to its block's guideline plus its
 * own step; every other token sees its sequence's earlier tokens. Step positions restart after
 * the guideline; the takeaway continues after the longest step.
 */
function nprShapeLayout(seqs: number): { layout: Layout; visible: Array<Array<[number, number]>> } {
  const positions: number[] = [];
  const visible: Array<Array<[number, number]>> = [];
  for (let s = 0; s < seqs; s++) {
    const base = positions.length; // first key of this sequence
    let pos = 0;
    const causal = (n: number) => {
      for (let j = 0; j < n; j++) {
        const i = positions.length;
        positions.push(pos++);
        visible.push([[base, i + 1]]);
      }
    };
    causal(128);
    for (const [branches, len] of [
      [4, 128],
      [3, 96],
    ] as const) {
      causal(32); // guideline
      const prefixEnd = positions.length;
      const p0 = pos;
      for (let b = 0; b < branches; b++) {
        const start = positions.length;
        for (let j = 0; j < len; j++) {
          positions.push(p0 + j);
          visible.push([
            [base, prefixEnd],
            [start, start + j + 1],
          ]);
        }
      }
      pos = p0 + len;
      causal(32); // takeaway
    }
    causal(64);
  }
  return { layout: segmentLayout(positions, visible), visible };
}

const be = new CudaBackend({ retainPoolMemory: !values["pool-release"] });
const out = (o: Record<string, unknown>) => console.log(JSON.stringify({ device: be.device.name, ...o }));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ITERS = Number(values.iters);
const WARM = Number(values.warm);

const { layout, visible } = nprShapeLayout(Number(values.seqs));
const T = layout.numTokens;
const V = 151936;
const rng = new Rng(17);
const ids = Array.from({ length: T }, () => rng.int(V));
const targetIds = Array.from({ length: T }, () => rng.int(V));
const targets = Tensor.fromArray(targetIds, [T], { dtype: "i32", backend: be });
let keys = 0;
for (const r of visible) for (const [s, e] of r) keys += e - s;
out({ part: "d_layout", tokens: T, seqs: Number(values.seqs), mean_visible_keys: Math.round(keys / T) });

if (values.torch) {
  const file = path.join(tmpdir(), `npr-train-layout-${process.pid}.json`);
  writeFileSync(file, JSON.stringify({ ids, targets: targetIds, positions: Array.from(layout.positions), visible }));
  const py = execFileSync(
    "python3",
    [path.join(import.meta.dirname, "torch_train_gpu.py"), "--layout", file, "--iters", String(ITERS), "--warm", String(WARM)],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  process.stdout.write(py);
}

// The Qwen3-0.6B shape (bench/hf_parity.py "0.6b"), f32 masters, bf16 compute.
const config = makeQwen3Config({
  vocabSize: V,
  hiddenSize: 1024,
  intermediateSize: 3072,
  numHiddenLayers: Number(values.layers),
  numAttentionHeads: 16,
  numKeyValueHeads: 8,
  headDim: 128,
  tieWordEmbeddings: true,
  ropeTheta: 1e6,
});
let t0 = performance.now();
const model = Qwen3Model.random(config, { seed: 3, backend: be, dtype: "f32", computeDtype: "bf16", std: 0.02 });
out({ part: "d_init", s: +((performance.now() - t0) / 1e3).toFixed(1) });

/**
 * Synchronized wall ms of fn, one sample per call; frees the parameters' gradients after. Also
 * keeps the host ms (until fn returned, before the final synchronize) in `hostMs`: a step whose
 * host ms is close to its wall ms is bound by the host (JS, launches, allocations).
 */
const hostMs: number[] = [];
async function sample(fn: () => void): Promise<number> {
  be.synchronize();
  const a = performance.now();
  tidy(() => {
    fn();
  });
  hostMs.push(performance.now() - a);
  be.synchronize();
  const ms = performance.now() - a;
  for (const p of model.parameters()) {
    if (p.grad) {
      be.free(p.grad.buffer);
      p.grad = null;
    }
  }
  await new Promise((r) => setImmediate(r)); // let collected buffers be freed
  return ms;
}

async function timeIt(fn: () => void): Promise<{ ms: number; all: number[]; hostMs: number }> {
  const all: number[] = [];
  const host: number[] = [];
  for (let i = 0; i < WARM + ITERS; i++) {
    const ms = await sample(fn);
    if (i >= WARM) {
      all.push(+ms.toFixed(1));
      host.push(hostMs[hostMs.length - 1]!);
    }
  }
  return { ms: median(all), all, hostMs: +median(host).toFixed(1) };
}

const step = await timeIt(() => crossEntropy(model.forward(ids, layout), targets).backward());
out({
  part: "d_npr",
  tokens: T,
  ms: step.ms,
  tok_s: Math.round((T / step.ms) * 1e3),
  all_ms: step.all,
  host_ms: step.hostMs,
  live_gb: +(be.liveBytes() / 1e9).toFixed(2),
  pool: values["pool-release"] ? "release" : "retain",
});
if (values.profile) {
  const prof = installProfiler(be);
  be.synchronize();
  const a = performance.now();
  tidy(() => {
    const loss = crossEntropy(model.forward(ids, layout), targets);
    prof.phase = "bwd";
    loss.backward();
  });
  be.synchronize();
  const wall = performance.now() - a;
  prof.uninstall();
  for (const p of model.parameters()) {
    if (p.grad) {
      be.free(p.grad.buffer);
      p.grad = null;
    }
  }
  await new Promise((r) => setImmediate(r));
  const rows = [...prof.stats.entries()].sort((x, y) => y[1].ms - x[1].ms);
  const phaseMs = (ph: string) =>
    +rows
      .filter(([k]) => k.startsWith(ph))
      .reduce((t, [, e]) => t + e.ms, 0)
      .toFixed(1);
  const timed = phaseMs("fwd") + phaseMs("bwd");
  out({
    part: "d_profile",
    step_ms: +wall.toFixed(1),
    timed_ms: +timed.toFixed(1),
    fwd_ms: phaseMs("fwd"),
    bwd_ms: phaseMs("bwd"),
    untimed_host_ms: +(wall - timed).toFixed(1),
    calls: rows.reduce((t, [, e]) => t + e.calls, 0),
  });
  rows
    .slice(0, Number(values.top))
    .forEach(([key, e], i) =>
      out({ part: "d_profile_top", rank: i + 1, op: key, calls: e.calls, ms: +e.ms.toFixed(2), ms_per_call: +(e.ms / e.calls).toFixed(3) }),
    );
}

const fwd = await timeIt(() => noGrad(() => crossEntropy(model.forward(ids, layout), targets)));
out({ part: "d_npr_forward_only", ms: fwd.ms, all_ms: fwd.all, host_ms: fwd.hostMs });

if (!values["skip-attn"]) {
  // One layer's attention (f32 buffers, the layout above), forward and forward + backward, x layers,
  // with bf16 inner products allowed as the bf16-compute model does (the flash kernels under "auto").
  const H = 16,
    Hkv = 8,
    D = 128;
  const q = Tensor.randn([T, H, D], rng, { backend: be, requiresGrad: true });
  const k = Tensor.randn([T, Hkv, D], rng, { backend: be, requiresGrad: true });
  const v = Tensor.randn([T, Hkv, D], rng, { backend: be, requiresGrad: true });
  const dOut = Tensor.randn([T, H, D], rng, { backend: be });
  const attF = await timeIt(() => noGrad(() => attention(q, k, v, layout, 1 / Math.sqrt(D), { bf16Inner: true })));
  const attFB = await timeIt(() => {
    attention(q, k, v, layout, 1 / Math.sqrt(D), { bf16Inner: true }).backward(dOut);
    for (const t of [q, k, v]) t.grad = null;
  });
  out({
    part: "d_npr_attention",
    per_layer_fwd_ms: attF.ms,
    per_layer_fwd_bwd_ms: attFB.ms,
    all_layers_fwd_bwd_ms: +(attFB.ms * config.numHiddenLayers).toFixed(1),
  });
  // The same layer on the f32 reference kernels (attention.cu), for comparison with the flash path above.
  be.attentionKernel = "reference";
  const refF = await timeIt(() => noGrad(() => attention(q, k, v, layout, 1 / Math.sqrt(D))));
  const refFB = await timeIt(() => {
    attention(q, k, v, layout, 1 / Math.sqrt(D)).backward(dOut);
    for (const t of [q, k, v]) t.grad = null;
  });
  be.attentionKernel = "auto";
  out({ part: "d_npr_attention_reference", per_layer_fwd_ms: refF.ms, per_layer_fwd_bwd_ms: refFB.ms });
}
const counters = be.counters();
out({ part: "d_counters", launches: counters["cuda.launch"], gemms: counters["cublas.gemm"], flash: counters["cuda.flash"] });

/**
 * Wraps every backend primitive (and alloc / free) of `b` so each call is timed alone:
 * synchronize, call, synchronize. Self time per "phase op(dtypes) shape" key: a call made inside
 * another (the bf16 wrapper's casts around an f32 kernel, the temporaries it allocates) is
 * charged to itself and subtracted from its caller. The synchronizations serialize host and
 * device, so the sum over-states a normal step by the launch latency of each call (~10-20 us),
 * and "untimed_host_ms" (step wall minus the timed calls) is the JS between calls: autograd,
 * shape checks, tensor bookkeeping.
 */
function installProfiler(b: CudaBackend): { phase: string; stats: Map<string, { calls: number; ms: number }>; uninstall: () => void } {
  const stats = new Map<string, { calls: number; ms: number }>();
  const methods = b as unknown as Record<string, (...a: unknown[]) => unknown>;
  const names = [...Object.values(PRIMITIVES).flat(), "alloc", "free"];
  const own = new Map<string, boolean>();
  const children: number[] = []; // time of nested calls, per open call
  const prof = {
    phase: "fwd",
    stats,
    uninstall: () => {
      for (const [op, wasOwn] of own) {
        if (wasOwn) methods[op] = originals.get(op)!;
        else delete methods[op];
      }
    },
  };
  const originals = new Map<string, (...a: unknown[]) => unknown>();
  for (const op of names) {
    const orig = methods[op]!;
    own.set(op, Object.prototype.hasOwnProperty.call(b, op));
    originals.set(op, orig);
    const sync = op !== "alloc" && op !== "free";
    methods[op] = (...args: unknown[]) => {
      if (sync) b.synchronize();
      children.push(0);
      const t0 = performance.now();
      const r = orig.apply(b, args);
      if (sync) b.synchronize();
      const total = performance.now() - t0;
      const self = total - children.pop()!;
      if (children.length > 0) children[children.length - 1] += total;
      const key = `${prof.phase} ${op}${detail(op, args)}`;
      const e = stats.get(key) ?? { calls: 0, ms: 0 };
      e.calls++;
      e.ms += self;
      stats.set(key, e);
      return r;
    };
  }
  return prof;
}

/** "(dtypes) shape" of a primitive call, enough to tell the step's calls of one op apart. */
function detail(op: string, args: unknown[]): string {
  const isBuf = (a: unknown): a is DeviceBuffer => typeof a === "object" && a !== null && "dtype" in a && "length" in a;
  if (op === "alloc") return `(${String(args[0])})`;
  const bufs = args.filter(isBuf);
  const dts = [...new Set(bufs.map((x) => x.dtype))].join(",");
  const p = args.find((a) => typeof a === "object" && a !== null && !isBuf(a) && !Array.isArray(a)) as Record<string, unknown> | undefined;
  const first = typeof args[0] === "string" ? `${args[0]} ` : "";
  let shape = "";
  if (op === "matmul" && p) shape = ` m${p["m"]} n${p["n"]} k${p["k"]}${p["transA"] ? " tA" : ""}${p["transB"] ? " tB" : ""}`;
  else if (op === "cast") shape = ` ${bufs[0]?.dtype}->${bufs[1]?.dtype} n${bufs[1]?.length}`;
  else if (p && "rows" in p) shape = ` ${p["rows"]}x${p["dim"] ?? p["cols"]}`;
  else if (p && "n" in p) shape = ` n${p["n"]}`;
  else if (bufs.length > 0) shape = ` n${bufs[bufs.length - 1]!.length}`;
  return `(${first}${dts})${shape}`;
}
