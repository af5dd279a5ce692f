/**
 * The fast decode path for decode-only steps (one new token per item): the Qwen3 forward written
 * as raw backend calls on fixed buffers, one set per batch bucket (1, 2, 4, 8, 16; a plan is
 * padded up), so that on CUDA the whole step is captured once as a CUDA graph and each later
 * token costs one host write of the packed inputs, one graph launch and one logits read.
 * Attention reads the paged KV directly: each row's visible keys are CSR ranges of global slot
 * ids (decode-plan.ts) handed to the segment attention kernel over the whole page array, so
 * nothing is gathered; the new k/v rows are scattered into their slots by a device-side slot list.
 * Where the backend has the paged decode attention op (CUDA decode-attention.ts), attention runs
 * that instead over a per-step work plan (attention-plan.ts): the keys that several rows see
 * (sibling branches' shared prefix) are read once for all of them, and long rows are split over
 * many blocks. The plan is written beside the inputs each step; its capacity is fixed per
 * captured graph and grows (with a recapture) when a step needs more.
 *
 * The math is Qwen3Model.forwardImpl's, call for call (mixed precision included: bf16 GEMM inputs,
 * fp32 accumulation into f32, norms/RoPE/attention/residual in the activation dtype), so its
 * logits equal the generic path's up to summation order. On a backend without graphs (the CPU,
 * in tests) the same body runs eagerly, which is how CI checks it against pagedForward.
 * A mixed-precision model (bf16 weights, f32 activations) on a backend with the fused decode ops
 * (CUDA: decode.ts) runs fusedBody instead: 6 kernels per layer (input norm + q/k/v in one GEMV,
 * q/k norm + RoPE + KV write, attention, o_proj adding into the residual, post norm + gate/up
 * with SwiGLU into bf16, down_proj adding into the residual; beyond a few rows each norm is a
 * kernel of its own), same math up to summation order.
 * Knows the model's parameters and the paged storage; nothing of requests, sampling or scheduling.
 */
import { EMBED, FINAL_NORM, LM_HEAD, layerParamNames } from "../model/index.ts";
import type { PagedKVStorage, Qwen3Model } from "../model/index.ts";
import type { Backend, DeviceBuffer, DType, HostArray } from "../tensor/index.ts";
import { invariant } from "../util/errors.ts";
import { capacityFits, growCapacity, packPlan, planAttention, planCapacityNeeded, planLayout } from "./attention-plan.ts";
import type { PlanCapacity, PlanLayout } from "./attention-plan.ts";
import { DECODE_BUCKETS, bucketFor, inputLayout, packInputs, rowRanges } from "./decode-plan.ts";
import type { InputLayout } from "./decode-plan.ts";
import type { PlanItem } from "./types.ts";

/** What the CUDA backend offers beyond the Backend contract (duck-typed: engine/ never loads cuda/). */
interface GraphBackend extends Backend {
  captureGraph(body: () => void): { replay: () => void; destroy: () => void };
  scatterRows(src: DeviceBuffer, slots: DeviceBuffer, pages: DeviceBuffer, p: { rows: number; rowSize: number }): void;
  view(buf: DeviceBuffer, offset: number, length: number, dtype?: DType): DeviceBuffer;
}

/** One matrix of a fused GEMV (CUDA decode.ts GemvTarget, duck-typed). */
interface GemvTarget {
  w: DeviceBuffer;
  y: DeviceBuffer;
  n: number;
  bias?: DeviceBuffer | null;
}

/** The fused decode ops (CUDA decode.ts), duck-typed like captureGraph. */
interface FusedDecodeBackend {
  decodeRmsnorm(x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: { rows: number; dim: number; eps: number }): void;
  decodeGemv(
    x: DeviceBuffer, mats: readonly GemvTarget[],
    p: {
      rows: number; k: number; epilogue: "store" | "add" | "swiglu";
      norm?: { w: DeviceBuffer; eps: number; scratch?: DeviceBuffer }; prefetch?: readonly DeviceBuffer[];
    },
  ): void;
  decodeQkNormRope(
    q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, qNorm: DeviceBuffer, kNorm: DeviceBuffer, positions: DeviceBuffer, slots: DeviceBuffer,
    keys: DeviceBuffer, values: DeviceBuffer, p: { rows: number; heads: number; kvHeads: number; headDim: number; eps: number; theta: number },
  ): void;
}

function fusedBackend(be: Backend): FusedDecodeBackend | null {
  const f = be as Partial<FusedDecodeBackend>;
  return typeof f.decodeRmsnorm === "function" && typeof f.decodeGemv === "function" && typeof f.decodeQkNormRope === "function"
    ? (be as unknown as FusedDecodeBackend)
    : null;
}

