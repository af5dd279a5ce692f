/**
 * The parameters of a Qwen3 model: their Hugging Face names and shapes for a config (the order
 * transformers lists them in), and a seeded random init. This is the one place that spells
 * parameter names; loading, saving and the forward pass look them up through here.
 * It knows names, shapes and init values only: no files, no forward math.
 */
import { Tensor } from "../tensor/index.ts";
import { toBf16Bits } from "../tensor/index.ts";
import type { Backend } from "../tensor/index.ts";
import { Rng } from "../util/index.ts";
import type { Qwen3Config } from "./config.ts";

/** How a parameter starts (as HF `_init_weights` does for Qwen3). */
export type ParamInit = "normal" | "ones" | "zeros";

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: ParamInit;
}

/** Names of one decoder layer's parameters. */
export interface LayerParamNames {
  readonly inputNorm: string;
  readonly q: string;
  readonly k: string;
  readonly v: string;
  readonly o: string;
  /** Bias names, present only when config.attentionBias. */
  readonly qBias: string;
  readonly kBias: string;
  readonly vBias: string;
  readonly oBias: string;
  readonly qNorm: string;
  readonly kNorm: string;
  readonly postNorm: string;
  readonly gate: string;
  readonly up: string;
  readonly down: string;
}

export const EMBED = "model.embed_tokens.weight";
export const FINAL_NORM = "model.norm.weight";
export const LM_HEAD = "lm_head.weight";

export function layerParamNames(i: number): LayerParamNames {
  const p = `model.layers.${i}`;
  return {
    inputNorm: `${p}.input_layernorm.weight`,
    q: `${p}.self_attn.q_proj.weight`,
    k: `${p}.self_attn.k_proj.weight`,
    v: `${p}.self_attn.v_proj.weight`,
    o: `${p}.self_attn.o_proj.weight`,
    qBias: `${p}.self_attn.q_proj.bias`,
    kBias: `${p}.self_attn.k_proj.bias`,
    vBias: `${p}.self_attn.v_proj.bias`,
    oBias: `${p}.self_attn.o_proj.bias`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
    postNorm: `${p}.post_attention_layernorm.weight`,
    gate: `${p}.mlp.gate_proj.weight`,
    up: `${p}.mlp.up_proj.weight`,
    down: `${p}.mlp.down_proj.weight`,
  };
}

/**
 * Every parameter of the model for `config`, in HF order: embeddings, then per layer (attention
 * projections, q/k norms, MLP, the two layer norms), the final norm, and lm_head when untied.
 * Linear weights are [out, in] as torch.nn.Linear stores them.
 */
export function qwen3ParamSpecs(config: Qwen3Config): ParamSpec[] {
  const V = config.vocabSize;
  const C = config.hiddenSize;
  const I = config.intermediateSize;
  const H = config.numAttentionHeads;
  const Hkv = config.numKeyValueHeads;
  const D = config.headDim;
  const specs: ParamSpec[] = [{ name: EMBED, shape: [V, C], init: "normal" }];
  for (let i = 0; i < config.numHiddenLayers; i++) {
    const n = layerParamNames(i);
    specs.push({ name: n.q, shape: [H * D, C], init: "normal" });
    if (config.attentionBias) specs.push({ name: n.qBias, shape: [H * D], init: "zeros" });
    specs.push({ name: n.k, shape: [Hkv * D, C], init: "normal" });
    if (config.attentionBias) specs.push({ name: n.kBias, shape: [Hkv * D], init: "zeros" });
    specs.push({ name: n.v, shape: [Hkv * D, C], init: "normal" });
    if (config.attentionBias) specs.push({ name: n.vBias, shape: [Hkv * D], init: "zeros" });
    specs.push({ name: n.o, shape: [C, H * D], init: "normal" });
    if (config.attentionBias) specs.push({ name: n.oBias, shape: [C], init: "zeros" });
    specs.push({ name: n.qNorm, shape: [D], init: "ones" });
    specs.push({ name: n.kNorm, shape: [D], init: "ones" });
    specs.push({ name: n.gate, shape: [I, C], init: "normal" });
    specs.push({ name: n.up, shape: [I, C], init: "normal" });
    specs.push({ name: n.down, shape: [C, I], init: "normal" });
    specs.push({ name: n.inputNorm, shape: [C], init: "ones" });
    specs.push({ name: n.postNorm, shape: [C], init: "ones" });
  }
  specs.push({ name: FINAL_NORM, shape: [C], init: "ones" });
  if (!config.tieWordEmbeddings) specs.push({ name: LM_HEAD, shape: [V, C], init: "normal" });
  return specs;
}

