/**
 * One Qwen3 decode step (one new token per row, B rows) written as raw backend calls on fixed
 * buffers: the model's forward (qwen3.ts forwardImpl) with T = B, over the paged KV storage,
 * so the engine can capture it once as a CUDA graph and replay it per token (engine/graph-decode.ts
 * owns the buckets, the input block, the per-step attention plan, capture and replay; this file
 * owns the math). Call for call the forward's mixed precision: bf16 GEMM inputs, fp32
 * accumulation into f32, norms/RoPE/attention/residual in the activation dtype; its logits equal
 * the generic path's up to summation order.
 * Two bodies. `body`: primitives only (any backend; on the CPU it runs eagerly in CI against
 * pagedForward). `fusedBody`: a mixed-precision model (bf16 weights, f32 activations) on a backend
 * with the "fusedDecode" capability, 6 kernels per layer (input norm + q/k/v in one GEMV, q/k norm
 * + RoPE + KV write, attention, o_proj adding into the residual, post norm + gate/up with SwiGLU
 * into bf16, down_proj adding into the residual; beyond a few rows each norm is a kernel of its
 * own). Attention reads the pages directly: the "decodeAttention" capability over a packed plan
 * where the backend has it, else segment attention over the whole page array.
 * Knows the model's parameters, config and the paged storage; nothing of buckets, graphs,
 * requests, sampling or scheduling. Body calls touch no host memory on a backend with graph capture.
 */
import { hasDecodeAttention, hasFusedDecode, hasGraphCapture } from "../tensor/index.ts";
import type {
  AttentionSegments,
  Backend,
  DecodeAttentionCapacity,
  DeviceBuffer,
  FusedDecodeOps,
  GraphCapture,
  PagedDecodeAttention,
} from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import type { PagedKVStorage } from "./paged-kv.ts";
import type { Qwen3Model } from "./qwen3.ts";
import { EMBED, FINAL_NORM, LM_HEAD, layerParamNames } from "./weights.ts";

/** What one step reads: the packed per-row inputs (device, i32) and how each row sees its keys. */
export interface DecodeStepInputs {
  /** B: rows of the step (padding rows write slot -1 and see no key). */
  batch: number;
  /** [B] token ids. */
  ids: DeviceBuffer;
  /** [B] RoPE position of each row's token. */
  positions: DeviceBuffer;
  /** [B] global slot each row's k/v is written to (-1: nothing). */
  writeSlots: DeviceBuffer;
  /** [B] the same slots on the host (a backend without scatterRows writes the KV by host copies). */
  writeSlotsHost: Int32Array;
  /** Each row's visible slots (its own included) as segments over the page array. */
  segments: AttentionSegments;
  /** The packed decode attention plan (decode-attention-plan.ts) when the step uses that op. */
  plan: { buffer: DeviceBuffer; scratch: DeviceBuffer; capacity: DecodeAttentionCapacity } | null;
}

/** A step's working buffers for B rows: activations by name and the logits [B, V]. */
export interface DecodeStepBuffers {
  batch: number;
  act: Record<string, DeviceBuffer>;
  logits: DeviceBuffer;
}

export interface DecodeStepOptions {
  /** Use the backend's paged decode attention op where it has one (default true). */
  decodeAttention?: boolean;
  /** Use the backend's fused decode ops where it has them and the model is mixed precision (default true). */
  fused?: boolean;
}

export class DecodeStep {
  readonly model: Qwen3Model;
  readonly storage: PagedKVStorage;
  private readonly be: Backend;
  /** The KV write on the device (graph capture's scatterRows), or null: host copies. */
  private readonly gc: (Backend & GraphCapture) | null;
  /** The paged decode attention op, when this step uses it (else segment attention over the pages). */
  private readonly da: (Backend & PagedDecodeAttention) | null;
  /** The fused ops, when this step uses them (bf16 weights, f32 activations, a backend with them). */
  private readonly fx: (Backend & FusedDecodeOps) | null;

  /**
   * Whether this step computes what the model's forward computes: the plain and mixed-precision
   * forwards, yes; a model that rounds its activations (activations "bf16") or casts f32 masters
   * per GEMM (computeDtype) no (those modes live in the generic forward only).
   */
  static supports(model: Qwen3Model): boolean {
    return model.activations === null && model.gemmDtype === model.weightDtype;
  }

  constructor(model: Qwen3Model, storage: PagedKVStorage, opts: DecodeStepOptions = {}) {
    invariant(storage.backend === model.backend && storage.dtype === model.dtype, "DecodeStep: storage made for another model");
    invariant(DecodeStep.supports(model), 'DecodeStep: the decode step does not implement activations "bf16" or computeDtype');
    this.model = model;
    this.storage = storage;
    const be = model.backend;
    this.be = be;
    this.gc = hasGraphCapture(be) ? be : null;
    this.da = (opts.decodeAttention ?? true) && hasDecodeAttention(be) ? be : null;
    this.fx =
      (opts.fused ?? true) && hasFusedDecode(be) && model.weightDtype === "bf16" && model.dtype === "f32" && this.aligned() ? be : null;
  }

