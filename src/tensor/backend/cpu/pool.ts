/**
 * The CPU backend's worker threads, behind a synchronous API: a job is one named task of
 * worker-kernels.ts cut into a fixed number of chunks; the caller and the workers take chunks off
 * a shared atomic counter, and the caller blocks in Atomics.wait until every chunk is finished. Arrays
 * reach the workers as SharedArrayBuffer views, so a chunk writes its results in place.
 *
 * It knows SharedArrayBuffers, Atomics and task names only: no kernel, no buffer type, no Tensor.
 * This module is also the worker threads' entry point; each worker imports worker-kernels.ts once.
 */

import v8 from "node:v8";
import vm from "node:vm";
import { MessageChannel, Worker, isMainThread, receiveMessageOnPort, workerData } from "node:worker_threads";
import type { MessagePort } from "node:worker_threads";
import { ENV } from "../../../util/index.ts";
import { InvariantError, invariant } from "../../../util/index.ts";

/** An array a task can receive: a typed array over a SharedArrayBuffer. */
export type Shareable = Float32Array | Float64Array | Int32Array;

/**
 * One chunk of a task: `arrays` are the job's arrays (views of the same memory on every thread),
 * `params` its structured-cloned parameters. A task must write only what chunk `chunk` owns, so
 * the result does not depend on which thread ran which chunk.
 */
export type Task = (arrays: Shareable[], params: never, chunk: number) => void;

// Where the workers find the task table (`export const TASKS: Record<string, Task>`). Resolved
// here, imported only inside workers: the pool itself never loads a kernel.
const TASKS_URL = new URL("./worker-kernels.ts", import.meta.url).href;

// ---------------------------------------------------------------------------------------------
// Protocol. The caller posts each worker the job on its port and bumps the worker's JOB counter;
// an idle worker sleeps in Atomics.wait on that counter, drains its port and works every job it
// finds. A job whose chunks were all taken before the worker got to it costs the worker one
// atomic add: the caller never waits for a worker that is asleep or descheduled, only for chunks
// a worker took and has not finished.
//
//   ctl (Int32Array over a SharedArrayBuffer, one per worker):
//     [READY]  0 -> 1 once the worker's task table loaded (-1: it failed to load)
//     [JOB]    jobs posted so far (caller adds, worker waits on it)
//     [GC]     collections asked for so far (see allocShared); the worker collects when it changes
//   work (Int32Array over a fresh SharedArrayBuffer per job):
//     [NEXT]   next chunk to take
//     [FINISHED] chunks finished (the caller waits on it)
//     [FAILED] chunks whose task threw (the error text is posted back on the worker's port)
//     [FLAGS + i] 1 once chunk i finished, 2 if it threw
// ---------------------------------------------------------------------------------------------

const READY = 0;
const JOB = 1;
const GC = 2;
const NEXT = 0;
const FINISHED = 1;
const FAILED = 2;
const FLAGS = 3;
// A worker that has not loaded in this long is given up (a cold start takes 50-150 ms).
const STARTUP_TIMEOUT_MS = 10_000;
// The caller spins this long on the last chunks before sleeping: most chunks are 0.1-5 ms and a
// futex wakeup costs tens of microseconds on a busy machine.
const SPIN_MS = 0.05;

type Kind = "f32" | "f64" | "i32";

/** A shared view a worker rebuilds: elements [byteOffset / bpe, + length) of buf. */
interface SharedSpan {
  buf: SharedArrayBuffer;
  byteOffset: number;
  length: number;
  kind: Kind;
}

interface Job {
  task: string;
  arrays: SharedSpan[];
  params: unknown;
  work: Int32Array;
  nChunks: number;
}

interface PoolWorker {
  worker: Worker;
  ctl: Int32Array;
  port: MessagePort;
}

