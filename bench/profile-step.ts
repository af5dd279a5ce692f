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
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/tensor/backend/cpu/index.ts";
import { PRIMITIVES } from "../src/tensor/backend/types.ts";
import { loadPreset, makeTrainSetup, trainStep } from "./common.ts";

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
const { config } = loadPreset(preset);
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

const B = Number(args.batch);
const S = Number(args.seq);
const setup = makeTrainSetup(config, backend, B, S);
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
  const { ms: phase } = trainStep(setup);
  const ms = phase.forward + phase.backward + phase.optimizer;
  if (s >= WARMUP) stepMs.push(ms);
  console.log(
    `step ${s}${s < WARMUP ? " (warm-up)" : ""}: ${ms.toFixed(0)} ms (forward ${phase.forward.toFixed(0)}, backward ${phase.backward.toFixed(0)}, optimizer ${phase.optimizer.toFixed(0)})`,
  );
}
const mean = stepMs.reduce((a, b) => a + b, 0) / stepMs.length;
const sorted = Object.entries(times).sort((a, b) => b[1] - a[1]);
const inBackend = sorted.reduce((a, [, v]) => a + v, 0) / STEPS;
console.log(
  `${STEPS} steps: mean ${mean.toFixed(1)} ms, min ${Math.min(...stepMs).toFixed(1)} ms (${((B * S) / (mean / 1000)).toFixed(0)} tok/s at the mean); ${inBackend.toFixed(1)} ms a step inside the backend`,
);
for (const [k, v] of sorted.slice(0, 24)) {
  console.log(`  ${k.padEnd(26)} ${(v / STEPS).toFixed(2).padStart(7)} ms  ${String(calls[k] / STEPS).padStart(5)} calls a step`);
}
const threaded = Object.entries(backend.counters()).filter(([k]) => k.startsWith("threads."));
console.log(`split over threads (all steps): ${threaded.map(([k, n]) => `${k.slice(8)} ${n}`).join(", ") || "none"}`);
