/**
 * CPU training throughput (not a test): forward + backward + AdamW tokens/s of a ~1M and a ~10M
 * parameter Qwen3 (presets tiny and small) on B packed sequences of length 256, with the
 * pure-TypeScript GEMM and with OpenBLAS, and side by side in the same run against PyTorch on the
 * CPU (bench/torch_train.py: the same architecture and step in plain torch).
 *
 *   node bench/cpu-train.ts [--steps 5] [--rounds 3] [--batch 4] [--seq 256] [--presets tiny,small] [--no-torch]
 *
 * PyTorch comes from Debian (`apt-get install python3-torch`); the script looks for it in
 * $NPR_PYTHON, /usr/bin/python3 and python3, and skips the comparison with the reason if none
 * imports torch.
 */
import { spawnSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/tensor/backend/cpu/index.ts";
import { qwen3ParamCount } from "../src/model/index.ts";
import type { Qwen3Config } from "../src/model/index.ts";
import { ROOT, loadPreset, makeTrainSetup, median, trainStep } from "./common.ts";

const { values: args } = parseArgs({
  options: {
    steps: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    presets: { type: "string", default: "tiny,small" },
    rounds: { type: "string", default: "3" },
    "no-torch": { type: "boolean", default: false },
  },
});
const STEPS = Number(args.steps);
const WARMUP = Number(args.warmup);
const B = Number(args.batch);
const S = Number(args.seq);
// The three contestants run in alternation for several rounds and each keeps its best round, so
// a burst of load from other processes penalizes one round, not one contestant.
const ROUNDS = Number(args.rounds);

interface Result {
  tokensPerS: number;
  medianS: number;
  loss: number;
}

function benchNpr(config: Qwen3Config, useBlas: boolean): Result & { path: string } {
  const backend = new CpuBackend({ useBlas });
  const setup = makeTrainSetup(config, backend, B, S);
  const times: number[] = [];
  let loss = NaN;
  for (let step = 0; step < WARMUP + STEPS; step++) {
    const t0 = performance.now();
    const l = trainStep(setup).loss;
    loss = l.item();
    if (step >= WARMUP) times.push((performance.now() - t0) / 1000);
  }
  const med = median(times);
  return { tokensPerS: (B * S) / med, medianS: med, loss, path: backend.gemmPath };
}

function findTorchPython(): { python: string | null; why: string } {
  const candidates = [process.env["NPR_PYTHON"], "/usr/bin/python3", "python3"].filter(Boolean) as string[];
  const reasons: string[] = [];
  for (const py of candidates) {
    const r = spawnSync(py, ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8" });
    if (r.status === 0) return { python: py, why: "" };
    reasons.push(`${py}: ${(r.stderr || r.error?.message || "failed").trim().split("\n").pop()}`);
  }
  return { python: null, why: `no python with torch (${reasons.join("; ")}); install with: apt-get install python3-torch` };
}

function benchTorch(python: string, configFile: string): Result & { version: string } {
  const r = spawnSync(
    python,
    [
      path.join(ROOT, "bench/torch_train.py"),
      "--config",
      configFile,
      "--seq",
      String(S),
      "--batch",
      String(B),
      "--steps",
      String(STEPS),
      "--warmup",
      String(WARMUP),
      "--threads",
      String(os.availableParallelism()),
    ],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`torch baseline failed: ${r.stderr}`);
  const j = JSON.parse(r.stdout.trim().split("\n").pop()!);
  return { tokensPerS: j.tokens_per_s, medianS: j.median_s, loss: j.loss, version: j.torch };
}

const torch = args["no-torch"] ? { python: null, why: "--no-torch given" } : findTorchPython();
console.log(`machine: ${os.cpus()[0]?.model ?? "?"}, ${os.availableParallelism()} cores, Node ${process.version}`);
console.log(
  `step: forward + cross-entropy + backward + clip + AdamW, B=${B} packed sequences x S=${S} tokens; median of ${STEPS} steps after ${WARMUP} warm-up, best of ${ROUNDS} alternating rounds\n`,
);
const header = ["preset", "params", "npr ts-gemm tok/s", "npr openblas tok/s", "torch tok/s", "openblas/torch"];
const rows: string[][] = [];
for (const preset of String(args.presets).split(",")) {
  const { file, config } = loadPreset(preset);
  let ts = benchNpr(config, false);
  let blas = benchNpr(config, true);
  let tt: (Result & { version: string }) | null = torch.python ? benchTorch(torch.python, file) : null;
  for (let r = 1; r < ROUNDS; r++) {
    const ts2 = benchNpr(config, false);
    if (ts2.tokensPerS > ts.tokensPerS) ts = ts2;
    const blas2 = benchNpr(config, true);
    if (blas2.tokensPerS > blas.tokensPerS) blas = blas2;
    if (tt) {
      const t2 = benchTorch(torch.python!, file);
      if (t2.tokensPerS > tt.tokensPerS) tt = t2;
    }
  }
  const blasNote = blas.path === "openblas" ? "" : " (openblas did not load)";
  let torchCell = "skipped";
  let ratio = "-";
  if (tt) {
    torchCell = tt.tokensPerS.toFixed(0);
    ratio = `${(blas.tokensPerS / tt.tokensPerS).toFixed(2)}x`;
  }
  rows.push([
    preset,
    qwen3ParamCount(config).toLocaleString("en-US"),
    ts.tokensPerS.toFixed(0),
    blas.tokensPerS.toFixed(0) + blasNote,
    torchCell,
    ratio,
  ]);
  console.error(`  ${preset}: loss npr ${blas.loss.toFixed(3)} (ts ${ts.loss.toFixed(3)})`);
}
if (!torch.python) console.log(`PyTorch comparison skipped: ${torch.why}\n`);
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
console.log(line(header));
console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
for (const r of rows) console.log(line(r));
