/**
 * Shared by the CLI process tests: run `node src/cli/main.ts ...` as a child process (with Node's
 * compile cache, which halves start-up), assert the documented one-line error form, and write a
 * tiny checkpoint in-process. Knows the CLI's error format; nothing about any command.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Qwen3Model, makeQwen3Config, saveQwen3 } from "../../src/model/index.ts";
import type { Qwen3Config } from "../../src/model/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { main } from "../../src/cli/program.ts";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CACHE = path.join(tmpdir(), "npr-test-compile-cache");

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  /** Text for stdin (default: none, stdin closed). */
  input?: string;
  env?: Record<string, string>;
  /** Kill the child after this long (default 20 s): a hang fails the test instead of stalling it. */
  timeoutMs?: number;
}

/** Runs the CLI with `args`; resolves when it exits (or is killed at the timeout). */
export function runCli(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["src/cli/main.ts", ...args], {
      cwd: ROOT,
      env: { ...process.env, NODE_COMPILE_CACHE: CACHE, ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 20_000);
    child.on("error", reject);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, ms: performance.now() - t0 });
    });
    child.stdin.on("error", () => {}); // a command that never reads stdin closes it under us
    child.stdin.end(opts.input ?? "");
  });
}

/**
 * Runs the CLI's main() in this process, capturing stdout and stderr, for sweeps over many bad
 * flags (a process each would cost ~0.5 s). Only for inputs that fail before any real work.
 */
export async function runInProcess(args: string[]): Promise<CliResult> {
  const t0 = performance.now();
  let stdout = "";
  let stderr = "";
  const out = process.stdout.write;
  const err = process.stderr.write;
  const saved = process.exitCode;
  process.exitCode = undefined;
  // The CLI writes strings; node:test's reporter (in this process) writes binary frames at any
  // tick, so those pass through untouched.
  const capture = (stream: NodeJS.WriteStream, real: typeof out, sink: (s: string) => void) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      if (typeof chunk !== "string") return (real as (...a: unknown[]) => boolean).call(stream, chunk, ...rest);
      sink(chunk);
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = capture(process.stdout, out, (s) => (stdout += s));
  process.stderr.write = capture(process.stderr, err, (s) => (stderr += s));
  try {
    await main(["node", "npr", ...args]);
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
  const status = typeof process.exitCode === "number" ? process.exitCode : process.exitCode === undefined ? 0 : Number(process.exitCode);
  process.exitCode = saved;
  return { status, signal: null, stdout, stderr, ms: performance.now() - t0 };
}

/** Runs several argument lists at once (two at a time: CI has two cores). */
export async function runAll(list: string[][], opts: RunOptions = {}): Promise<CliResult[]> {
  const out: CliResult[] = new Array(list.length);
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const i = next++;
      out[i] = await runCli(list[i]!, opts);
    }
  };
  await Promise.all([worker(), worker()]);
  return out;
}

/**
 * The documented error form: exit code 2, stderr exactly `npr: <Kind>: <one line>` plus at most
 * one `HINT:` line, no stack frame, nothing on stdout. `message` must match the first line.
 */
export function assertOneLineError(r: CliResult, kind: string, message: RegExp, what: string): void {
  const ctx = `${what}\n--- stderr:\n${r.stderr}--- stdout:\n${r.stdout.slice(0, 300)}`;
  assert.equal(r.signal, null, `killed (hang?) after ${r.ms.toFixed(0)} ms: ${ctx}`);
  assert.equal(r.status, 2, `exit code: ${ctx}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace: ${ctx}`);
  const lines = r.stderr
    .replace(/\n$/, "")
    .split("\n")
    .filter((l) => !l.startsWith("npr: warning:"));
  assert.ok(lines.length === 1 || (lines.length === 2 && lines[1]!.startsWith("HINT: ")), `not one line (+ HINT): ${ctx}`);
  assert.ok(lines[0]!.startsWith(`npr: ${kind}: `), `error kind: ${ctx}`);
  assert.match(lines[0]!, message, ctx);
  assert.equal(r.stdout, "", `stdout: ${ctx}`);
}

/** A fresh temporary folder. */
export function tempDir(prefix = "npr-cli-"): string {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

/**
 * A tiny random checkpoint with the byte tokenizer (f32), written in-process in ~10 ms:
 * V=300, C=32, 1 layer, and `maxPositionEmbeddings` positions (small, so budgets capped at the
 * context finish fast).
 */
export function writeTinyCheckpoint(dir: string, maxPositionEmbeddings = 128): Qwen3Config {
  const config = makeQwen3Config({
    vocabSize: 300,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    headDim: 16,
    ropeTheta: 10000,
    maxPositionEmbeddings,
    tieWordEmbeddings: true,
  });
  const model = Qwen3Model.random(config, { seed: 1, backend: new CpuBackend() });
  saveQwen3(model, dir, { dtype: "f32", overwrite: true });
  byteTokenizer().save(dir);
  return config;
}
