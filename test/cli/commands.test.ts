/**
 * Class: docs and behaviour. `backend check` runs primitives against a reference on a CPU-only
 * machine (its default picks what the machine has); `bundle` packs test/ and bench/ as
 * docs/cli.md says; the demo validates before writing, reports progress and its GEMM path, and
 * suggests a next command whose budget fits the structure (run here to prove it); long work
 * reports progress lines; the grader pool is capped by the machine.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { bundleFiles, SOURCE_DIRS } from "../../src/cli/bundle.ts";
import { Progress } from "../../src/cli/io.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { maxGraderPoolSize } from "../../src/tasks/grader-pool.ts";
import { assertOneLineError, runAll, runCli, tempDir } from "./helpers.ts";

test("backend check: --backend cpu compares a GEMM and an attention with float64; the default picks what is here", async () => {
  const [cpu, auto] = await runAll([
    ["backend", "check", "--backend", "cpu"],
    ["backend", "check"],
  ]);
  assert.equal(cpu!.status, 0, cpu!.stderr);
  const path_ = new CpuBackend().gemmPath;
  assert.match(cpu!.stdout, new RegExp(`^cpu backend: GEMM path ${path_}`));
  const m = /smoke: GEMM 64x48x80 max \|cpu - float64\| (\S+), causal attention T=33 H=4 D=64 (\S+) /.exec(cpu!.stdout);
  assert.ok(m, cpu!.stdout);
  console.log(`cpu (${path_}) vs float64: GEMM ${m![1]}, attention ${m![2]}`);
  assert.ok(Number(m![1]) < 1e-4 && Number(m![2]) < 1e-5);
  if (cudaUnavailable() !== null) {
    // No GPU here: the default checks the CPU instead of failing on cuda.
    assert.equal(auto!.status, 0, auto!.stderr);
    assert.match(auto!.stdout, /^backend auto: cpu \(cuda cannot start here: .*\)\ncpu backend: GEMM path/);
    assert.match(auto!.stdout, /\nok\n$/);
  }
});

test("bundle packs src, bin, presets, test and bench", () => {
  assert.deepEqual(SOURCE_DIRS, ["src", "bin", "presets", "test", "bench"]);
  const files = bundleFiles();
  for (const f of ["test/cli/commands.test.ts", "test/layering.test.ts", "bench/gemm.ts", "src/cli/main.ts", "bin/npr.js"]) {
    assert.ok(files.includes(f), `${f} is packed`);
  }
});

test("demo: flags checked before writing; progress, GEMM path and a next command whose budget fits", { timeout: 60_000 }, async () => {
  const dir = path.join(tempDir(), "demo");
  const bad = await runCli(["demo", "--dir", dir, "--structure", "2x0"]);
  assertOneLineError(bad, "UsageError", /^npr: UsageError: --structure: "2x0" is not BxL/, "bad structure");
  assert.match(bad.stderr, /HINT: for example --structure "3x16,2x8"/, "the hint names the demo's own flag");
  assert.equal(existsSync(dir), false, "no checkpoint written for a bad flag");

  const r = await runCli(["demo", "--dir", dir, "--structure", "2x16,2x8", "--repeats", "1"], { timeoutMs: 50_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /npr demo: CPU backend, GEMM path (openblas|typescript)/);
  assert.match(r.stderr, /npr demo: warm-up run: \d+ tokens in/);
  assert.match(r.stderr, /npr demo: sequential run 1 of 1: \d+ tokens in [\d.]+ s/);
  assert.match(r.stderr, /npr demo: parallel run 1 of 1: /);
  assert.match(r.stdout, /speed-up: [\d.]+x tokens\/s, parallel versus sequential \(.*GEMM path (openblas|typescript), best of 1\)/);
  const next =
    /next: npx npr generate --model (\S+) --prompt "\.\.\." --force-structure "([^"]+)" --max-tokens (\d+) --temperature 0\.7 --top-p 0\.95/.exec(
      r.stdout,
    );
  assert.ok(next, r.stdout);
  const serialized = Math.max(...[...r.stdout.matchAll(/^\| (?:sequential|parallel) \| (\d+) \|/gm)].map((x) => Number(x[1])));
  assert.ok(Number(next![3]) >= serialized, `--max-tokens ${next![3]} covers the ${serialized} serialized tokens`);
  // The suggested command, as printed (with a prompt), finishes the structure inside its budget.
  const gen = await runCli([
    "generate",
    "--model",
    next![1]!,
    "--prompt",
    "What is 2+2?",
    "--force-structure",
    next![2]!,
    "--max-tokens",
    next![3]!,
    "--temperature",
    "0.7",
    "--top-p",
    "0.95",
    "--json",
  ]);
  assert.equal(gen.status, 0, gen.stderr);
  const [res] = JSON.parse(gen.stdout) as Array<{ finishReason: string; malformed: string | null }>;
  assert.deepEqual([res!.finishReason, res!.malformed], ["stop", null]);
});

test("progress: a line per interval with done/total, rate note and ETA; nothing for short work", () => {
  const lines: string[] = [];
  const real = process.stderr.write;
  process.stderr.write = ((s: string) => (lines.push(String(s)), true)) as typeof process.stderr.write;
  try {
    const quiet = new Progress({ label: "quiet", total: 10, tty: false });
    quiet.update(5);
    const p = new Progress({ label: "npr engine fuzz", total: 10, tty: false, intervalMs: 0 });
    p.update(4, "12 tokens");
    p.finish();
  } finally {
    process.stderr.write = real;
  }
  assert.equal(lines.length, 1, lines.join(""));
  assert.match(lines[0]!, /^npr engine fuzz: 4\/10 \(40%\), 12 tokens, [\d.]+ s, ETA [\d.]+ s\n$/);
});

test("grade: --pool is capped by the machine, with the cap in the message", async () => {
  const r = await runCli(["grade", "--pool", "1000"]);
  assertOneLineError(
    r,
    "UsageError",
    new RegExp(`^npr: UsageError: --pool must be an integer in \\[1, ${maxGraderPoolSize()}\\], got "1000"$`),
    "pool",
  );
});