function span(x: Shareable): SharedSpan {
  invariant(x.buffer instanceof SharedArrayBuffer, () => `pool: a ${x.constructor.name} of ${x.length} is not in shared memory`);
  const kind: Kind = x instanceof Float32Array ? "f32" : x instanceof Float64Array ? "f64" : "i32";
  return { buf: x.buffer, byteOffset: x.byteOffset, length: x.length, kind };
}

function view(s: SharedSpan): Shareable {
  if (s.kind === "f32") return new Float32Array(s.buf, s.byteOffset, s.length);
  if (s.kind === "f64") return new Float64Array(s.buf, s.byteOffset, s.length);
  return new Int32Array(s.buf, s.byteOffset, s.length);
}

/** True when every array lives in shared memory, i.e. a job can hand it to workers. */
export function allShared(arrays: readonly Shareable[]): boolean {
  for (const x of arrays) if (!(x.buffer instanceof SharedArrayBuffer)) return false;
  return true;
}

// NOTE: pools are shared by everything on this thread that asks for the same worker count, so a
// test suite that builds many CPU backends starts one set of workers, not one per backend. This
// is safe because run() is synchronous: two jobs on one thread never overlap (a nested run, from
// inside a chunk, is refused and runs on the caller).
const pools = new Map<number, WorkerPool>();

/** The pool of `size` workers for this thread, created (not started) on first request. */
export function sharedPool(size: number): WorkerPool {
  let pool = pools.get(size);
  if (pool === undefined) {
    pool = new WorkerPool(size);
    pools.set(size, pool);
  }
  return pool;
}

export class WorkerPool {
  /** Worker threads; the caller is one more thread of every job. */
  readonly size: number;
  /** Why the pool is not used (null while it is usable). */
  broken: string | null = null;
  /** Jobs run so far, and chunks of them that worker threads (not the caller) computed. */
  jobs = 0;
  workerChunks = 0;
  private workers: PoolWorker[] | null = null;
  private busy = false;

  constructor(size: number) {
    this.size = size;
  }