/** The paged decode attention op (CUDA decode-attention.ts), duck-typed like captureGraph. */
interface DecodeAttentionBackend {
  decodeAttention(
    q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, plan: DeviceBuffer, scratch: DeviceBuffer, out: DeviceBuffer, lse: DeviceBuffer,
    p: { rows: number; keys: number; heads: number; kvHeads: number; headDim: number; scale: number; capacity: PlanCapacity },
  ): void;
  decodeAttentionScratchLength(cap: PlanCapacity, heads: number, headDim: number): number;
}

function decodeAttentionBackend(be: Backend): DecodeAttentionBackend | null {
  const d = be as Partial<DecodeAttentionBackend>;
  return typeof d.decodeAttention === "function" && typeof d.decodeAttentionScratchLength === "function" ? (be as unknown as DecodeAttentionBackend) : null;
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
  /** The decode attention plan (device, host copy), its capacity and the op's scratch; null without the op. */
  attn: { plan: DeviceBuffer; host: Int32Array; cap: PlanCapacity; lay: PlanLayout; scratch: DeviceBuffer } | null;
}

export interface GraphDecoderOptions {
  /** Capture and replay CUDA graphs (default: when the backend can); false runs the body eagerly. */
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
  private readonly gb: GraphBackend | null;
  private readonly useGraphs: boolean;
  /** The paged decode attention op, when the backend has it (else segment attention over the pages). */
  private readonly da: DecodeAttentionBackend | null;
  /** The fused ops, when this decoder uses them (bf16 weights, f32 activations, a backend with them). */
  private readonly fx: FusedDecodeBackend | null;
  private readonly byBatch = new Map<number, Bucket>();

  /**
   * Whether this path computes what the model's forward computes: the plain and mixed-precision
   * forwards, yes; a model that rounds its activations (activations "bf16") or casts f32 masters
   * per GEMM (computeDtype) no (those modes live in the generic forward only).
   */
  static supports(model: Qwen3Model): boolean {
    return model.activations === null && model.gemmDtype === model.weightDtype;
  }

  constructor(model: Qwen3Model, storage: PagedKVStorage, opts: GraphDecoderOptions = {}) {
    invariant(storage.backend === model.backend && storage.dtype === model.dtype, "GraphDecoder: storage made for another model");
    invariant(GraphDecoder.supports(model), "GraphDecoder: the graph decode path does not implement activations \"bf16\" or computeDtype");
    this.model = model;
    this.storage = storage;
    this.be = model.backend;
    this.gb = graphBackend(this.be);
    this.useGraphs = (opts.graphs ?? true) && this.gb !== null;
    this.buckets = opts.buckets ?? DECODE_BUCKETS;
    this.da = (opts.decodeAttention ?? true) ? decodeAttentionBackend(this.be) : null;
    const fx = fusedBackend(this.be);
    this.fx = (opts.fused ?? true) && fx && model.weightDtype === "bf16" && model.dtype === "f32" && this.aligned() ? fx : null;
  }

  /** Whether this decoder runs the fused body (see the file header). */
  get fused(): boolean {
    return this.fx !== null;
  }

  /** The fused GEMV reads 16-byte chunks: every GEMM width a multiple of 8 (true of Qwen3 shapes). */
  private aligned(): boolean {
    const c = this.model.config;
    return [c.hiddenSize, c.intermediateSize, c.numAttentionHeads * c.headDim].every((k) => k % 8 === 0);
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
    return this.be.read(bucket.logits, 0, items.length * this.model.config.vocabSize);
  }

