/**
 * `npr grade`: stdin JSONL `{"response", "answer"}` -> stdout JSONL `{"correct", "extracted"}`
 * (+ `"timeout": true` when the per-item limit hit), graded through GraderPool. A bad input line
 * gives an error line naming its line number and the run goes on; output order is input order.
 * Composition only: the grading rules live in src/tasks.
 */
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { UsageError } from "../util/errors.ts";
import { ALL_FALLBACKS, GraderPool, type Fallback, type GradeResult } from "../tasks/index.ts";

function parseFallbacks(s: string): Fallback[] {
  if (s === "none" || s === "") return [];
  const list = s.split(",").map((x) => x.trim());
  for (const f of list) {
    if (!(ALL_FALLBACKS as readonly string[]).includes(f)) {
      throw new UsageError(`--fallbacks: unknown fallback "${f}"`, { code: "bad_flag", param: "--fallbacks", hint: `a comma list of ${ALL_FALLBACKS.join(", ")}, or "none"` });
    }
  }
  return list as Fallback[];
}

function positiveInt(flag: string, s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag}: expected a positive integer, got "${s}"`, { code: "bad_flag", param: flag });
  return n;
}

export function registerGradeCommands(program: Command): void {
  program
    .command("grade")
    .description('grade stdin JSONL {"response","answer"} lines; writes {"correct","extracted"} per line')
    .option("--fallbacks <list>", 'extraction fallbacks when there is no \\boxed{}, tried in order: a comma list of answer-is, bare, last-number (last-number implies bare: a bare answer is graded whole), or "none"', "answer-is,last-number")
    .option("--pool <n>", "grader worker threads", "2")
    .option("--time-limit <ms>", "per-item time limit in milliseconds", "1000")
    .action(async (o: { fallbacks: string; pool: string; timeLimit: string }) => {
      const fallbacks = parseFallbacks(o.fallbacks);
      const pool = new GraderPool({ size: positiveInt("--pool", o.pool), timeLimitMs: positiveInt("--time-limit", o.timeLimit) });
      // Results are written in input order; a slow item holds back only the lines after it.
      const pending: Promise<string>[] = [];
      let lineNo = 0;
      const render = (r: GradeResult) => JSON.stringify(r.timeout ? { correct: r.correct, extracted: r.extracted, timeout: true } : { correct: r.correct, extracted: r.extracted });
      try {
        for await (const raw of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
          lineNo++;
          if (raw.trim() === "") continue;
          const n = lineNo;
          let rec: unknown;
          try {
            rec = JSON.parse(raw);
          } catch (err) {
            pending.push(Promise.resolve(JSON.stringify({ error: `line ${n}: invalid JSON (${(err as Error).message})` })));
            continue;
          }
          const r = rec as { response?: unknown; answer?: unknown };
          if (typeof rec !== "object" || rec === null || typeof r.response !== "string" || typeof r.answer !== "string") {
            pending.push(Promise.resolve(JSON.stringify({ error: `line ${n}: expected {"response": string, "answer": string}` })));
            continue;
          }
          pending.push(pool.grade(r.response, r.answer, { fallbacks }).then(render));
        }
        for (const p of pending) process.stdout.write(`${await p}\n`);
      } finally {
        await pool.close();
      }
    });
}
