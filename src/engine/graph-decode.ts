/**
 * The fast decode path for decode-only steps (one new token per item): the Qwen3 forward written
 * as raw backend calls on fixed buffers, one set per batch bucket (1, 2, 4, 8, 16; a plan is
 * padded up), so that on CUDA the whole step is captured once as a CUDA graph and each later
 * token costs one host write of the packed inputs, one graph launch and one logits read.
 * Attention reads the paged KV directly: each row's visible keys are CSR ranges of global slot
 * ids (decode-plan.ts) handed to the segment attention kernel over the whole page array, so
 * nothing is gathered; the new k/v rows are scattered into their slots by a device-side slot list.
 *
 * The math is Qwen3Model.forwardImpl's, call for call (mixed precision included: bf16 GEMM inputs,
 * fp32 accumulation into f32, norms/RoPE/attention/residual in the activation dtype), so its
 * logits equal the generic path's up to summation order. On a backend without graphs (the CPU,
 * in tests) the same body runs eagerly, which is how CI checks it against pagedForward.
 * Knows the model's parameters and the paged storage; nothing of requests, sampling or scheduling.
 */
import { EMBED, FINAL_NORM, LM_HEAD, layerParamNames } from "../model/index.ts";
import type { PagedKVStorage, Qwen3Model } from "../model/index.ts";
import type { Backend, DeviceBuffer, DType, HostArray } from "../tensor/index.ts";
import { invariant } from "../util/errors.ts";
import { DECODE_BUCKETS, bucketFor, inputLayout, packInputs, rangesNeeded } from "./decode-plan.ts";
import type { InputLayout } from "./decode-plan.ts";
import type { PlanItem } from "./types.ts";

/** What the CUDA backend offers beyond the Backend contract (duck-typed: engine/ never loads cuda/). */
interface GraphBackend extends Backend {
  captureGraph(body: () => void): { replay: () => void; destroy: () => void };
  scatterRows(src: DeviceBuffer, slots: DeviceBuffer, pages: DeviceBuffer, p: { rows: number; rowSize: number }): void;
  view(buf: DeviceBuffer, offset: number, length: number, dtype?: DType): DeviceBuffer;
}

function graphBackend(be: Backend): GraphBackend | null {
  const g = be as Partial<GraphBackend>;
  return typeof g.captureGraph === "function" && typeof g.scatterRows === "function" && typeof g.view === "function" ? (be as GraphBackend) : null;
}

/** First range capacity per row of a bucket; grown (and the graph recaptured) when a step needs more. */
const RANGES_PER_ROW = 32;

/** One batch bucket: its packed inputs, activations, logits and (on CUDA) its captured graph. */
interface Bucket {
  batch: number;
  lay: InputLayout;
  host: Int32Array;
  /** The whole input block (CUDA: one buffer, fields are views of it; CPU: null, fields own memory). */
  block: DeviceBuffer | null;
  ids: DeviceBuffer;
  positions: DeviceBuffer;
  writeSlots: DeviceBuffer;
  offsets: DeviceBuffer;
  starts: DeviceBuffer;
  ends: DeviceBuffer;
  /** Activations: every buffer below is [batch, ...] in the activation dtype unless said. */
  act: Record<string, DeviceBuffer>;
  logits: DeviceBuffer;
  graph: { replay: () => void; destroy: () => void } | null;
  /** Write slots of the current step, on the host (the CPU's scatter reads them). */
  slotsHost: Int32Array;
}

export interface GraphDecoderOptions {
  /** Capture and replay CUDA graphs (default: when the backend can); false runs the body eagerly. */
  graphs?: boolean;
  buckets?: readonly number[];
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
  private readonly gb: GraphBackend | null;
  private readonly useGraphs: boolean;
  private readonly byBatch = new Map<number, Bucket>();

