/**
 * The engine's API: `generate(prompts, params)` returns one structured result per prompt (tree,
 * text, ids, log-probs, statistics), and `stream(...)` yields the events as they happen (branch
 * opened, token, branch closed, joined, finished) for the CLI and the server. Both run the same
 * loop: scheduler.plan() -> runner.run(plan) -> scheduler.apply(plan, result).
 * Wires a KV manager, a scheduler and a runner; holds no policy of its own.
 */
import { KVManager } from "../kv/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { invariant } from "../util/errors.ts";
import { ModelRunner } from "./runner.ts";
import type { StepRunner } from "./runner.ts";
import { Scheduler } from "./scheduler.ts";
import type { SchedulerOptions } from "./scheduler.ts";
import type { EngineVocab } from "./structure.ts";
import { resolveParams } from "./types.ts";
import type { EngineEvent, GenerateParams, GenerationResult } from "./types.ts";

export interface EngineOptions extends Partial<SchedulerOptions> {
  /** KV blocks in the pool (the null block included). */
  numBlocks?: number;
  /** Token slots per block. */
  blockSize?: number;
}

export type ParamsArg = Partial<GenerateParams> | ReadonlyArray<Partial<GenerateParams>>;

export class Engine {
  readonly kv: KVManager;
  readonly scheduler: Scheduler;
  readonly runner: StepRunner;

  /** An engine over `model`, or over any StepRunner (fakes in tests and the fuzzer). */
  constructor(model: Qwen3Model | StepRunner, vocab: EngineVocab, opts: EngineOptions = {}) {
    const numBlocks = opts.numBlocks ?? 1024;
    const blockSize = opts.blockSize ?? 16;
    this.kv = new KVManager(numBlocks, blockSize);
    this.runner = "run" in model ? model : new ModelRunner(model, numBlocks, blockSize);
    this.scheduler = new Scheduler(this.kv, vocab, {
      maxBatchTokens: opts.maxBatchTokens ?? 512,
      maxRunningRequests: opts.maxRunningRequests ?? 16,
    });
  }

  /** Queues prompts (token ids); returns their request ids. */
  add(prompts: ReadonlyArray<readonly number[]>, params: ParamsArg = {}): number[] {
    return prompts.map((p, i) => {
      const raw = Array.isArray(params) ? (params as ReadonlyArray<Partial<GenerateParams>>)[i] ?? {} : (params as Partial<GenerateParams>);
      return this.scheduler.add(p, resolveParams(raw));
    });
  }

  /** One scheduler step; returns the events it produced. */
  step(): EngineEvent[] {
    const plan = this.scheduler.plan();
    if (plan.items.length > 0) this.scheduler.apply(plan, this.runner.run(plan));
    return this.scheduler.events.splice(0);
  }

  /** Runs until every queued request finished; results in prompt order. */
  async generate(prompts: ReadonlyArray<readonly number[]>, params: ParamsArg = {}): Promise<GenerationResult[]> {
    return this.generateSync(prompts, params);
  }

  generateSync(prompts: ReadonlyArray<readonly number[]>, params: ParamsArg = {}): GenerationResult[] {
    const ids = this.add(prompts, params);
    while (this.scheduler.hasWork()) this.step();
    return ids.map((id) => {
      const r = this.scheduler.result(id);
      invariant(r, () => `request ${id} ended without a result`);
      return r;
    });
  }

  /** The events of a generation as they happen; ends after the last request finished. */
  async *stream(prompts: ReadonlyArray<readonly number[]>, params: ParamsArg = {}): AsyncGenerator<EngineEvent> {
    this.add(prompts, params);
    while (this.scheduler.hasWork()) {
      for (const ev of this.step()) yield ev;
      // Let timers and I/O run between steps (a TTY redraw, an abort from a server).
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  abort(requestId: number): void {
    this.scheduler.abort(requestId);
  }

  dispose(): void {
    this.runner.dispose();
  }
}
