/**
 * A pool of worker threads that grade answers with a per-item time limit. Symbolic comparison can
 * take unbounded time on hostile input (`9^{9^9}` computes a billion-bit integer); a worker that
 * runs past the limit is terminated and replaced, the item is reported as
 * `{ correct: false, timeout: true }`, and the other workers keep going.
 * Exact matches of the normalised strings are answered on the calling thread without a round trip.
 * The pool size is capped by the machine (maxGraderPoolSize: cores and memory, each worker loads
 * its own compute engine) and the time limit by what a timer can express.
 * Knows grader.ts and the worker's message shapes; nothing about benchmarks or tasks.
 */
import { availableParallelism, totalmem } from "node:os";
import { Worker } from "node:worker_threads";
import { UsageError, invariant } from "../util/index.ts";

/** Memory one grader worker may take (its own Node isolate and compute engine, plus headroom). */
const WORKER_BYTES = 256 * 2 ** 20;
/** Longest per-item limit (1 hour): Node fires longer timers (past 2^31 - 1 ms) at once. */
export const MAX_TIME_LIMIT_MS = 3_600_000;

/**
 * Most workers a pool may start here: one per core (two at least, so a stuck item never stalls
 * grading), and no more than memory holds at WORKER_BYTES each. A pool of 1000 workers on two
 * cores only thrashes: it took 8 GB in 30 s without grading faster.
 */
export function maxGraderPoolSize(cores = availableParallelism(), memoryBytes = totalmem()): number {
  return Math.max(1, Math.min(Math.max(2, cores), Math.floor(memoryBytes / WORKER_BYTES)));
}
import { extractAnswer, NPR_FALLBACKS } from "./extract.ts";
import { cleanOptions, type GradeOptions, type GradeResult } from "./grader.ts";
import type { WorkerReply, WorkerRequest } from "./grader-worker.ts";
import { normalizeAnswer } from "./normalize.ts";

export interface GraderPoolOptions {
  /** Worker threads; default min(available cores, 4); at most maxGraderPoolSize(). */
  size?: number;
  /** Per-item limit in ms, measured from dispatch to a warm worker; default 1000, at most MAX_TIME_LIMIT_MS. */
  timeLimitMs?: number;
  /** Answer exact normalised matches on the calling thread (default true). */
  fastPath?: boolean;
}

interface Job {
  req: WorkerRequest;
  extracted: string | null;
  resolve: (r: GradeResult) => void;
}

interface Slot {
  worker: Worker;
  ready: boolean;
  job: Job | null;
  timer: NodeJS.Timeout | null;
}

export interface GraderPoolStats {
  graded: number;
  fastPath: number;
  timeouts: number;
  respawns: number;
  errors: number;
}

export class GraderPool {
  readonly size: number;
  readonly timeLimitMs: number;
  private readonly fastPath: boolean;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  readonly stats: GraderPoolStats = { graded: 0, fastPath: 0, timeouts: 0, respawns: 0, errors: 0 };

  constructor(opts: GraderPoolOptions = {}) {
    const max = maxGraderPoolSize();
    this.size = opts.size ?? Math.min(max, 4);
    if (!Number.isInteger(this.size) || this.size < 1 || this.size > max) {
      throw new UsageError(`grader pool size must be an integer in [1, ${max}], got ${this.size}`, {
        code: "bad_pool_size",
        param: "--pool",
        hint: `this machine has ${availableParallelism()} cores and ${(totalmem() / 2 ** 30).toFixed(0)} GiB of memory; more workers than that only slow grading down`,
      });
    }
    this.timeLimitMs = opts.timeLimitMs ?? 1000;
    if (!Number.isInteger(this.timeLimitMs) || this.timeLimitMs < 1 || this.timeLimitMs > MAX_TIME_LIMIT_MS) {
      throw new UsageError(`grader time limit must be an integer number of ms in [1, ${MAX_TIME_LIMIT_MS}], got ${this.timeLimitMs}`, {
        code: "bad_time_limit",
        param: "--time-limit",
      });
    }
    this.fastPath = opts.fastPath ?? true;
    for (let i = 0; i < this.size; i++) this.slots.push(this.spawn());
  }

