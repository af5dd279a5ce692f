/**
 * Qwen3Model: the forward pass of Hugging Face `Qwen3ForCausalLM` over a layout, from
 * differentiable tensor ops so the trainer can call loss.backward() on its logits. The engine's
 * generic step runs this function under noGrad over a KVStore view of its paged KV (pagedForward);
 * its decode-only graph path re-states the math as raw backend calls, tested against this one.
 * KVCache (newKVCache) is the contiguous single-sequence cache of tests and benches. It owns the
 * parameters (HF names, weights.ts) on the backend it is given, and knows nothing about files
 * (checkpoint.ts), tokenizers or scheduling.
 * Mirrors https://github.com/huggingface/transformers/blob/v4.51.0/src/transformers/models/qwen3/modeling_qwen3.py
 */
import { Tensor, cast, noGrad } from "../tensor/index.ts";
import type { Backend } from "../tensor/index.ts";
import { UsageError, invariant } from "../util/index.ts";
import { checkLayout } from "../util/index.ts";
import type { Layout } from "../util/index.ts";
import type { Qwen3Config } from "./config.ts";
import { HfBf16Math, plainMath } from "./forward-math.ts";
import type { ForwardMath } from "./forward-math.ts";
import { KVCache } from "./kv-cache.ts";
import type { KVStore } from "./kv-cache.ts";
import { EMBED, FINAL_NORM, LM_HEAD, initQwen3Params, layerParamNames, paramDtype, qwen3ParamSpecs } from "./weights.ts";

export interface RandomModelOptions {
  seed: number;
  /** Where the parameters live (required: there is no default backend). */
  backend: Backend;
  /** "bf16": mixed precision (bf16 matrices, f32 everything else; see weights.ts paramDtype). */
  dtype?: "f32" | "f64" | "bf16";
  /** Std of the normal init (default config.initializerRange). */
  std?: number;
  /** See Qwen3ModelOptions.computeDtype. */
  computeDtype?: "bf16";
  /** See Qwen3ModelOptions.activations. */
  activations?: "bf16";
}

export interface Qwen3ModelOptions {
  /**
   * "bf16" on an f32 model: mixed-precision training with f32 master parameters. Each matrix is
   * cast to bf16 at use (once per forward; cast's gradient rule sends f32 gradients back to the
   * masters), GEMM inputs are bf16 with fp32 accumulation into f32 outputs, and the embedding
   * gather, norms, RoPE, softmax, attention and the residual stay f32 (torch bf16 autocast, which
   * also leaves embedding in fp32).
   */
  computeDtype?: "bf16";
  /**
   * "bf16": compute as transformers' Qwen3 does in bf16 (a model loaded with dtype=bfloat16,
   * eager attention): activations stay f32 tensors (KV cache, engine and autograd unchanged) but
   * hold bf16 values, rounded at every point where PyTorch stores a bf16 result (each GEMM output,
   * both steps of each RMSNorm, RoPE's products and sum, the attention scores and probabilities,
   * SiLU, the residual adds, the logits). GEMMs read bf16 matrices (f32 masters are cast at use)
   * and accumulate in fp32; attention is materialized (forward-math.ts HfBf16Math says what that
   * costs). For parity with a bf16 reference, not for speed. Needs f32 or bf16 parameters.
   */
  activations?: "bf16";
}

export class Qwen3Model {
  readonly config: Qwen3Config;
  /** HF name -> tensor; exactly the names of qwen3ParamSpecs(config) (no lm_head when tied). */
  readonly params: Map<string, Tensor>;
  readonly backend: Backend;
  /** Compute dtype of activations, norms, softmax, residual stream and the KV cache. */
  readonly dtype: "f32" | "f64";
  /**
   * Dtype of the matrices (embeddings, projections, lm_head): the compute dtype, or bf16 for mixed
   * precision, where GEMMs take bf16 activations and accumulate in fp32 into f32 outputs (ops.ts
   * linear), like torch autocast, and norms, softmax and the residual stay in f32.
   */
  readonly weightDtype: "f32" | "f64" | "bf16";
  /** Dtype the GEMMs read: "bf16" in mixed precision (bf16 matrices or computeDtype bf16). */
  readonly gemmDtype: "f32" | "f64" | "bf16";
  /** "bf16": activations rounded as transformers' bf16 forward does (Qwen3ModelOptions.activations); null: not rounded. */
  readonly activations: "bf16" | null;

