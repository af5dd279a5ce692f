/**
 * The runner: executes a StepPlan on the model (copy-on-write row copies, then one batched paged
 * forward over every item's new tokens) and samples the items that asked for a token, returning
 * a StepResult. It holds the paged KV storage; it knows nothing of requests, forks or budgets.
 * A fake runner with scripted logits (test/engine, `npr engine fuzz`) implements the same
 * interface, so the scheduler is testable without a model.
 * Decode-only plans (one new token per item, up to 16 items) go to the GraphDecoder when one is
 * on (by default where the backend captures graphs, i.e. CUDA: one replayed graph per step);
 * everything else (prefill, chunks, wider batches) takes the generic paged forward. Where the
 * backend samples on the device (the "deviceSampling" capability, CUDA),
 * the logits never leave it: the DeviceSampler reads each item's row there and returns only ids
 * and log-probs (the same choices as the host sampler, from the same Rng draws).
 */
import { PagedKVStorage, pagedForward } from "../model/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { hasGraphCapture, noGrad } from "../tensor/index.ts";
import { GraphDecoder } from "./graph-decode.ts";
import type { GraphDecoderOptions } from "./graph-decode.ts";
import { deviceSamplerFor } from "./sampling/device-sampler.ts";
import type { DeviceSampler } from "./sampling/device-sampler.ts";
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
  /** On-device sampling, or null (host sampling from a read-back row). */
  readonly sampler: DeviceSampler | null;
  /** Forward calls and tokens computed (for statistics and benchmarks). */
  steps = 0;
  tokens = 0;

  /**
   * `graphDecode`: the decode-only fast path (default: on when the backend captures graphs; options pick
   * the buckets, or `graphs: false` to run its body eagerly, as the CPU tests do).
   * `deviceSampling`: sample on the device where the backend can (default true).
   */
  constructor(
    model: Qwen3Model,
    numBlocks: number,
    blockSize: number,
    opts: { graphDecode?: boolean | GraphDecoderOptions; deviceSampling?: boolean } = {},
  ) {
    this.model = model;
    this.storage = new PagedKVStorage(model, numBlocks, blockSize);
    // By default where the backend captures graphs, and only where the step computes what the
    // model's forward does (GraphDecoder.supports).
    const g = opts.graphDecode ?? (hasGraphCapture(model.backend) && GraphDecoder.supports(model));
    this.decoder = g === false ? null : new GraphDecoder(model, this.storage, g === true ? {} : g);
    this.sampler = opts.deviceSampling === false ? null : deviceSamplerFor(model.backend);
  }

  run(plan: StepPlan): StepResult {
    if (plan.items.length === 0) return { sampled: [] };
    this.storage.applyCopies(plan.copies);
    const V = this.model.config.vocabSize;
    if (this.decoder && this.decoder.accepts(plan.items)) {
      this.steps++;
      this.tokens += plan.items.length;
      if (this.sampler) {
        // Row i of the bucket's logits is item i's only token.
        const logits = this.decoder.runOnDevice(plan.items);
        return {
          sampled: this.sampler.sample(
            logits,
            V,
            plan.items.map((_, i) => i),
            plan.items.map((it) => it.sample),
          ),
        };
      }
      const rows = this.decoder.run(plan.items); // [items, V], row i = item i's only token
      return sampleItems(plan, (i) => rows.subarray(i * V, (i + 1) * V));
    }
    const logits = noGrad(() => pagedForward(this.model, this.storage, plan.items));
    // Row of each item's last new token.
    const lastRow: number[] = [];
    let row = 0;
    for (const it of plan.items) {
      row += it.ids.length;
      lastRow.push(row - 1);
    }
    this.steps++;
    this.tokens += row;
    if (this.sampler && logits.offset === 0 && logits.isContiguous()) {
      const sampled = this.sampler.sample(
        logits.buffer,
        V,
        lastRow,
        plan.items.map((it) => it.sample),
      );
      logits.dispose();
      return { sampled };
    }
    const host = logits.toArray();
    logits.dispose();
    return sampleItems(plan, (i) => host.subarray(lastRow[i]! * V, (lastRow[i]! + 1) * V));
  }

  dispose(): void {
    this.decoder?.dispose();
    this.storage.dispose();
  }
}