  /** Grades one response; never rejects (a crash or timeout is a wrong answer with a flag). */
  grade(response: string, answer: string, opts: GradeOptions = {}, testSpinMs?: number): Promise<GradeResult> {
    invariant(!this.closed, "GraderPool.grade called after close()");
    const extracted = extractAnswer(response, opts.fallbacks ?? NPR_FALLBACKS);
    if (extracted === null) return Promise.resolve({ correct: false, extracted: null });
    if (this.fastPath && testSpinMs === undefined) {
      const a = normalizeAnswer(extracted).key;
      if (a !== "" && a === normalizeAnswer(answer).key) {
        this.stats.graded++;
        this.stats.fastPath++;
        return Promise.resolve({ correct: true, extracted });
      }
    }
    return new Promise((resolve) => {
      const req: WorkerRequest = { id: this.nextId++, response, answer, opts: cleanOptions(opts) };
      if (testSpinMs !== undefined) req.spinMs = testSpinMs;
      this.queue.push({ req, extracted, resolve });
      this.dispatch();
    });
  }

  /** Resolves once every worker has loaded the engine (grading before that just queues). */
  whenReady(): Promise<void> {
    return new Promise((resolve) => {
      const check = () => (this.closed || this.slots.every((s) => s.ready) ? resolve() : setTimeout(check, 5));
      check();
    });
  }

  /** Grades many items concurrently, results in input order. */
  gradeMany(items: readonly { response: string; answer: string; opts?: GradeOptions }[]): Promise<GradeResult[]> {
    return Promise.all(items.map((it) => this.grade(it.response, it.answer, it.opts)));
  }

  /** Terminates every worker; queued items resolve as wrong. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const job of this.queue.splice(0)) job.resolve({ correct: false, extracted: job.extracted });
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.timer) clearTimeout(s.timer);
        s.job?.resolve({ correct: false, extracted: s.job.extracted });
        s.job = null;
        await s.worker.terminate();
      }),
    );
  }

  private spawn(): Slot {
    const worker = new Worker(new URL("./grader-worker.ts", import.meta.url));
    const slot: Slot = { worker, ready: false, job: null, timer: null };
    worker.on("message", (msg: WorkerReply) => this.onMessage(slot, msg));
    worker.on("error", (err) => this.onCrash(slot, err));
    worker.on("exit", (code) => {
      if (!this.closed && this.slots.includes(slot)) this.onCrash(slot, new Error(`grader worker exited with code ${code}`));
    });
    return slot;
  }

  private onMessage(slot: Slot, msg: WorkerReply): void {
    if (msg.type === "ready") {
      slot.ready = true;
      this.dispatch();
      return;
    }
    const job = slot.job;
    // A late reply from a job already timed out cannot arrive: its worker was terminated.
    invariant(job !== null && job.req.id === msg.id, () => `grader worker replied to ${msg.id}, expected ${job?.req.id}`);
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    slot.job = null;
    this.stats.graded++;
    if (msg.error !== undefined) this.stats.errors++;
    job.resolve({ correct: msg.correct, extracted: msg.extracted ?? job.extracted });
    this.dispatch();
  }

  /** Replaces a slot's worker; its current job (if any) resolves with `result`. */
  private replace(slot: Slot, result: GradeResult | null): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    if (slot.timer) clearTimeout(slot.timer);
    const job = slot.job;
    slot.job = null;
    this.slots[i] = this.spawn();
    this.stats.respawns++;
    void slot.worker.terminate();
    if (job && result) job.resolve(result);
    this.dispatch();
  }

  private onCrash(slot: Slot, _err: unknown): void {
    if (this.closed) return;
    this.stats.errors++;
    this.replace(slot, slot.job ? { correct: false, extracted: slot.job.extracted } : null);
  }

  private dispatch(): void {
    if (this.closed) return;
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (!slot.ready || slot.job !== null) continue;
      const job = this.queue.shift()!;
      slot.job = job;
      slot.timer = setTimeout(() => {
        this.stats.timeouts++;
        this.stats.graded++;
        this.replace(slot, { correct: false, extracted: job.extracted, timeout: true });
      }, this.timeLimitMs);
      slot.worker.postMessage(job.req);
    }
  }
}
