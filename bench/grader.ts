/**
 * Grader throughput on the MATH500 oracle through GraderPool (target: 200 items/s on 2 cores).
 * Three rows: the oracle with the calling-thread fast path (what `npr grade` does), the oracle with
 * every item sent to a worker (fast path off), and the "wrong answer" pairs (each gold against the
 * next item's answer), which exercise the symbolic comparison. Worker start-up is excluded.
 * usage: node bench/grader.ts [DATA_DIR] [--pool N]
 */
import { fileURLToPath } from "node:url";
import { GraderPool, loadBenchmark } from "../src/tasks/index.ts";

const args = process.argv.slice(2);
const poolAt = args.indexOf("--pool");
const size = poolAt >= 0 ? Number(args[poolAt + 1]) : 2;
const dataDir =
  args.find((a, i) => !a.startsWith("--") && (poolAt < 0 || i !== poolAt + 1)) ??
  fileURLToPath(new URL("../../shared/data", import.meta.url));

const task = loadBenchmark("math500", dataDir);
const items = Array.from({ length: task.size }, (_, i) => task.get(i));
const oracle = items.map((ex) => ({ response: `The answer is \\boxed{${ex.answer}}.`, answer: ex.answer }));
const wrong = items.map((ex, i) => ({ response: `\\boxed{${items[(i + 1) % items.length]!.answer}}`, answer: ex.answer }));

async function run(label: string, batch: typeof oracle, fastPath: boolean): Promise<void> {
  const pool = new GraderPool({ size, timeLimitMs: 2000, fastPath });
  await pool.whenReady();
  const t0 = performance.now();
  const res = await pool.gradeMany(batch);
  const s = (performance.now() - t0) / 1000;
  const correct = res.filter((r) => r.correct).length;
  const timeouts = res.filter((r) => r.timeout).length;
  console.log(
    `| ${label.padEnd(34)} | ${String(batch.length).padStart(5)} | ${String(size).padStart(4)} | ${(batch.length / s).toFixed(0).padStart(8)} | ${String(correct).padStart(7)} | ${String(timeouts).padStart(8)} |`,
  );
  await pool.close();
}

console.log(`| ${"MATH500".padEnd(34)} | items | pool | items/s  | correct | timeouts |`);
console.log(`|${"-".repeat(36)}|-------|------|----------|---------|----------|`);
await run("oracle, fast path (default)", oracle, true);
await run("oracle, every item through a worker", oracle, false);
await run("wrong answers (next item's gold)", wrong, false);
