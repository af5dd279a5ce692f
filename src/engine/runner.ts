/**
 * The runner: executes a StepPlan on the model (copy-on-write row copies, then one batched paged
 * forward over every item's new tokens) and samples the items that asked for a token, returning
 * a StepResult. It holds the paged KV storage; it knows nothing of requests, forks or budgets.
 * A fake runner with scripted logits (test/engine, `npr engine fuzz`) implements the same
 * interface, so the scheduler is testable without a model.
 * Decode-only plans (one new token per item, up to 16 items) go to the GraphDecoder when one is
 * on (by default on CUDA: one replayed CUDA graph per step); everything else (prefill, chunks,
 * wider batches) takes the generic paged forward.
 */
import { PagedKVStorage, pagedForward } from "../model/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { noGrad } from "../tensor/index.ts";
import { GraphDecoder } from "./graph-decode.ts";
import type { GraphDecoderOptions } from "./graph-decode.ts";
import { sampleToken } from "./sampling/sampler.ts";
import type { StepPlan, StepResult } from "./types.ts";

export interface StepRunner {
  run(plan: StepPlan): StepResult;
  dispose(): void;
}

/** Samples each item from a [V] row of logits (shared by the model runner and fakes). */
export function sampleItems(plan: StepPlan, rowOf: (item: number) => ArrayLike<number>): StepResult {
  return {
    sampled: plan.items.map((it, i) => (it.sample ? sampleToken(rowOf(i), it.sample) : null)),
  };
}

export class ModelRunner implements StepRunner {
  readonly model: Qwen3Model;
  readonly storage: PagedKVStorage;
  /** The decode-only fast path, or null when off. */
  readonly decoder: GraphDecoder | null;
  /** Forward calls and tokens computed (for statistics and benchmarks). */
  steps = 0;
  tokens = 0;

  /**
   * `graphDecode`: the decode-only fast path (default: on when the backend is CUDA; options pick
   * the buckets, or `graphs: false` to run its body eagerly, as the CPU tests do).
   */
  constructor(model: Qwen3Model, numBlocks: number, blockSize: number, opts: { graphDecode?: boolean | GraphDecoderOptions } = {}) {
    this.model = model;
    this.storage = new PagedKVStorage(model, numBlocks, blockSize);
    const g = opts.graphDecode ?? model.backend.name === "cuda";
    this.decoder = g === false ? null : new GraphDecoder(model, this.storage, g === true ? {} : g);
  }

  run(plan: StepPlan): StepResult {
    if (plan.items.length === 0) return { sampled: [] };
    this.storage.applyCopies(plan.copies);
    const V = this.model.config.vocabSize;
    if (this.decoder && this.decoder.accepts(plan.items)) {
      const rows = this.decoder.run(plan.items); // [items, V], row i = item i's only token
      this.steps++;
      this.tokens += plan.items.length;
      return sampleItems(plan, (i) => rows.subarray(i * V, (i + 1) * V));
    }
    const logits = noGrad(() => pagedForward(this.model, this.storage, plan.items));
    const host = logits.toArray();
    logits.dispose();
    // Row of each item's last new token.
    const lastRow: number[] = [];
    let row = 0;
    for (const it of plan.items) {
      row += it.ids.length;
      lastRow.push(row - 1);
    }
    this.steps++;
    this.tokens += row;
    return sampleItems(plan, (i) => host.subarray(lastRow[i]! * V, (lastRow[i]! + 1) * V));
  }

  dispose(): void {
    this.decoder?.dispose();
    this.storage.dispose();
  }
}
