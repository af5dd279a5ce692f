/**
 * The engine's API: `generate(prompts, params)` returns one structured result per prompt (tree,
 * text, ids, log-probs, statistics), and `stream(...)` yields the events as they happen (branch
 * opened, token, branch closed, joined, finished) for the CLI and the server. Both run the same
 * loop: scheduler.plan() -> runner.run(plan) -> scheduler.apply(plan, result).
 * Wires a KV manager, a scheduler and a runner; holds no policy of its own.
 */
import { KVManager } from "../kv/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { UsageError, invariant } from "../util/index.ts";
import { ModelRunner } from "./runner.ts";
import type { StepRunner } from "./runner.ts";
import { Scheduler } from "./scheduler.ts";
import type { SchedulerOptions } from "./scheduler.ts";
import type { EngineVocab } from "./forced-structure.ts";
import { resolveParams } from "./types.ts";
import type { EngineEvent, GenerateParams, GenerationResult } from "./types.ts";

export interface EngineOptions extends Partial<SchedulerOptions> {
  /** KV blocks in the pool (the null block included). */
  numBlocks?: number;
  /** Token slots per block. */
  blockSize?: number;
  /**
   * Positions a sequence may use (prompt included): default the model's max_position_embeddings,
   * unbounded over a bare StepRunner. A longer prompt is refused; max_new_tokens is capped to
   * what is left after the prompt, so no token is decoded at a position the model never saw.
   */
  maxContext?: number;
}

export type ParamsArg = Partial<GenerateParams> | ReadonlyArray<Partial<GenerateParams>>;

export class Engine {
  readonly kv: KVManager;
  readonly scheduler: Scheduler;
  readonly runner: StepRunner;
  /** Positions a sequence may use, prompt included (EngineOptions.maxContext). */
  readonly maxContext: number;

  /** An engine over `model`, or over any StepRunner (fakes in tests and the fuzzer). */
  constructor(model: Qwen3Model | StepRunner, vocab: EngineVocab, opts: EngineOptions = {}) {
    const numBlocks = opts.numBlocks ?? 1024;
    const blockSize = opts.blockSize ?? 16;
    this.kv = new KVManager(numBlocks, blockSize);
    this.runner = "run" in model ? model : new ModelRunner(model, numBlocks, blockSize);
    this.maxContext = opts.maxContext ?? ("run" in model ? Number.MAX_SAFE_INTEGER : model.config.maxPositionEmbeddings);
    this.scheduler = new Scheduler(this.kv, vocab, {
      maxBatchTokens: opts.maxBatchTokens ?? 512,
      maxRunningRequests: opts.maxRunningRequests ?? 16,
    });
  }

  /**
   * Queues prompts (token ids); returns their request ids. Every prompt is checked before any is
   * queued: an empty one, or one that leaves no position free under maxContext, is a UsageError
   * "prompt_too_long"; max_new_tokens is capped at maxContext minus the prompt length.
   */
  add(prompts: ReadonlyArray<readonly number[]>, params: ParamsArg = {}): number[] {
    const resolved = prompts.map((p, i) => {
      const raw = Array.isArray(params)
        ? ((params as ReadonlyArray<Partial<GenerateParams>>)[i] ?? {})
        : (params as Partial<GenerateParams>);
      const r = resolveParams(raw);
      if (p.length === 0) throw new UsageError(`prompt ${i} is empty`, { code: "empty_prompt", param: "prompt" });
      if (p.length >= this.maxContext) {
        throw new UsageError(
          `prompt ${i} has ${p.length} tokens; the model's context holds ${this.maxContext} positions (max_position_embeddings), leaving none to generate`,
          {
            code: "prompt_too_long",
            param: "prompt",
            hint: `shorten the prompt to at most ${this.maxContext - 1} tokens`,
          },
        );
      }
      return { ...r, maxNewTokens: Math.min(r.maxNewTokens, this.maxContext - p.length) };
    });
    return prompts.map((p, i) => this.scheduler.add(p, resolved[i]!));
  }

  /** max_new_tokens as add() will cap it for a prompt of `promptLength` tokens. */
  cappedMaxNewTokens(promptLength: number, maxNewTokens: number): number {
    return Math.max(0, Math.min(maxNewTokens, this.maxContext - promptLength));
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
