/**
 * Per-primitive profile of one CPU training step (not a test): wraps every CpuBackend method with
 * a timer, runs forward + cross-entropy + backward + clip + AdamW on a random Qwen3 of a preset,
 * and prints where the time of the steps after the warm-up went (per step, averaged), plus the
 * kernels that ran over worker threads.
 *
 *   node bench/profile-step.ts [tiny|small] [--steps 5] [--warmup 2] [--batch 4] [--seq 256] [--threads N]
 *
 * Unset OPENBLAS_CORETYPE first where the environment forces a slower core (see bench/cpu-train.ts).
 * Times are wall-clock per call, so a kernel split over threads shows its elapsed time.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/tensor/backend/cpu/index.ts";
import { PRIMITIVES } from "../src/tensor/backend/types.ts";
import { AdamW, clipGradNorm, crossEntropy, Tensor } from "../src/tensor/index.ts";
import { Qwen3Model, parseQwen3Config } from "../src/model/index.ts";
import { packedCausalLayout } from "../src/util/layout.ts";
import { Rng } from "../src/util/rng.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: "string", default: "5" },
    warmup: { type: "string", default: "2" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    threads: { type: "string" },
  },
});
const preset = positionals[0] ?? "tiny";
const file = path.join(ROOT, "presets/models", `${preset}.json`);
const { config } = parseQwen3Config(JSON.parse(fs.readFileSync(file, "utf8")), file);
const backend = new CpuBackend({ useBlas: true, threads: args.threads ? Number(args.threads) : undefined });

// Every primitive and buffer method of the backend is replaced on the instance by a timed
// wrapper (internal helpers are not, so nothing is counted twice); unary/binary/scalar ops are
// split by their op name.
const times: Record<string, number> = {};
const calls: Record<string, number> = {};
const proto = CpuBackend.prototype as unknown as Record<string, unknown>;
const timed = new Set<string>([...Object.values(PRIMITIVES).flat(), "alloc", "free", "write", "read"]);
for (const name of Object.getOwnPropertyNames(proto)) {
  const desc = Object.getOwnPropertyDescriptor(proto, name);
  if (!timed.has(name) || !desc || typeof desc.value !== "function") continue;
  const f = desc.value as (...a: unknown[]) => unknown;
  const split = ["unary", "binary", "scalar", "unaryBackward"].includes(name);
  (backend as unknown as Record<string, unknown>)[name] = function (this: unknown, ...a: unknown[]) {
    const key = split ? `${name}.${String(a[0])}` : name;
    const t0 = performance.now();
    const r = f.apply(this, a);
    times[key] = (times[key] ?? 0) + performance.now() - t0;
    calls[key] = (calls[key] ?? 0) + 1;
    return r;
  };
}

const model = Qwen3Model.random(config, { seed: 0, backend });
const params = model.parameters();
const opt = new AdamW(params, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
const rng = new Rng(1);
const B = Number(args.batch);
const S = Number(args.seq);
const V = config.vocabSize;
const ids = new Int32Array(B * S); // [B * S] packed token ids
const targets = new Int32Array(B * S);
for (let i = 0; i < B * S; i++) {
  ids[i] = rng.int(V);
  targets[i] = rng.int(V);
}
const layout = packedCausalLayout(Array(B).fill(S));
const targetT = Tensor.fromArray(targets, [B * S], { dtype: "i32", backend });
console.log(`${preset}: B=${B} x S=${S}, threads ${backend.threads} (${backend.whyNoThreads ?? "pool usable"}), gemm ${backend.gemmPath}`);
const WARMUP = Number(args.warmup);
const STEPS = Number(args.steps);
const stepMs: number[] = [];
for (let s = 0; s < WARMUP + STEPS; s++) {
  // Timers count from the first step after the warm-up on.
  if (s === WARMUP) {
    for (const k in times) times[k] = 0;
    for (const k in calls) calls[k] = 0;
  }
  const t0 = performance.now();
  const logits = model.forward(ids, layout);
  const loss = crossEntropy(logits, targetT);
  const t1 = performance.now();
  opt.zeroGrad();
  loss.backward();
  const t2 = performance.now();
  clipGradNorm(params, 1.0);
  opt.step();
  const ms = performance.now() - t0;
  if (s >= WARMUP) stepMs.push(ms);
  console.log(`step ${s}${s < WARMUP ? " (warm-up)" : ""}: ${ms.toFixed(0)} ms (forward ${(t1 - t0).toFixed(0)}, backward ${(t2 - t1).toFixed(0)}, optimizer ${(performance.now() - t2).toFixed(0)})`);
}
const mean = stepMs.reduce((a, b) => a + b, 0) / stepMs.length;
const sorted = Object.entries(times).sort((a, b) => b[1] - a[1]);
const inBackend = sorted.reduce((a, [, v]) => a + v, 0) / STEPS;
console.log(`${STEPS} steps: mean ${mean.toFixed(1)} ms, min ${Math.min(...stepMs).toFixed(1)} ms (${((B * S) / (mean / 1000)).toFixed(0)} tok/s at the mean); ${inBackend.toFixed(1)} ms a step inside the backend`);
for (const [k, v] of sorted.slice(0, 24)) {
  console.log(`  ${k.padEnd(26)} ${(v / STEPS).toFixed(2).padStart(7)} ms  ${String(calls[k] / STEPS).padStart(5)} calls a step`);
}
const threaded = Object.entries(backend.counters()).filter(([k]) => k.startsWith("threads."));
console.log(`split over threads (all steps): ${threaded.map(([k, n]) => `${k.slice(8)} ${n}`).join(", ") || "none"}`);