  constructor(model: Qwen3Model, storage: PagedKVStorage, opts: GraphDecoderOptions = {}) {
    invariant(storage.backend === model.backend && storage.dtype === model.dtype, "GraphDecoder: storage made for another model");
    this.model = model;
    this.storage = storage;
    this.be = model.backend;
    this.gb = graphBackend(this.be);
    this.useGraphs = (opts.graphs ?? true) && this.gb !== null;
    this.buckets = opts.buckets ?? DECODE_BUCKETS;
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
    invariant(this.accepts(items), "GraphDecoder.run: not a decode-only plan within the buckets");
    const B = bucketFor(items.length, this.buckets)!;
    const bs = this.storage.blockSize;
    let b = this.byBatch.get(B);
    const need = rangesNeeded(items, bs);
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
    packInputs(items, bs, b.lay, b.host);
    b.slotsHost.set(b.host.subarray(b.lay.writeSlots, b.lay.writeSlots + B));
    this.writeInputs(b);
    const bucket = b;
    if (bucket.graph) {
      bucket.graph.replay();
      this.replays++;
    } else {
      // The first step of a bucket runs eagerly (it loads kernels and warms cuBLAS, neither of which
      // a capture may do), then the same calls are captured for every later step.
      this.body(bucket);
      if (this.useGraphs) {
        bucket.graph = this.gb!.captureGraph(() => this.body(bucket));
        this.captures++;
      }
    }
    this.steps++;
    return this.be.read(bucket.logits, 0, items.length * this.model.config.vocabSize);
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
    const c = this.model.config;
    const lay = inputLayout(B, capacity);
    const host = new Int32Array(lay.length);
    let block: DeviceBuffer | null = null;
    let field: (off: number, n: number) => DeviceBuffer;
    if (this.gb) {
      // One allocation and one host write per step; the kernels see views of it.
      const blk = be.alloc("i32", lay.length);
      block = blk;
      field = (off, n) => this.gb!.view(blk, off, n);
    } else {
      field = (_off, n) => be.alloc("i32", Math.max(1, n));
    }
    const dt = this.model.dtype;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const D = c.headDim;
    const C = c.hiddenSize;
    const I = c.intermediateSize;
    const act: Record<string, DeviceBuffer> = {
      h: be.alloc(dt, B * C), // residual stream [B, C]
      a: be.alloc(dt, B * C), // normed [B, C]
      o: be.alloc(dt, B * C), // projection out [B, C]
      rstd: be.alloc(dt, B * H), // [B * H] (the largest norm's rows)
      q: be.alloc(dt, B * H * D), // [B, H, D]
      qn: be.alloc(dt, B * H * D),
      k: be.alloc(dt, B * Hkv * D), // [B, Hkv, D]
      kn: be.alloc(dt, B * Hkv * D),
      v: be.alloc(dt, B * Hkv * D),
      att: be.alloc(dt, B * H * D), // [B, H * D]
      lse: be.alloc(dt, B * H),
      g: be.alloc(dt, B * I), // [B, I]
      u: be.alloc(dt, B * I),
      mlp: be.alloc(dt, B * I),
    };
    if (this.model.weightDtype === "bf16") {
      // GEMM inputs cast once (the forward's gemmIn), one per GEMM input width.
      act["a16"] = be.alloc("bf16", B * C);
      act["att16"] = be.alloc("bf16", B * H * D);
      act["mlp16"] = be.alloc("bf16", B * I);
    }
    return {
      batch: B, lay, host, block,
      ids: field(lay.ids, B), positions: field(lay.positions, B), writeSlots: field(lay.writeSlots, B),
      offsets: field(lay.offsets, B + 1), starts: field(lay.starts, capacity), ends: field(lay.ends, capacity),
      act, logits: be.alloc(dt, B * c.vocabSize), graph: null, slotsHost: new Int32Array(B),
    };
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
    be.write(b.ids, h.subarray(lay.ids, lay.ids + B));
    be.write(b.positions, h.subarray(lay.positions, lay.positions + B));
    be.write(b.writeSlots, h.subarray(lay.writeSlots, lay.writeSlots + B));
    be.write(b.offsets, h.subarray(lay.offsets, lay.offsets + B + 1));
    be.write(b.starts, h.subarray(lay.starts, lay.starts + rows));
    be.write(b.ends, h.subarray(lay.ends, lay.ends + rows));
  }

  private freeBucket(b: Bucket): void {
    b.graph?.destroy();
    b.graph = null;
    const be = this.be;
    if (b.block) be.free(b.block);
    else for (const f of [b.ids, b.positions, b.writeSlots, b.offsets, b.starts, b.ends]) be.free(f);
    for (const buf of Object.values(b.act)) be.free(buf);
    be.free(b.logits);
  }

  // ---------------------------------------------------------------- the step

  /** y [rows, n] = x [rows, k] W^T with W [n, k] (torch.nn.Linear), plus a broadcast bias. */
  private linear(x: DeviceBuffer, w: string, bias: string | null, y: DeviceBuffer, rows: number, n: number, k: number): void {
    const be = this.be;
    be.matmul(x, this.buf(w), y, { batch: 1, m: rows, n, k, transA: false, transB: true, strideA: 0, strideB: 0, strideC: 0 });
    if (bias) be.binary("add", y, this.buf(bias), y, { shape: [rows, n], aStrides: [n, 1], bStrides: [0, 1] });
  }

