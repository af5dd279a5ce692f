/**
 * The fast decode path for decode-only steps (one new token per item): the model's decode step
 * (model/decode-step.ts, the Qwen3 math as raw backend calls) on fixed buffers, one set per batch
 * bucket (1, 2, 4, 8, 16; a plan is padded up), so that on a backend with graph capture (CUDA)
 * the whole step is captured once as a graph and each later token costs one host write of the
 * packed inputs, one graph launch and one logits read.
 * This file owns the buckets: the packed i32 input block (decode-plan.ts: ids, positions, write
 * slots, each row's visible keys as CSR ranges of global slot ids, which the step hands to
 * attention over the whole page array, so nothing is gathered), the per-step decode attention
 * plan where the step uses that op (tensor/backend/decode-attention-plan.ts: the keys several
 * rows see are read once for all of them, long rows split over many blocks), written beside the
 * inputs each step with a capacity fixed per captured graph that grows (with a recapture) when a
 * step needs more, and the capture / replay. On a backend without graphs (the CPU, in tests) the
 * same step runs eagerly, which is how CI checks it against pagedForward.
 * Knows buckets, graphs and the paged storage; nothing of requests, sampling or scheduling, nor
 * of the model's layers (the step does those).
 */
import { DecodeStep } from "../model/index.ts";
import type { DecodeStepBuffers, DecodeStepInputs, PagedKVStorage, Qwen3Model } from "../model/index.ts";
import { capacityFits, growCapacity, hasGraphCapture, packPlan, planAttention, planCapacityNeeded, planLayout } from "../tensor/index.ts";
import type {
  Backend,
  CapturedGraph,
  DecodeAttentionCapacity,
  DeviceBuffer,
  GraphCapture,
  HostArray,
  PlanLayout,
} from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import { DECODE_BUCKETS, bucketFor, inputLayout, packInputs, rowRanges } from "./decode-plan.ts";
import type { InputLayout } from "./decode-plan.ts";
import type { PlanItem } from "./types.ts";

/** First range capacity per row of a bucket; grown (and the graph recaptured) when a step needs more. */
const RANGES_PER_ROW = 32;

/** One batch bucket: its packed inputs, the step's buffers and (with graph capture) its graph. */
interface Bucket {
  batch: number;
  lay: InputLayout;
  host: Int32Array;
  /** The whole input block (graph backends: one buffer, fields are views of it; else null, fields own memory). */
  block: DeviceBuffer | null;
  /** What the step reads; its fields are (views of) the input block. */
  inputs: DecodeStepInputs;
  starts: DeviceBuffer;
  ends: DeviceBuffer;
  offsets: DeviceBuffer;
  /** Activations and logits [batch, V]. */
  bufs: DecodeStepBuffers;
  graph: CapturedGraph | null;
  /** The decode attention plan (device, host copy), its capacity, layout and the op's scratch; null without the op. */
  attn: { plan: DeviceBuffer; host: Int32Array; cap: DecodeAttentionCapacity; lay: PlanLayout; scratch: DeviceBuffer } | null;
}

export interface GraphDecoderOptions {
  /** Capture and replay graphs (default: when the backend can); false runs the step eagerly. */
  graphs?: boolean;
  buckets?: readonly number[];
  /** Use the backend's paged decode attention op where it has one (default true). */
  decodeAttention?: boolean;
  /** Use the backend's fused decode ops where it has them and the model is mixed precision (default true). */
  fused?: boolean;
}

export class GraphDecoder {
  readonly model: Qwen3Model;
  readonly storage: PagedKVStorage;
  readonly buckets: readonly number[];
  /** Steps run, graphs captured and replays (statistics and tests). */
  steps = 0;
  captures = 0;
  replays = 0;
  private readonly be: Backend;
  /** Graph capture and input views, when the backend has them. */
  private readonly gc: (Backend & GraphCapture) | null;
  private readonly useGraphs: boolean;
  /** The model's decode step (fused or not, decode attention op or not: its choice). */
  private readonly step: DecodeStep;
  private readonly byBatch = new Map<number, Bucket>();