  /**
   * The same step, leaving the logits on the device: the returned buffer holds [bucket, V] rows
   * (row i = item i; later rows are padding) until the next step of that bucket (device sampling).
   */
  runOnDevice(items: readonly PlanItem[]): DeviceBuffer {
    return this.execute(items).logits;
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
    b.slotsHost.set(b.host.subarray(b.lay.writeSlots, b.lay.writeSlots + B));
    this.writeInputs(b);
    if (this.da) this.writePlan(b, ranges);
    const bucket = b;
    if (bucket.graph) {
      bucket.graph.replay();
      this.replays++;
    } else {
      // The first step of a bucket runs eagerly (it loads kernels and warms cuBLAS, neither of which
      // a capture may do), then the same calls are captured for every later step.
      this.step(bucket);
      if (this.useGraphs) {
        bucket.graph = this.gb!.captureGraph(() => this.step(bucket));
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
      const c = this.model.config;
      const lay = planLayout(b.batch, cap);
      b.attn = {
        plan: this.be.alloc("i32", lay.length), host: new Int32Array(lay.length), cap, lay,
        scratch: this.be.alloc(this.model.dtype, this.da!.decodeAttentionScratchLength(cap, c.numAttentionHeads, c.headDim)),
      };
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
      act, logits: be.alloc(dt, B * c.vocabSize), graph: null, slotsHost: new Int32Array(B), attn: null,
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
    if (b.attn) {
      be.free(b.attn.plan);
      be.free(b.attn.scratch);
      b.attn = null;
    }
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

  private step(b: Bucket): void {
    if (this.fx) this.fusedBody(b, this.fx);
    else this.body(b);
  }

  /**
   * Attention of the step's rows over the whole page array of layer l: each row's segments name
   * the slots it sees (its own included). One call, so a decode attention kernel can replace it.
   */
  private attend(b: Bucket, l: number): void {
    const c = this.model.config;
    const st = this.storage;
    const x = b.act;
    if (this.da && b.attn) {
      this.da.decodeAttention(x.q!, st.keys[l]!, st.values[l]!, b.attn.plan, b.attn.scratch, x.att!, x.lse!, {
        rows: b.batch, keys: st.numBlocks * st.blockSize, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads, headDim: c.headDim,
        scale: 1 / Math.sqrt(c.headDim), capacity: b.attn.cap,
      });
      return;
    }
    const seg = { offsets: b.offsets, starts: b.starts, ends: b.ends };
    this.be.attention(x.q!, st.keys[l]!, st.values[l]!, seg, x.att!, x.lse!, {
      tokens: b.batch, keys: st.numBlocks * st.blockSize, heads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads, headDim: c.headDim, scale: 1 / Math.sqrt(c.headDim),
    });
  }

  /**
   * The step with the fused ops (mixed precision only): the residual h stays f32 and is RMSNormed
   * as the GEMVs read it, o_proj and down_proj add into it, gate/up write down_proj's bf16 input.
   */
  private fusedBody(b: Bucket, fx: FusedDecodeBackend): void {
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
    const bias = (name: string) => (c.attentionBias ? this.buf(name) : null);
    const L = c.numHiddenLayers;
    const head = this.buf(c.tieWordEmbeddings ? EMBED : LM_HEAD);
    // Each GEMV names the next one's weights for the backend's optional L2 prefetch (the last
    // layer's down_proj: lm_head; lm_head: layer 0's q/k/v, the next step's first GEMV).
    const n0 = layerParamNames;
    const qkv = (l: number) => [n0(l).q, n0(l).k, n0(l).v].map((name) => this.buf(name));
    this.be.embedding(this.buf(EMBED), b.ids, x.h!, { n: B, dim: C });
    for (let l = 0; l < L; l++) {
      const n = n0(l);
      // The input norm is fused into the q/k/v GEMV (a separate kernel into a16 beyond a few rows).
      fx.decodeGemv(x.h!, [
        { w: this.buf(n.q), y: x.q!, n: H * D, bias: bias(n.qBias) },
        { w: this.buf(n.k), y: x.k!, n: Hkv * D, bias: bias(n.kBias) },
        { w: this.buf(n.v), y: x.v!, n: Hkv * D, bias: bias(n.vBias) },
      ], { rows: B, k: C, epilogue: "store", norm: { w: this.buf(n.inputNorm), eps, scratch: x.a16! }, prefetch: [this.buf(n.o)] });
      fx.decodeQkNormRope(x.q!, x.k!, x.v!, this.buf(n.qNorm), this.buf(n.kNorm), b.positions, b.writeSlots, st.keys[l]!, st.values[l]!, {
        rows: B, heads: H, kvHeads: Hkv, headDim: D, eps, theta: c.ropeTheta,
      });
      this.attend(b, l);
      // o_proj reads the f32 attention output, rounded to bf16 as it loads (the generic path's cast).
      fx.decodeGemv(x.att!, [{ w: this.buf(n.o), y: x.h!, n: C, bias: bias(n.oBias) }], {
        rows: B, k: H * D, epilogue: "add", prefetch: [this.buf(n.gate), this.buf(n.up)],
      });
      fx.decodeGemv(x.h!, [{ w: this.buf(n.gate), y: x.mlp16!, n: I }, { w: this.buf(n.up), y: x.mlp16!, n: I }], {
        rows: B, k: C, epilogue: "swiglu", norm: { w: this.buf(n.postNorm), eps, scratch: x.a16! }, prefetch: [this.buf(n.down)],
      });
      fx.decodeGemv(x.mlp16!, [{ w: this.buf(n.down), y: x.h!, n: C }], { rows: B, k: I, epilogue: "add", prefetch: l + 1 < L ? qkv(l + 1) : [head] });
    }
    fx.decodeGemv(x.h!, [{ w: head, y: b.logits, n: c.vocabSize }], {
      rows: B, k: C, epilogue: "store", norm: { w: this.buf(FINAL_NORM), eps, scratch: x.a16! }, prefetch: qkv(0),
    });
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
      this.attend(b, l);
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
