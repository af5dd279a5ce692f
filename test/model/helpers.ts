/**
 * Shared pieces of the model tests: small raw configs (GQA, head_dim != hidden/heads, tied and
 * untied, with and without biases), building a Qwen3Model from the oracle's float64 weights, and
 * the comparison numbers every test prints (max/mean abs difference, relative error, argmax).
 */
import { parseQwen3Config } from "../../src/model/config.ts";
import { Qwen3Model } from "../../src/model/qwen3.ts";
import { Tensor } from "../../src/tensor/index.ts";
import type { Backend } from "../../src/tensor/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Rng } from "../../src/util/rng.ts";
import type { RefConfig, RefWeights } from "./reference-qwen3.ts";

export function rawConfig(patch: Partial<RefConfig> = {}): RefConfig {
  return {
    architectures: ["Qwen3ForCausalLM"],
    model_type: "qwen3",
    vocab_size: 48,
    hidden_size: 32,
    intermediate_size: 40,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 12, // != hidden_size / num_attention_heads = 8
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
    attention_bias: false,
    torch_dtype: "float32",
    ...patch,
  };
}

/** The CPU backend the model tests run on (there is no default backend: every tensor names its own). */
export const cpu: Backend = new CpuBackend();

/** The configs the parity tests sweep: name -> raw config.json. */
export const PARITY_CONFIGS: Record<string, RefConfig> = {
  "gqa H4/Hkv2 D12 untied": rawConfig(),
  "gqa H4/Hkv1 D8 tied+bias": rawConfig({
    hidden_size: 24,
    num_key_value_heads: 1,
    head_dim: 8,
    tie_word_embeddings: true,
    attention_bias: true,
  }),
  "mha H2/Hkv2 D16 untied+bias 3 layers": rawConfig({
    num_attention_heads: 2,
    num_key_value_heads: 2,
    head_dim: 16,
    num_hidden_layers: 3,
    attention_bias: true,
    rope_theta: 1e6,
    rms_norm_eps: 1e-5,
  }),
};

/** A model whose parameters are exactly `weights` (in the compute dtype). */
export function modelFromWeights(
  cfg: RefConfig,
  weights: RefWeights,
  opts: { dtype: "f32" | "f64"; backend: Backend; requiresGrad?: boolean },
): Qwen3Model {
  const { config } = parseQwen3Config(cfg);
  const params = new Map<string, Tensor>();
  const skip = config.tieWordEmbeddings ? "lm_head.weight" : null;
  for (const [name, vals] of weights) {
    if (name === skip) continue;
    params.set(
      name,
      Tensor.fromArray(vals, shapeOf(cfg, name), {
        dtype: opts.dtype,
        backend: opts.backend,
        requiresGrad: opts.requiresGrad ?? false,
      }),
    );
  }
  return new Qwen3Model(config, params);
}

function shapeOf(cfg: RefConfig, name: string): number[] {
  const { vocab_size: V, hidden_size: C, intermediate_size: I, head_dim: D } = cfg;
  const H = cfg.num_attention_heads;
  const Hkv = cfg.num_key_value_heads;
  const leaf = name.replace(/^model\.layers\.\d+\./, "");
  const table: Record<string, number[]> = {
    "model.embed_tokens.weight": [V, C],
    "lm_head.weight": [V, C],
    "model.norm.weight": [C],
    "self_attn.q_proj.weight": [H * D, C],
    "self_attn.k_proj.weight": [Hkv * D, C],
    "self_attn.v_proj.weight": [Hkv * D, C],
    "self_attn.o_proj.weight": [C, H * D],
    "self_attn.q_proj.bias": [H * D],
    "self_attn.k_proj.bias": [Hkv * D],
    "self_attn.v_proj.bias": [Hkv * D],
    "self_attn.o_proj.bias": [C],
    "self_attn.q_norm.weight": [D],
    "self_attn.k_norm.weight": [D],
    "mlp.gate_proj.weight": [I, C],
    "mlp.up_proj.weight": [I, C],
    "mlp.down_proj.weight": [C, I],
    "input_layernorm.weight": [C],
    "post_attention_layernorm.weight": [C],
  };
  const s = table[leaf];
  if (!s) throw new Error(`helpers: no shape for ${name}`);
  return s;
}

export interface Diff {
  maxAbs: number;
  meanAbs: number;
  /** max|a - b| / max|b|. */
  rel: number;
}

export function diff(a: ArrayLike<number>, b: ArrayLike<number>): Diff {
  if (a.length !== b.length) throw new Error(`diff: lengths ${a.length} and ${b.length}`);
  let maxAbs = 0;
  let sumAbs = 0;
  let maxB = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= maxAbs)) maxAbs = d; // NaN propagates as a failure
    sumAbs += d;
    maxB = Math.max(maxB, Math.abs(b[i]!));
  }
  return { maxAbs, meanAbs: sumAbs / a.length, rel: maxAbs / maxB };
}

export function fmt(d: Diff): string {
  return `max|diff| ${d.maxAbs.toExponential(3)} mean|diff| ${d.meanAbs.toExponential(3)} rel ${d.rel.toExponential(3)}`;
}

/** Index of the largest value in each row of a [rows, cols] array. */
export function argmaxRows(x: ArrayLike<number>, cols: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / cols; r++) {
    let best = 0;
    for (let j = 1; j < cols; j++) if (x[r * cols + j]! > x[r * cols + best]!) best = j;
    out.push(best);
  }
  return out;
}

/** Deterministic token ids in [0, V). */
export function tokens(n: number, V: number, seed: number): Int32Array {
  const rng = new Rng(seed);
  return Int32Array.from({ length: n }, () => rng.int(V));
}