  private buf(name: string): DeviceBuffer {
    const t = this.model.param(name);
    invariant(t.offset === 0 && t.isContiguous(), () => `GraphDecoder: parameter ${name} is not a contiguous buffer`);
    return t.buffer;
  }

  /** The KV write: on CUDA a kernel reading the slots on the device; elsewhere copies by host slots. */
  private scatter(b: Bucket, src: DeviceBuffer, pages: DeviceBuffer): void {
    const row = this.storage.rowSize;
    if (this.gb) {
      this.gb.scatterRows(src, b.writeSlots, pages, { rows: b.batch, rowSize: row });
      return;
    }
    for (let r = 0; r < b.batch; r++) {
      const s = b.slotsHost[r]!;
      if (s >= 0) this.be.copy(src, pages, { shape: [row], srcStrides: [1], srcOffset: r * row, dstOffset: s * row });
    }
  }

  /**
   * One decode step of bucket b on its fixed buffers; touches no host memory on CUDA (so it can be
   * captured). Mirrors Qwen3Model.forwardImpl with T = b.batch new tokens.
   */
  private body(b: Bucket): void {
    const be = this.be;
    const c = this.model.config;
    const st = this.storage;
    const B = b.batch;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const D = c.headDim;
    const C = c.hiddenSize;
    const I = c.intermediateSize;
    const eps = c.rmsNormEps;
    const x = b.act;
    const mixed = this.model.weightDtype === "bf16";
    const gemmIn = (src: DeviceBuffer, bf: string): DeviceBuffer => {
      if (!mixed) return src;
      be.cast(src, x[bf]!);
      return x[bf]!;
    };
    const seg = { offsets: b.offsets, starts: b.starts, ends: b.ends };
    const slots = st.numBlocks * st.blockSize;
    const add = (into: DeviceBuffer, y: DeviceBuffer) => be.binary("add", into, y, into, { shape: [B * C], aStrides: [1], bStrides: [1] });
    const embed = this.buf(EMBED);
    be.embedding(embed, b.ids, x.h!, { n: B, dim: C });
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const n = layerParamNames(l);
      const bias = (name: string) => (c.attentionBias ? name : null);
      be.rmsnorm(x.h!, this.buf(n.inputNorm), x.a!, x.rstd!, { rows: B, dim: C, eps });
      const a = gemmIn(x.a!, "a16");
      this.linear(a, n.q, bias(n.qBias), x.q!, B, H * D, C);
      this.linear(a, n.k, bias(n.kBias), x.k!, B, Hkv * D, C);
      this.linear(a, n.v, bias(n.vBias), x.v!, B, Hkv * D, C);
      // q/k RMSNorm per head over D, then RoPE at each row's position (back into q and k).
      be.rmsnorm(x.q!, this.buf(n.qNorm), x.qn!, x.rstd!, { rows: B * H, dim: D, eps });
      be.rope(x.qn!, b.positions, x.q!, { tokens: B, heads: H, dim: D, theta: c.ropeTheta, inverse: false });
      be.rmsnorm(x.k!, this.buf(n.kNorm), x.kn!, x.rstd!, { rows: B * Hkv, dim: D, eps });
      be.rope(x.kn!, b.positions, x.k!, { tokens: B, heads: Hkv, dim: D, theta: c.ropeTheta, inverse: false });
      this.scatter(b, x.k!, st.keys[l]!);
      this.scatter(b, x.v!, st.values[l]!);
      // Keys are the whole page array; each row's segments name the slots it sees (its own included).
      be.attention(x.q!, st.keys[l]!, st.values[l]!, seg, x.att!, x.lse!, { tokens: B, keys: slots, heads: H, kvHeads: Hkv, headDim: D, scale: 1 / Math.sqrt(D) });
      this.linear(gemmIn(x.att!, "att16"), n.o, bias(n.oBias), x.o!, B, C, H * D);
      add(x.h!, x.o!);
      be.rmsnorm(x.h!, this.buf(n.postNorm), x.a!, x.rstd!, { rows: B, dim: C, eps });
      const m = gemmIn(x.a!, "a16");
      this.linear(m, n.gate, null, x.g!, B, I, C);
      this.linear(m, n.up, null, x.u!, B, I, C);
      be.swiglu(x.g!, x.u!, x.mlp!);
      this.linear(gemmIn(x.mlp!, "mlp16"), n.down, null, x.o!, B, C, I);
      add(x.h!, x.o!);
    }
    be.rmsnorm(x.h!, this.buf(FINAL_NORM), x.a!, x.rstd!, { rows: B, dim: C, eps });
    this.linear(gemmIn(x.a!, "a16"), c.tieWordEmbeddings ? EMBED : LM_HEAD, null, b.logits, B, c.vocabSize, C);
  }
}