  /** Whether this path computes what the model's forward computes (DecodeStep.supports). */
  static supports(model: Qwen3Model): boolean {
    return DecodeStep.supports(model);
  }

  constructor(model: Qwen3Model, storage: PagedKVStorage, opts: GraphDecoderOptions = {}) {
    this.model = model;
    this.storage = storage;
    this.be = model.backend;
    this.step = new DecodeStep(model, storage, { decodeAttention: opts.decodeAttention, fused: opts.fused });
    this.gc = hasGraphCapture(this.be) ? this.be : null;
    this.useGraphs = (opts.graphs ?? true) && this.gc !== null;
    this.buckets = opts.buckets ?? DECODE_BUCKETS;
  }

  /** Whether the step runs the fused body (model/decode-step.ts). */
  get fused(): boolean {
    return this.step.fused;
  }

  /** Whether this decoder takes a plan of these items (decode-only, within the largest bucket). */
  accepts(items: readonly PlanItem[]): boolean {
    return items.length > 0 && items.every((it) => it.ids.length === 1) && bucketFor(items.length, this.buckets) !== null;
  }

  /**
   * Logits [items.length, V] on the host, row i for item i. The items' k/v are written into their
   * slots (copies of the plan must have been applied before).
   */
  run(items: readonly PlanItem[]): HostArray {
    const bucket = this.execute(items);
    return this.be.read(bucket.bufs.logits, 0, items.length * this.model.config.vocabSize);
  }

  /**
   * The same step, leaving the logits on the device: the returned buffer holds [bucket, V] rows
   * (row i = item i; later rows are padding) until the next step of that bucket (device sampling).
   */
  runOnDevice(items: readonly PlanItem[]): DeviceBuffer {
    return this.execute(items).bufs.logits;
  }

  private execute(items: readonly PlanItem[]): Bucket {
    invariant(this.accepts(items), "GraphDecoder.run: not a decode-only plan within the buckets");
    const B = bucketFor(items.length, this.buckets)!;
    const bs = this.storage.blockSize;
    let b = this.byBatch.get(B);
    // Each row's visible slot ranges, once: the capacity check, the inputs and the attention plan read them.
    const ranges = items.map((it) => rowRanges(it, bs));
    const need = ranges.reduce((n, r) => n + r.length, 0);
    let capacity = B * RANGES_PER_ROW;
    if (b && need > b.lay.capacity) {
      // More ranges than the captured input block holds: a bigger block, and a new graph.
      capacity = 2 * b.lay.capacity;
      this.freeBucket(b);
      b = undefined;
    }
    if (!b) {
      b = this.makeBucket(B, Math.max(need, capacity));
      this.byBatch.set(B, b);
    }
    packInputs(items, bs, b.lay, b.host, ranges);
    b.inputs.writeSlotsHost.set(b.host.subarray(b.lay.writeSlots, b.lay.writeSlots + B));
    this.writeInputs(b);
    if (this.step.usesDecodeAttention) this.writePlan(b, ranges);
    const bucket = b;
    if (bucket.graph) {
      bucket.graph.replay();
      this.replays++;
    } else {
      // The first step of a bucket runs eagerly (it loads kernels and warms cuBLAS, neither of which
      // a capture may do), then the same calls are captured for every later step.
      this.step.run(bucket.inputs, bucket.bufs);
      if (this.useGraphs) {
        bucket.graph = this.gc!.captureGraph(() => this.step.run(bucket.inputs, bucket.bufs));
        this.captures++;
      }
    }
    this.steps++;
    return bucket;
  }

