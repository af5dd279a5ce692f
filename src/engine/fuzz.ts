/**
 * The engine fuzzer: drives scheduler and block pool with a scripted adversarial "model" (no
 * tensors) that emits grammar-aware but hostile streams: stray and nested tags, guidelines with
 * 0 or 7 plans, stop ids inside steps, endless steps that exhaust the budget; plus many
 * concurrent requests on a small pool (preemption, no_kv), random budgets and fork thresholds,
 * structure-forced requests mixed in, and aborts at random moments (in the middle of forks).
 * After every step the pool and tables are checked; at the end nothing may be held.
 * A negative control plants a fault (a table never released, or one released twice) so a test can
 * show the fuzzer reports it: a fuzzer that cannot fail proves nothing.
 * Knows the engine's public pieces and token ids; the model is a function of the last token.
 */
import { InvariantError } from "../util/index.ts";
import { Rng } from "../util/index.ts";
import { Engine } from "./engine.ts";
import { sampleItems } from "./runner.ts";
import type { StepRunner } from "./runner.ts";
import { randomStructure } from "./forced-structure.ts";
import type { EngineVocab } from "./forced-structure.ts";
import type { FinishReason, GenerateParams, StepPlan, StepResult } from "./types.ts";

/** Counts of one fuzz run (camelCase, as every npr JSON output). */
export interface FuzzReport {
  requests: number;
  /** Blocks still held after every engine drained (each iteration's pool summed). */
  leakedBlocks: number;
  /** Releases of an already released table (KVManager.doubleFrees). */
  doubleFrees: number;
  /** Iterations stopped by a broken invariant (pool or table consistency, a double free). */
  invariantViolations: number;
  unfinished: number;
  finishReasons: Partial<Record<FinishReason, number>>;
  forks: number;
  preemptions: number;
}

/** Faults a negative-control run plants: a table never released, or one released twice. */
export const FUZZ_FAULTS = ["leak", "double-free"] as const;
export type FuzzFault = (typeof FUZZ_FAULTS)[number];

export interface FuzzOptions {
  /** Plant this fault in the first iteration whose engine releases a table holding blocks. */
  inject?: FuzzFault;
  /** Called after each iteration with the number done (progress reporting). */
  onIteration?: (done: number) => void;
}

/** Logits that make the next token a hostile but plausible continuation of the last one. */
class AdversarialRunner implements StepRunner {
  private readonly rng: Rng;
  private readonly v: EngineVocab;
  private readonly text: number[];
  private readonly digits: number[];

  constructor(rng: Rng, v: EngineVocab, textIds: number[], digitIds: number[]) {
    this.rng = rng;
    this.v = v;
    this.text = textIds;
    this.digits = digitIds;
  }

  run(plan: StepPlan): StepResult {
    return sampleItems(plan, (i) => {
      const it = plan.items[i]!;
      const row = new Float64Array(this.v.size);
      for (let k = 0; k < row.length; k++) row[k] = this.rng.normal();
      row[this.next(it.ids[it.ids.length - 1]!)]! += 30;
      return row;
    });
  }

  dispose(): void {}

  private pick<T>(xs: readonly T[]): T {
    return xs[this.rng.int(xs.length)]!;
  }

  /** A weighted choice among continuations of `last`. */
  private next(last: number): number {
    const t = (name: Parameters<EngineVocab["tag"]>[0]) => this.v.tag(name);
    const r = this.rng.next();
    const stop = [...this.v.stopIds][0]!;
    const anyTag = () => this.pick([...this.v.tagIds]);
    if (r < 0.03) return anyTag(); // stray tag anywhere
    if (r < 0.04) return stop; // stop anywhere (inside steps too)
    switch (last) {
      case t("<guideline>"):
        return r < 0.85 ? t("<plan>") : t("</guideline>"); // 0 plans sometimes
      case t("<plan>"):
        return r < 0.9 ? this.pick(this.digits) : this.pick(this.text);
      case t("</plan>"):
        // Mostly another plan: runs of 6-7 plans happen.
        return r < 0.55 ? t("<plan>") : r < 0.95 ? t("</guideline>") : this.pick(this.text);
      case t("<step>"):
      case t("<takeaway>"):
        return this.pick(this.text);
      case t("</takeaway>"):
        return r < 0.3 ? t("<guideline>") : r < 0.6 ? stop : this.pick(this.text);
      default:
        if (this.digits.includes(last)) return r < 0.8 ? this.text[0]! : this.pick(this.text); // text[0] is ":"
        // Free text: close whatever might be open, sometimes nest a guideline.
        if (r < 0.12) return t("</plan>");
        if (r < 0.2) return t("</step>");
        if (r < 0.25) return t("</takeaway>");
        if (r < 0.29) return t("<guideline>");
        if (r < 0.31) return t("<takeaway>");
        if (r < 0.32) return stop;
        return this.pick(this.text);
    }
  }
}