  /**
   * Runs chunks [0, nChunks) of `task` over the workers and the caller; `local(chunk)` computes
   * one chunk on the caller's thread (usually the same task on the same arrays). Returns false,
   * having run nothing, when the pool cannot be used (broken, nested, not startable); the caller
   * then runs every chunk itself. Throws an InvariantError when a chunk's task threw in a worker.
   */
  run(task: string, arrays: readonly Shareable[], params: unknown, nChunks: number, local: (chunk: number) => void): boolean {
    if (this.broken !== null || this.busy || nChunks < 1) return false;
    const workers = this.start();
    if (workers === null) return false;
    this.busy = true;
    try {
      const work = new Int32Array(new SharedArrayBuffer(4 * (FLAGS + nChunks)));
      const job: Job = { task, arrays: arrays.map(span), params, work, nChunks };
      for (const w of workers) {
        w.port.postMessage(job);
        Atomics.add(w.ctl, JOB, 1);
        Atomics.notify(w.ctl, JOB);
      }
      this.jobs++;
      let mine = 0;
      let thrown: unknown = null;
      for (let i = Atomics.add(work, NEXT, 1); i < nChunks; i = Atomics.add(work, NEXT, 1)) {
        // After a throw the remaining chunks are taken but not run, so no worker starts one;
        // chunks already running in workers are waited for before the error goes up.
        if (thrown === null) {
          try {
            local(i);
          } catch (e) {
            thrown = e;
          }
        }
        Atomics.store(work, FLAGS + i, 1);
        Atomics.add(work, FINISHED, 1);
        mine++;
      }
      this.awaitChunks(work, nChunks, local);
      if (thrown !== null) throw thrown;
      this.workerChunks += nChunks - mine;
      if (Atomics.load(work, FAILED) > 0) {
        const texts: string[] = [];
        for (const w of workers) {
          for (let m = receiveMessageOnPort(w.port); m !== undefined; m = receiveMessageOnPort(w.port)) texts.push(String(m.message));
        }
        throw new InvariantError(`pool: task ${task} failed in a worker: ${texts.join("\n") || "(no message)"}`);
      }
      return true;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Blocks until every chunk is finished. A chunk a worker took and has not finished within the
   * limit (a wedged worker: only a bug gets there) is redone here and the pool is given up.
   */
  private awaitChunks(work: Int32Array, nChunks: number, local: (chunk: number) => void): void {
    const t0 = performance.now();
    let done = Atomics.load(work, FINISHED);
    while (done < nChunks && performance.now() - t0 < SPIN_MS) done = Atomics.load(work, FINISHED);
    while (done < nChunks) {
      if (performance.now() - t0 > 60_000) {
        this.stop("a worker did not finish a chunk within 60 s");
        for (let i = 0; i < nChunks; i++) if (Atomics.load(work, FLAGS + i) === 0) local(i);
        return;
      }
      Atomics.wait(work, FINISHED, done, 1000);
      done = Atomics.load(work, FINISHED);
    }
  }

  /** The worker threads, started on first use; null (pool broken) if they did not come up. */
  private start(): PoolWorker[] | null {
    if (this.workers) return this.workers;
    const workers: PoolWorker[] = [];
    this.workers = workers; // stop() terminates whatever started, even on a failure half-way
    try {
      for (let i = 0; i < this.size; i++) {
        const ctl = new Int32Array(new SharedArrayBuffer(4 * 3));
        const { port1, port2 } = new MessageChannel();
        const worker = new Worker(new URL(import.meta.url), {
          workerData: { nprPoolWorker: true, tasks: TASKS_URL, ctl, port: port2 },
          transferList: [port2],
        });
        // Neither may keep the process alive; errors are noticed at the next job.
        worker.unref();
        port1.unref();
        worker.on("error", (e) => this.stop(`a worker threw: ${e instanceof Error ? e.message : String(e)}`));
        worker.on("exit", (code) => this.stop(`a worker exited with code ${code}`));
        workers.push({ worker, ctl, port: port1 });
      }
    } catch (e) {
      this.stop(`worker threads could not start: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    }
    for (const w of workers) {
      // Block until the worker's task table has loaded; the worker starts on its own thread, so
      // this does not need the caller's event loop.
      const t0 = performance.now();
      while (Atomics.load(w.ctl, READY) === 0) {
        if (performance.now() - t0 > STARTUP_TIMEOUT_MS) {
          this.stop(`a worker thread did not start within ${STARTUP_TIMEOUT_MS} ms`);
          return null;
        }
        Atomics.wait(w.ctl, READY, 0, 100);
      }
      if (Atomics.load(w.ctl, READY) !== 1) {
        const text = receiveMessageOnPort(w.port)?.message;
        this.stop(`a worker could not load its tasks: ${String(text)}`);
        return null;
      }
    }
    if (ENV.debug >= 1) console.error(`[npr] cpu pool: ${workers.length} worker thread(s) started`);
    return workers;
  }

  /** Asks every worker to run a full collection now (it drops the buffers of past jobs). */
  collectInWorkers(): void {
    for (const w of this.workers ?? []) {
      Atomics.add(w.ctl, GC, 1);
      Atomics.notify(w.ctl, JOB);
    }
  }

  /** Gives the pool up for the rest of the process (jobs then run on the caller's thread). */
  private stop(why: string): void {
    if (this.broken !== null) return;
    this.broken = why;
    if (ENV.debug >= 1) console.error(`[npr] cpu pool: worker threads off: ${why}`);
    for (const w of this.workers ?? []) void w.worker.terminate().catch(() => {});
  }
}

// ---------------------------------------------------------------- shared memory and the GC
// V8 does not count SharedArrayBuffer memory towards the heuristics that start a collection
// (nodejs/node#34703): a CpuBuffer is a small object holding megabytes of shared memory, and
// measured here, a training loop of the small preset grew by 400 MB a step, to 5.4 GB after 15
// steps, where plain ArrayBuffers stay flat at 0.9 GB. So shared memory is allocated here, and
// after each budget of allocation a full collection is forced on this thread and in every worker
// (whose deserialized copies of past jobs' buffers keep the memory alive too). The budget is
// 1 GiB or half the array-buffer memory live after the last collection, whichever is larger:
// memory peaks near 1.5x what is live, and a collection (a few ms for npr's small JS heap)
// comes at most once per GiB allocated.

const GC_MIN_BUDGET = 1 << 30;
let sharedSinceGc = 0;
let gcBudget = GC_MIN_BUDGET;
let gcFn: (() => void) | null | undefined;

/**
 * V8's gc() without --expose-gc on the command line: the flag is set at run time and a fresh
 * context picks the function up. Null where that fails (memory then grows as V8 decides).
 */
function gcFunction(): (() => void) | null {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      const f = vm.runInNewContext("gc") as unknown;
      gcFn = typeof f === "function" ? (f as () => void) : null;
    } catch {
      gcFn = null;
    }
    if (gcFn === null && ENV.debug >= 1) console.error("[npr] cpu pool: cannot force collections; shared memory may grow");
  }
  return gcFn;
}

/** A SharedArrayBuffer of `bytes`, counted towards the next forced collection. */
export function allocShared(bytes: number): SharedArrayBuffer {
  sharedSinceGc += bytes;
  if (sharedSinceGc > gcBudget) {
    sharedSinceGc = 0;
    const gc = gcFunction();
    if (gc !== null) {
      gc();
      for (const pool of pools.values()) pool.collectInWorkers();
      gcBudget = Math.max(GC_MIN_BUDGET, process.memoryUsage().arrayBuffers / 2);
    }
  }
  return new SharedArrayBuffer(bytes);
}

// ---------------------------------------------------------------- worker side

/** Takes and runs chunks of one job until none are left. */
function workJob(job: Job, tasks: Record<string, Task>, port: MessagePort): void {
  const { work, nChunks } = job;
  // A job all of whose chunks are gone costs one atomic add: no views are built for it.
  let i = Atomics.add(work, NEXT, 1);
  if (i >= nChunks) return;
  const fn = tasks[job.task];
  const arrays = job.arrays.map(view);
  for (; i < nChunks; i = Atomics.add(work, NEXT, 1)) {
    let flag = 1;
    try {
      invariant(fn !== undefined, () => `pool worker: no task named ${job.task}`);
      fn(arrays, job.params as never, i);
    } catch (e) {
      flag = 2;
      port.postMessage(e instanceof Error ? (e.stack ?? e.message) : String(e));
      Atomics.add(work, FAILED, 1);
    }
    Atomics.store(work, FLAGS + i, flag);
    Atomics.add(work, FINISHED, 1);
    Atomics.notify(work, FINISHED);
  }
}

async function workerMain(ctl: Int32Array, port: MessagePort, tasksUrl: string): Promise<void> {
  let tasks: Record<string, Task>;
  try {
    tasks = ((await import(tasksUrl)) as { TASKS: Record<string, Task> }).TASKS;
  } catch (e) {
    port.postMessage(e instanceof Error ? (e.stack ?? e.message) : String(e));
    Atomics.store(ctl, READY, -1);
    Atomics.notify(ctl, READY);
    return;
  }
  Atomics.store(ctl, READY, 1);
  Atomics.notify(ctl, READY);
  let collections = 0;
  for (;;) {
    const seen = Atomics.load(ctl, JOB);
    for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
      workJob(m.message as Job, tasks, port);
    }
    // After the jobs, never before: the caller may be waiting on a chunk of the next one.
    if (Atomics.load(ctl, GC) !== collections) {
      collections = Atomics.load(ctl, GC);
      gcFunction()?.();
    }
    Atomics.wait(ctl, JOB, seen);
  }
}

if (!isMainThread && (workerData as { nprPoolWorker?: unknown } | null)?.nprPoolWorker === true) {
  const data = workerData as { ctl: Int32Array; port: MessagePort; tasks: string };
  void workerMain(data.ctl, data.port, data.tasks);
}