  /**
   * Wraps an existing parameter map. The map must hold exactly the spec's names and shapes, all
   * of one float dtype on one backend, except in mixed precision: bf16 matrices beside f32
   * vectors (checkpoint.ts reports bad files before this point, so a mismatch here is a bug).
   */
  constructor(config: Qwen3Config, params: Map<string, Tensor>, opts: Qwen3ModelOptions = {}) {
    const specs = qwen3ParamSpecs(config);
    invariant(params.size === specs.length, () => `Qwen3Model: ${params.size} parameters given, config needs ${specs.length}`);
    const first = params.get(EMBED);
    invariant(first, `Qwen3Model: missing ${EMBED}`);
    invariant(
      first.dtype === "f32" || first.dtype === "f64" || first.dtype === "bf16",
      () => `Qwen3Model: parameters must be f32, f64 or bf16, got ${first.dtype}`,
    );
    const mode = first.dtype;
    for (const spec of specs) {
      const t = params.get(spec.name);
      invariant(t, () => `Qwen3Model: missing parameter ${spec.name}`);
      invariant(
        t.shape.length === spec.shape.length && t.shape.every((d, i) => d === spec.shape[i]),
        () => `Qwen3Model: ${spec.name} has shape [${t.shape}], expected [${spec.shape}]`,
      );
      const want = paramDtype(spec, mode);
      invariant(
        t.dtype === want && t.backend === first.backend,
        () => `Qwen3Model: ${spec.name} is ${t.dtype} on ${t.backend.name}, expected ${want} on ${first.backend.name}`,
      );
    }
    this.config = config;
    this.params = params;
    this.backend = first.backend;
    this.weightDtype = mode;
    this.dtype = mode === "bf16" ? "f32" : mode;
    if (opts.computeDtype !== undefined) {
      // A user's choice (CLI, trainer config), but only meaningful over f32 masters.
      if (opts.computeDtype !== "bf16" || mode !== "f32") {
        throw new UsageError(`computeDtype ${opts.computeDtype} needs f32 parameters, the model's are ${mode}`, {
          code: "bad_compute_dtype",
          param: "computeDtype",
          hint: 'use computeDtype "bf16" with an f32 model',
        });
      }
    }
    if (opts.activations !== undefined) {
      if (opts.activations !== "bf16" || mode === "f64") {
        throw new UsageError(`activations ${opts.activations} needs f32 or bf16 parameters, the model's are ${mode}`, {
          code: "bad_activations",
          param: "activations",
          hint: 'use activations "bf16" with an f32 or bf16 model',
        });
      }
    }
    this.activations = opts.activations ?? null;
    this.gemmDtype = mode === "bf16" || opts.computeDtype === "bf16" || this.activations === "bf16" ? "bf16" : mode;
  }

  /** A freshly initialized model (deterministic per seed; see weights.ts). */
  static random(config: Qwen3Config, opts: RandomModelOptions): Qwen3Model {
    const params = initQwen3Params(config, {
      seed: opts.seed,
      backend: opts.backend,
      dtype: opts.dtype ?? "f32",
      std: opts.std,
    });
    return new Qwen3Model(config, params, { computeDtype: opts.computeDtype, activations: opts.activations });
  }

  /** Every trainable tensor, in HF order (the optimizer's parameter list). */
  parameters(): Tensor[] {
    return qwen3ParamSpecs(this.config).map((s) => this.params.get(s.name)!);
  }

  param(name: string): Tensor {
    const t = this.params.get(name);
    invariant(t, () => `Qwen3Model: no parameter named ${name}`);
    return t;
  }

  /** An empty contiguous KV cache sized for this model. */
  newKVCache(maxTokens: number): KVCache {
    const c = this.config;
    return new KVCache({
      backend: this.backend,
      dtype: this.dtype,
      numLayers: c.numHiddenLayers,
      kvHeads: c.numKeyValueHeads,
      headDim: c.headDim,
      maxTokens,
    });
  }

  /**
   * Logits [T, V] for the T tokens `ids` placed by `layout` (positions and visible key segments).
   * Without a cache the layout's keys are the T tokens themselves (numKeys == T). With a cache
   * holding P tokens, numKeys must be P + T (e.g. causalLayout(T, P)); the new tokens' k and v
   * are written into the cache, which then holds P + T. Cached forwards are inference only.
   */
  forward(ids: Int32Array | readonly number[], layout: Layout, kv?: KVStore): Tensor {
    if (kv) return noGrad(() => this.forwardImpl(ids, layout, kv));
    return this.forwardImpl(ids, layout, undefined);
  }