  /** Whether the fused body runs (see the file header). */
  get fused(): boolean {
    return this.fx !== null;
  }

  /** Whether attention is the paged decode attention op (the caller packs a plan per step). */
  get usesDecodeAttention(): boolean {
    return this.da !== null;
  }

  /** Float elements of the decode attention op's scratch for a plan of this capacity. */
  planScratchLength(cap: DecodeAttentionCapacity): number {
    invariant(this.da, "DecodeStep.planScratchLength: this step does not use the decode attention op");
    const c = this.model.config;
    return this.da.decodeAttentionScratchLength(cap, c.numAttentionHeads, c.headDim);
  }

  /** The fused GEMV reads 16-byte chunks: every GEMM width a multiple of 8 (true of Qwen3 shapes). */
  private aligned(): boolean {
    const c = this.model.config;
    return [c.hiddenSize, c.intermediateSize, c.numAttentionHeads * c.headDim].every((k) => k % 8 === 0);
  }

  /** The activations and logits of a B-row step, in the model's dtype unless said. */
  allocBuffers(B: number): DecodeStepBuffers {
    const be = this.be;
    const c = this.model.config;
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
    return { batch: B, act, logits: be.alloc(dt, B * c.vocabSize) }; // logits [B, V]
  }

  freeBuffers(bufs: DecodeStepBuffers): void {
    for (const b of Object.values(bufs.act)) this.be.free(b);
    this.be.free(bufs.logits);
  }

  /** One decode step: bufs.logits [B, V] from the inputs; k/v of each row written into its slot. */
  run(inp: DecodeStepInputs, bufs: DecodeStepBuffers): void {
    invariant(inp.batch === bufs.batch, () => `DecodeStep.run: ${inp.batch} rows of inputs, buffers for ${bufs.batch}`);
    invariant(!this.da || inp.plan, "DecodeStep.run: the decode attention op needs a packed plan");
    if (this.fx) this.fusedBody(inp, bufs, this.fx);
    else this.body(inp, bufs);
  }

  // ---------------------------------------------------------------- pieces

  /** y [rows, n] = x [rows, k] W^T with W [n, k] (torch.nn.Linear), plus a broadcast bias. */
  private linear(x: DeviceBuffer, w: string, bias: string | null, y: DeviceBuffer, rows: number, n: number, k: number): void {
    const be = this.be;
    be.matmul(x, this.buf(w), y, { batch: 1, m: rows, n, k, transA: false, transB: true, strideA: 0, strideB: 0, strideC: 0 });
    if (bias) be.binary("add", y, this.buf(bias), y, { shape: [rows, n], aStrides: [n, 1], bStrides: [0, 1] });
  }

  private buf(name: string): DeviceBuffer {
    const t = this.model.param(name);
    invariant(t.offset === 0 && t.isContiguous(), () => `DecodeStep: parameter ${name} is not a contiguous buffer`);
    return t.buffer;
  }

  /** The KV write: on a graph backend a kernel reading the slots on the device; elsewhere copies by host slots. */
  private scatter(inp: DecodeStepInputs, src: DeviceBuffer, pages: DeviceBuffer): void {
    const row = this.storage.rowSize;
    if (this.gc) {
      this.gc.scatterRows(src, inp.writeSlots, pages, { rows: inp.batch, rowSize: row });
      return;
    }
    for (let r = 0; r < inp.batch; r++) {
      const s = inp.writeSlotsHost[r]!;
      if (s >= 0) this.be.copy(src, pages, { shape: [row], srcStrides: [1], srcOffset: r * row, dstOffset: s * row });
    }
  }

  /**
   * Attention of the step's rows over the whole page array of layer l: each row's segments (or
   * the plan) name the slots it sees, its own included.
   */
  private attend(inp: DecodeStepInputs, x: Record<string, DeviceBuffer>, l: number): void {
    const c = this.model.config;
    const st = this.storage;
    if (this.da && inp.plan) {
      this.da.decodeAttention(x.q!, st.keys[l]!, st.values[l]!, inp.plan.buffer, inp.plan.scratch, x.att!, x.lse!, {
        rows: inp.batch,
        keys: st.numBlocks * st.blockSize,
        heads: c.numAttentionHeads,
        kvHeads: c.numKeyValueHeads,
        headDim: c.headDim,
        scale: 1 / Math.sqrt(c.headDim),
        capacity: inp.plan.capacity,
      });
      return;
    }
    this.be.attention(x.q!, st.keys[l]!, st.values[l]!, inp.segments, x.att!, x.lse!, {
      tokens: inp.batch,
      keys: st.numBlocks * st.blockSize,
      heads: c.numAttentionHeads,
      kvHeads: c.numKeyValueHeads,
      headDim: c.headDim,
      scale: 1 / Math.sqrt(c.headDim),
    });
  }

