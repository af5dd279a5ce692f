/**
 * `npr grade`: stdin JSONL -> stdout JSONL, one result per input line, in input order.
 * - Without --task: `{"response", "answer"}` -> `{"correct", "extracted"}` (+ `"timeout": true`
 *   when the per-item limit hit), graded through GraderPool (extraction + math equivalence).
 * - With --task countdown|logic-grid: the rows `npr tasks sample` prints, with a `response` field
 *   added, graded by the task's own verifier (the RL reward): the boxed expression or grid is
 *   checked against the numbers or clues, never compared with the row's `answer`.
 * A bad input line gives an error line naming its line number and the run goes on. A synthetic
 * sample sent without --task is such an error: comparing with its answer would reward `\boxed{84}`.
 * Composition only: the grading rules live in src/tasks.
 */
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { UsageError } from "../util/index.ts";
import { parseChoice, parseIntArg } from "./args.ts";
import { writeOut } from "./io.ts";
import {
  ALL_FALLBACKS,
  evaluateSynthetic,
  exampleFromRecord,
  GraderPool,
  maxGraderPoolSize,
  MAX_TIME_LIMIT_MS,
  SYNTHETIC_TASKS,
  type Fallback,
  type GradeResult,
  type SyntheticTaskName,
} from "../tasks/index.ts";

function parseFallbacks(s: string): Fallback[] {
  if (s === "none" || s === "") return [];
  const list = s.split(",").map((x) => x.trim());
  for (const f of list) {
    if (!(ALL_FALLBACKS as readonly string[]).includes(f)) {
      throw new UsageError(`--fallbacks: unknown fallback "${f}"`, {
        code: "bad_flag",
        param: "--fallbacks",
        hint: `a comma list of ${ALL_FALLBACKS.join(", ")}, or "none"`,
      });
    }
  }
  return list as Fallback[];
}

/** One input line as a JSON object, or the error line to print for it. */
function readRow(raw: string, n: number): { row: Record<string, unknown> } | { error: string } {
  let rec: unknown;
  try {
    rec = JSON.parse(raw);
  } catch (err) {
    return { error: `line ${n}: invalid JSON (${(err as Error).message})` };
  }
  if (typeof rec !== "object" || rec === null || Array.isArray(rec)) return { error: `line ${n}: expected a JSON object` };
  return { row: rec as Record<string, unknown> };
}

/** The result line of one synthetic-task row, graded by the task's verifier. */
function gradeSyntheticRow(task: SyntheticTaskName, row: Record<string, unknown>, n: number): string {
  if (typeof row.response !== "string") return JSON.stringify({ error: `line ${n}: expected a "response" string` });
  if (row.task !== undefined && row.task !== task)
    return JSON.stringify({ error: `line ${n}: a ${String(row.task)} sample, but --task is ${task}` });
  const ex = exampleFromRecord(task, row);
  if (!ex.ok) return JSON.stringify({ error: `line ${n}: ${ex.why}` });
  const o = evaluateSynthetic(task, ex.example, row.response);
  const id = typeof row.id === "string" ? { id: row.id } : {};
  if (o.kind === "malformed") return JSON.stringify({ ...id, correct: false, extracted: null, malformed: o.why });
  return JSON.stringify({ ...id, correct: o.correct, extracted: o.extracted, ...(o.detail !== undefined ? { detail: o.detail } : {}) });
}

export function registerGradeCommands(program: Command): void {
  program
    .command("grade")
    .description(
      'grade stdin JSONL lines: {"response","answer"} by answer equivalence, or with --task the rows of `npr tasks sample` plus "response" by the task\'s verifier',
    )
    .option("--task <name>", `grade synthetic-task rows by the task's verifier: ${SYNTHETIC_TASKS.join(" | ")}`)
    .option(
      "--fallbacks <list>",
      'extraction fallbacks when there is no \\boxed{}, tried in order: a comma list of answer-is, bare, last-number (last-number implies bare: a bare answer is graded whole), or "none"',
      "answer-is,last-number",
    )
    .option("--pool <n>", "grader worker threads", "2")
    .option("--time-limit <ms>", `per-item time limit in milliseconds (1-${MAX_TIME_LIMIT_MS})`, "1000")
    .action(async (o: { task?: string; fallbacks: string; pool: string; timeLimit: string }, cmd: Command) => {
      if (o.task !== undefined) {
        const task = parseChoice(o.task, "--task", SYNTHETIC_TASKS);
        // The verifiers are exact and bounded (a countdown expression reads at most 200 characters), so
        // they run in-process; the pool's flags do not apply and are refused rather than ignored.
        for (const flag of ["fallbacks", "pool", "timeLimit"]) {
          if (cmd.getOptionValueSource(flag) === "cli") {
            const name = `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
            throw new UsageError(`${name} does not apply with --task (the task's verifier grades in-process)`, {
              code: "bad_flag",
              param: name,
            });
          }
        }
        let lineNo = 0;
        for await (const raw of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
          lineNo++;
          if (raw.trim() === "") continue;
          const r = readRow(raw, lineNo);
          writeOut(`${"error" in r ? JSON.stringify({ error: r.error }) : gradeSyntheticRow(task, r.row, lineNo)}\n`);
        }
        return;
      }
      const fallbacks = parseFallbacks(o.fallbacks);
      const timeLimitMs = parseIntArg(o.timeLimit, "--time-limit", 1, MAX_TIME_LIMIT_MS);
      const pool = new GraderPool({
        size: parseIntArg(
          o.pool,
          "--pool",
          1,
          maxGraderPoolSize(),
          `at most ${maxGraderPoolSize()} workers here (one per core, memory permitting)`,
        ),
        timeLimitMs,
      });
      // Results are written in input order; a slow item holds back only the lines after it.
      const pending: Promise<string>[] = [];
      let lineNo = 0;
      const render = (r: GradeResult) =>
        JSON.stringify(
          r.timeout ? { correct: r.correct, extracted: r.extracted, timeout: true } : { correct: r.correct, extracted: r.extracted },
        );
      try {
        for await (const raw of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
          lineNo++;
          if (raw.trim() === "") continue;
          const n = lineNo;
          const r = readRow(raw, n);
          if ("error" in r) {
            pending.push(Promise.resolve(JSON.stringify({ error: r.error })));
            continue;
          }
          const { response, answer, task } = r.row;
          if (typeof task === "string" && (SYNTHETIC_TASKS as readonly string[]).includes(task)) {
            pending.push(
              Promise.resolve(
                JSON.stringify({
                  error: `line ${n}: a ${task} sample; grade it with --task ${task} (its "answer" is one solution, not a value to compare with)`,
                }),
              ),
            );
            continue;
          }
          if (typeof response !== "string" || typeof answer !== "string") {
            pending.push(Promise.resolve(JSON.stringify({ error: `line ${n}: expected {"response": string, "answer": string}` })));
            continue;
          }
          pending.push(pool.grade(response, answer, { fallbacks }).then(render));
        }
        for (const p of pending) writeOut(`${await p}\n`);
      } finally {
        await pool.close();
      }
    });
}
