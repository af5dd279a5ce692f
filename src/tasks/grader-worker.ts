/**
 * Worker-thread side of GraderPool: loads the compute engine once, warms it up, says "ready", then
 * grades one request at a time and posts the result back. A request that runs too long is not
 * this file's concern: the pool terminates the whole worker and starts another.
 * Knows the message shapes of grader-pool.ts and nothing else.
 */
import { parentPort } from "node:worker_threads";
import { invariant } from "../util/index.ts";
import { gradeAnswer, type GradeOptions } from "./grader.ts";

export interface WorkerRequest {
  id: number;
  response: string;
  answer: string;
  opts: GradeOptions;
  /** Test hook: busy-wait this long before grading (to exercise the time limit). */
  spinMs?: number;
}

export type WorkerReply = { type: "ready" } | { type: "result"; id: number; correct: boolean; extracted: string | null; error?: string };

const port = parentPort;
invariant(port !== null, "grader-worker.ts must run inside a worker thread");

// The first parse pays for the engine's lazy initialisation; do it before accepting work so a
// fresh worker's first item is not charged for it against the time limit.
gradeAnswer("\\boxed{\\frac{1}{2}}", "0.5");
port.postMessage({ type: "ready" } satisfies WorkerReply);

port.on("message", (req: WorkerRequest) => {
  if (req.spinMs) {
    const until = Date.now() + req.spinMs;
    while (Date.now() < until) {
      // busy on purpose
    }
  }
  try {
    const r = gradeAnswer(req.response, req.answer, req.opts);
    port.postMessage({ type: "result", id: req.id, correct: r.correct, extracted: r.extracted } satisfies WorkerReply);
  } catch (err) {
    // A grader bug must not take the pool down: report the item as wrong, with the reason.
    const msg = err instanceof Error ? err.message : String(err);
    port.postMessage({ type: "result", id: req.id, correct: false, extracted: null, error: msg } satisfies WorkerReply);
  }
});