  private forwardImpl(ids: Int32Array | readonly number[], layout: Layout, kv: KVStore | undefined): Tensor {
    const c = this.config;
    // A matrix as the GEMMs read it: bf16 masters as they are, f32 masters cast to bf16 when
    // computing in bf16 (each cast is a graph node, so the f32 master receives the gradient).
    const mat = (name: string): Tensor => {
      const p = this.param(name);
      return this.gemmDtype === "bf16" ? cast(p, "bf16") : p;
    };
    const T = ids.length;
    const H = c.numAttentionHeads;
    const Hkv = c.numKeyValueHeads;
    const D = c.headDim;
    const past = kv ? kv.length : 0;
    this.checkInputs(ids, layout, kv);
    if (kv) kv.ensureRoom(T);

    const idsT = Tensor.fromArray(Int32Array.from(ids), [T], { dtype: "i32", backend: this.backend });
    const pos = Tensor.fromArray(layout.positions, [T], { dtype: "i32", backend: this.backend });
    // Where this forward rounds (forward-math.ts): nowhere but the GEMM inputs in mixed precision
    // (an activation read by several GEMMs is cast to bf16 once by gemmIn; norms, RoPE, attention
    // and the residual stay in f32), or everywhere transformers' bf16 forward does.
    const math: ForwardMath =
      this.activations === "bf16" ? new HfBf16Math(c, layout, this.backend) : plainMath(c, layout, pos, this.gemmDtype === "bf16");
    const embed = this.param(EMBED);
    let h = math.embed(embed, idsT); // [T, C]

    for (let l = 0; l < c.numHiddenLayers; l++) {
      const n = layerParamNames(l);
      const bias = (name: string) => (c.attentionBias ? this.param(name) : null);
      const a = math.gemmIn(math.norm(h, this.param(n.inputNorm))); // [T, C]
      // q/k RMSNorm runs per head over D, before RoPE (Qwen3's difference from Qwen2).
      let q = math.linear(a, mat(n.q), bias(n.qBias)).reshape([T, H, D]);
      q = math.rope(math.norm(q, this.param(n.qNorm))); // [T, H, D]
      let k = math.linear(a, mat(n.k), bias(n.kBias)).reshape([T, Hkv, D]);
      k = math.rope(math.norm(k, this.param(n.kNorm))); // [T, Hkv, D]
      let v = math.linear(a, mat(n.v), bias(n.vBias)).reshape([T, Hkv, D]); // [T, Hkv, D]
      if (kv) ({ k, v } = kv.append(l, k, v)); // now [past + T, Hkv, D]
      const att = math.attention(q, k, v).reshape([T, H * D]);
      h = math.residual(h, math.linear(att, mat(n.o), bias(n.oBias))); // [T, C]
      const m = math.gemmIn(math.norm(h, this.param(n.postNorm)));
      const mlp = math.mlp(math.linear(m, mat(n.gate), null), math.linear(m, mat(n.up), null)); // [T, I]
      h = math.residual(h, math.linear(mlp, mat(n.down), null)); // [T, C]
    }
    if (kv) kv.advance(T);
    invariant(!kv || kv.length === past + T, "KVCache length out of step with the forward");
    const hf = math.norm(h, this.param(FINAL_NORM));
    // The embedding gather above read the f32 master (autocast leaves embedding in fp32); the
    // tied head reads the bf16 copy, so the table's gradient sums an f32 and a cast-back part.
    const head = c.tieWordEmbeddings ? (this.gemmDtype === "bf16" ? cast(embed, "bf16") : embed) : mat(LM_HEAD);
    return math.linear(hf, head, null); // [T, V]
  }

  /**
   * Token ids come from users and tokenizers (a boundary); the layout from npr's own builders
   * (a mismatch is a bug, so it fails an invariant).
   */
  private checkInputs(ids: Int32Array | readonly number[], layout: Layout, kv: KVStore | undefined): void {
    const V = this.config.vocabSize;
    if (ids.length === 0) throw new UsageError("Qwen3Model.forward: no tokens given", { code: "empty", param: "ids" });
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new UsageError(`token ${i} is ${id}, outside the vocabulary [0, ${V})`, {
          code: "bad_token",
          param: "ids",
          hint: "token ids must be integers below the model's vocab_size",
        });
      }
    }
    const past = kv ? kv.length : 0;
    invariant(layout.numTokens === ids.length, () => `forward: layout has ${layout.numTokens} tokens, ids has ${ids.length}`);
    invariant(
      layout.numKeys === past + ids.length,
      () =>
        `forward: layout sees ${layout.numKeys} keys but ${past} cached + ${ids.length} new` +
        (kv ? " (build it as causalLayout(T, kv.length))" : ""),
    );
    if (kv) {
      const c = this.config;
      invariant(
        kv.numLayers === c.numHiddenLayers &&
          kv.kvHeads === c.numKeyValueHeads &&
          kv.headDim === c.headDim &&
          kv.dtype === this.dtype &&
          kv.backend === this.backend,
        "forward: KVCache was made for a different model (use model.newKVCache)",
      );
    }
    const why = checkLayout(layout);
    invariant(why === null, () => `forward: bad layout: ${why}`);
  }
}