  /**
   * Plans this step's decode attention and writes the plan; a plan beyond the bucket's capacity
   * reallocates the plan and scratch buffers and drops the graph (the next step recaptures).
   */
  private writePlan(b: Bucket, ranges: ReadonlyArray<Array<[number, number]>>): void {
    const rows = Array.from({ length: b.batch }, (_, i) => ranges[i] ?? []);
    const plan = planAttention(rows);
    const need = planCapacityNeeded(plan);
    if (!b.attn || !capacityFits(b.attn.cap, need)) {
      const cap = growCapacity(b.attn?.cap ?? null, need);
      if (b.attn) {
        this.be.free(b.attn.plan);
        this.be.free(b.attn.scratch);
      }
      b.graph?.destroy();
      b.graph = null;
      const lay = planLayout(b.batch, cap);
      b.attn = {
        plan: this.be.alloc("i32", lay.length),
        host: new Int32Array(lay.length),
        cap,
        lay,
        scratch: this.be.alloc(this.model.dtype, this.step.planScratchLength(cap)),
      };
      b.inputs.plan = { buffer: b.attn.plan, scratch: b.attn.scratch, capacity: cap };
    }
    packPlan(plan, b.attn.lay, b.attn.host);
    this.be.write(b.attn.plan, b.attn.host);
  }

  /** Replays bucket `batch`'s graph on its current inputs, nothing else (benchmarks: device time). */
  replayOnly(batch: number): void {
    const g = this.byBatch.get(batch)?.graph;
    invariant(g, () => `GraphDecoder.replayOnly: no graph for bucket ${batch}`);
    g.replay();
  }

  dispose(): void {
    for (const b of this.byBatch.values()) this.freeBucket(b);
    this.byBatch.clear();
  }

  // ---------------------------------------------------------------- buffers

  private makeBucket(B: number, capacity: number): Bucket {
    const be = this.be;
    const lay = inputLayout(B, capacity);
    const host = new Int32Array(lay.length);
    let block: DeviceBuffer | null = null;
    let field: (off: number, n: number) => DeviceBuffer;
    if (this.gc) {
      // One allocation and one host write per step; the kernels see views of it.
      const blk = be.alloc("i32", lay.length);
      block = blk;
      field = (off, n) => this.gc!.view(blk, off, n);
    } else {
      field = (_off, n) => be.alloc("i32", Math.max(1, n));
    }
    const offsets = field(lay.offsets, B + 1);
    const starts = field(lay.starts, capacity);
    const ends = field(lay.ends, capacity);
    const inputs: DecodeStepInputs = {
      batch: B,
      ids: field(lay.ids, B),
      positions: field(lay.positions, B),
      writeSlots: field(lay.writeSlots, B),
      writeSlotsHost: new Int32Array(B),
      segments: { offsets, starts, ends },
      plan: null,
    };
    return { batch: B, lay, host, block, inputs, offsets, starts, ends, bufs: this.step.allocBuffers(B), graph: null, attn: null };
  }

  private writeInputs(b: Bucket): void {
    const be = this.be;
    const h = b.host;
    const lay = b.lay;
    if (b.block) {
      be.write(b.block, h);
      return;
    }
    const B = lay.batch;
    const rows = h[lay.offsets + B]!;
    const inp = b.inputs;
    be.write(inp.ids, h.subarray(lay.ids, lay.ids + B));
    be.write(inp.positions, h.subarray(lay.positions, lay.positions + B));
    be.write(inp.writeSlots, h.subarray(lay.writeSlots, lay.writeSlots + B));
    be.write(b.offsets, h.subarray(lay.offsets, lay.offsets + B + 1));
    be.write(b.starts, h.subarray(lay.starts, lay.starts + rows));
    be.write(b.ends, h.subarray(lay.ends, lay.ends + rows));
  }

  private freeBucket(b: Bucket): void {
    b.graph?.destroy();
    b.graph = null;
    const be = this.be;
    if (b.block) be.free(b.block);
    else for (const f of [b.inputs.ids, b.inputs.positions, b.inputs.writeSlots, b.offsets, b.starts, b.ends]) be.free(f);
    this.step.freeBuffers(b.bufs);
    if (b.attn) {
      be.free(b.attn.plan);
      be.free(b.attn.scratch);
      b.attn = null;
      b.inputs.plan = null;
    }
  }
}