/**
 * Mixed precision keeps the matrices (embeddings, projections, lm_head: what GEMMs and the
 * embedding gather read) in bf16 and the vectors (norm weights, biases) in the f32 compute dtype.
 */
export function isMatrixParam(spec: ParamSpec): boolean {
  return spec.shape.length === 2;
}

/** The dtype parameter `spec` is held in, for a model's dtype option ("bf16" = mixed precision). */
export function paramDtype(spec: ParamSpec, dtype: "f32" | "f64" | "bf16"): "f32" | "f64" | "bf16" {
  if (dtype !== "bf16") return dtype;
  return isMatrixParam(spec) ? "bf16" : "f32";
}

/** Total number of scalars in the model's parameters (tied embeddings counted once). */
export function qwen3ParamCount(config: Qwen3Config): number {
  let n = 0;
  for (const s of qwen3ParamSpecs(config)) n += s.shape.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * The seed of one parameter's generator: a 32-bit FNV-1a hash of its name mixed with the run
 * seed. Seeding by name (not by position in a loop) keeps every tensor's values the same whatever
 * order the specs are visited in, and whether or not other parameters (biases, lm_head) exist.
 */
export function paramSeed(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  // Seed's low and high 32 bits go in separately so large seeds stay distinct (Rng takes up to 2^53).
  const lo = (seed >>> 0) ^ h;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  return (hi * 4294967296 + lo) % Number.MAX_SAFE_INTEGER;
}

/**
 * Host values of one freshly initialized parameter, drawn in float64 and stored in the compute
 * dtype (so f32 and f64 models from one seed differ only by rounding).
 */
export function initParamValues(spec: ParamSpec, seed: number, std: number, dtype: "f32" | "f64" = "f64"): Float32Array | Float64Array {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  const out = dtype === "f32" ? new Float32Array(n) : new Float64Array(n);
  if (spec.init === "ones") out.fill(1);
  else if (spec.init === "normal") {
    const rng = new Rng(paramSeed(seed, spec.name));
    for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  }
  return out;
}

export interface InitOptions {
  seed: number;
  /** Where the parameters live (required: there is no default backend). */
  backend: Backend;
  /** "bf16": matrices in bf16 (rounded from the f32 draws), vectors in f32 (see paramDtype). */
  dtype?: "f32" | "f64" | "bf16";
  /** Std of the normal init; default config.initializerRange (0.02). */
  std?: number;
  /** Parameters are autograd leaves (default true). */
  requiresGrad?: boolean;
}

/**
 * Fresh parameters for `config`, deterministic per seed: normal(0, std) for matrices (embeddings
 * and lm_head included), ones for norm weights, zeros for biases. About 45 ns per normal draw:
 * a 0.6B model takes ~30 s, which is why tests use tiny configs.
 */
export function initQwen3Params(config: Qwen3Config, opts: InitOptions): Map<string, Tensor> {
  const std = opts.std ?? config.initializerRange;
  const dtype = opts.dtype ?? "f32";
  const backend = opts.backend;
  const params = new Map<string, Tensor>();
  for (const spec of qwen3ParamSpecs(config)) {
    const values = initParamValues(spec, opts.seed, std, dtype === "bf16" ? "f32" : dtype);
    // One bulk write into a fresh buffer (fromArray would copy the array once more).
    const held = paramDtype(spec, dtype);
    const buf = backend.alloc(held, values.length);
    backend.write(buf, held === "bf16" ? toBf16Bits(values) : values);
    params.set(spec.name, new Tensor(backend, buf, spec.shape, { requiresGrad: opts.requiresGrad ?? true }));
  }
  return params;
}