/**
 * Wraps `engine.kv.release` so that the first release of a table holding blocks either does
 * nothing (leak: the blocks stay referenced) or runs twice (double free: the second call is
 * refused, counted and thrown). Returns a flag read after the iteration: did the fault fire?
 */
function plantFault(engine: Engine, fault: FuzzFault): () => boolean {
  const kv = engine.kv;
  const release = kv.release.bind(kv);
  let fired = false;
  kv.release = (table) => {
    if (fired || table.uniqueBlocks().length === 0) return release(table);
    fired = true;
    if (fault === "leak") return;
    release(table);
    release(table);
  };
  return () => fired;
}

export function runFuzz(
  vocab: EngineVocab,
  encode: (s: string) => number[],
  seed: number,
  iterations: number,
  opts: FuzzOptions = {},
): FuzzReport {
  const rng = new Rng(seed);
  const report: FuzzReport = {
    requests: 0,
    leakedBlocks: 0,
    doubleFrees: 0,
    invariantViolations: 0,
    unfinished: 0,
    finishReasons: {},
    forks: 0,
    preemptions: 0,
  };
  let planted = opts.inject === undefined;
  const textIds = [...encode(":"), ...encode("ab c\n=+")];
  const digitIds = encode("1234567");
  for (let it = 0; it < iterations; it++) {
    const engine = new Engine(new AdversarialRunner(rng.fork(), vocab, textIds, digitIds), vocab, {
      numBlocks: 12 + rng.int(120),
      blockSize: 1 + rng.int(8),
      maxBatchTokens: 1 + rng.int(64),
      maxRunningRequests: 1 + rng.int(12),
    });
    const fired = planted ? null : plantFault(engine, opts.inject!);
    const ids: number[] = [];
    const addSome = (n: number) => {
      for (let k = 0; k < n; k++) {
        const params: Partial<GenerateParams> = {
          temperature: rng.next() < 0.3 ? 0 : 1,
          topP: rng.next() < 0.5 ? 1 : 0.9,
          maxNewTokens: 4 + rng.int(160),
          minForkBudget: rng.int(40),
          maxDepth: rng.int(3),
          seed: rng.int(1 << 30),
          mode: rng.next() < 0.15 ? "sequential" : "parallel",
          forceStructure: rng.next() < 0.3 ? randomStructure(rng, 8) : null,
        };
        const prompt = encode(`q${rng.int(1000)}`.repeat(1 + rng.int(6)));
        ids.push(...engine.add([prompt], params));
      }
    };
    addSome(1 + rng.int(8));
    try {
      // Arrivals and aborts during the first 400 steps, then a drain (a livelock trips the cap).
      for (let step = 0; engine.scheduler.hasWork() && step < 500_000; step++) {
        const events = engine.step();
        for (const ev of events) {
          if (ev.type === "branch-opened" && ev.branch === 0) report.forks++;
          if (ev.type === "preempted") report.preemptions++;
        }
        // Aborts at random moments, forks in flight included; new arrivals while others decode.
        if (step < 400 && rng.next() < 0.03 && ids.length > 0) engine.abort(ids[rng.int(ids.length)]!);
        if (step < 400 && rng.next() < 0.02) addSome(1 + rng.int(3));
        engine.kv.assertConsistent();
      }
    } catch (err) {
      if (!(err instanceof InvariantError)) throw err;
      report.invariantViolations++;
      process.stderr.write(`npr engine fuzz: iteration ${it}: ${err.message}\n`);
    }
    if (fired?.()) planted = true;
    report.requests += ids.length;
    for (const id of ids) {
      const r = engine.scheduler.result(id);
      if (!r) {
        report.unfinished++;
        continue;
      }
      report.finishReasons[r.finishReason] = (report.finishReasons[r.finishReason] ?? 0) + 1;
    }
    report.leakedBlocks += engine.kv.pool.numUsed;
    report.doubleFrees += engine.kv.doubleFrees;
    engine.dispose();
    opts.onIteration?.(it + 1);
  }
  return report;
}