  // ---------------------------------------------------------------- the bodies

  /**
   * The step with the fused ops (mixed precision only): the residual h stays f32 and is RMSNormed
   * as the GEMVs read it, o_proj and down_proj add into it, gate/up write down_proj's bf16 input.
   */
  private fusedBody(inp: DecodeStepInputs, bufs: DecodeStepBuffers, fx: FusedDecodeOps): void {
    const c = this.model.config;
    const st = this.storage;
    const B = inp.batch;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const D = c.headDim;
    const C = c.hiddenSize;
    const I = c.intermediateSize;
    const eps = c.rmsNormEps;
    const x = bufs.act;
    const bias = (name: string) => (c.attentionBias ? this.buf(name) : null);
    const head = this.buf(c.tieWordEmbeddings ? EMBED : LM_HEAD);
    this.be.embedding(this.buf(EMBED), inp.ids, x.h!, { n: B, dim: C });
    for (let l = 0; l < c.numHiddenLayers; l++) {
      const n = layerParamNames(l);
      // The input norm is fused into the q/k/v GEMV (a separate kernel into a16 beyond a few rows).
      fx.decodeGemv(
        x.h!,
        [
          { w: this.buf(n.q), y: x.q!, n: H * D, bias: bias(n.qBias) },
          { w: this.buf(n.k), y: x.k!, n: Hkv * D, bias: bias(n.kBias) },
          { w: this.buf(n.v), y: x.v!, n: Hkv * D, bias: bias(n.vBias) },
        ],
        { rows: B, k: C, epilogue: "store", norm: { w: this.buf(n.inputNorm), eps, scratch: x.a16! } },
      );
      fx.decodeQkNormRope(
        x.q!,
        x.k!,
        x.v!,
        this.buf(n.qNorm),
        this.buf(n.kNorm),
        inp.positions,
        inp.writeSlots,
        st.keys[l]!,
        st.values[l]!,
        {
          rows: B,
          heads: H,
          kvHeads: Hkv,
          headDim: D,
          eps,
          theta: c.ropeTheta,
        },
      );
      this.attend(inp, x, l);
      // o_proj reads the f32 attention output, rounded to bf16 as it loads (the generic path's cast).
      fx.decodeGemv(x.att!, [{ w: this.buf(n.o), y: x.h!, n: C, bias: bias(n.oBias) }], { rows: B, k: H * D, epilogue: "add" });
      fx.decodeGemv(
        x.h!,
        [
          { w: this.buf(n.gate), y: x.mlp16!, n: I },
          { w: this.buf(n.up), y: x.mlp16!, n: I },
        ],
        {
          rows: B,
          k: C,
          epilogue: "swiglu",
          norm: { w: this.buf(n.postNorm), eps, scratch: x.a16! },
        },
      );
      fx.decodeGemv(x.mlp16!, [{ w: this.buf(n.down), y: x.h!, n: C }], { rows: B, k: I, epilogue: "add" });
    }
    fx.decodeGemv(x.h!, [{ w: head, y: bufs.logits, n: c.vocabSize }], {
      rows: B,
      k: C,
      epilogue: "store",
      norm: { w: this.buf(FINAL_NORM), eps, scratch: x.a16! },
    });
  }

  /** The step from primitives: Qwen3Model.forwardImpl with T = B new tokens. */
  private body(inp: DecodeStepInputs, bufs: DecodeStepBuffers): void {
    const be = this.be;
    const c = this.model.config;
    const st = this.storage;
    const B = inp.batch;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const D = c.headDim;
    const C = c.hiddenSize;
    const I = c.intermediateSize;
    const eps = c.rmsNormEps;
    const x = bufs.act;
    const mixed = this.model.weightDtype === "bf16";
    const gemmIn = (src: DeviceBuffer, bf: string): DeviceBuffer => {
      if (!mixed) return src;
      be.cast(src, x[bf]!);
      return x[bf]!;
    };
    const add = (into: DeviceBuffer, y: DeviceBuffer) => be.binary("add", into, y, into, { shape: [B * C], aStrides: [1], bStrides: [1] });
    be.embedding(this.buf(EMBED), inp.ids, x.h!, { n: B, dim: C });
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
      be.rope(x.qn!, inp.positions, x.q!, { tokens: B, heads: H, dim: D, theta: c.ropeTheta, inverse: false });
      be.rmsnorm(x.k!, this.buf(n.kNorm), x.kn!, x.rstd!, { rows: B * Hkv, dim: D, eps });
      be.rope(x.kn!, inp.positions, x.k!, { tokens: B, heads: Hkv, dim: D, theta: c.ropeTheta, inverse: false });
      this.scatter(inp, x.k!, st.keys[l]!);
      this.scatter(inp, x.v!, st.values[l]!);
      this.attend(inp, x, l);
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
    this.linear(gemmIn(x.a!, "a16"), c.tieWordEmbeddings ? EMBED : LM_HEAD, null, bufs.logits, B, c.vocabSize, C);
  }
}
