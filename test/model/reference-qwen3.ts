/**
 * The oracle: an independent float64 Qwen3 forward written with plain loops over Float64Array,
 * following transformers' modeling_qwen3.py (RMSNorm, per-head q/k RMSNorm, rotate-half RoPE,
 * grouped-query attention via repeat_kv, SwiGLU, tied or untied lm_head). It reads config.json by
 * its raw snake_case keys and never touches src/tensor or src/model, so a shared mistake cannot
 * hide. Also writes random HF-layout checkpoints straight through the safetensors writer.
 * https://github.com/huggingface/transformers/blob/v4.51.0/src/transformers/models/qwen3/modeling_qwen3.py
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { SafetensorsCheckpoint, writeSafetensorsCheckpoint } from "../../src/format/safetensors.ts";
import { decodeToFloat, encodeFloat } from "../../src/tensor/dtype.ts";
import { Rng } from "../../src/util/rng.ts";

/** The raw config.json keys the reference reads (transformers 4.x spelling). */
export interface RefConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  rms_norm_eps: number;
  rope_theta: number;
  tie_word_embeddings: boolean;
  attention_bias: boolean;
  [key: string]: unknown;
}

export type RefWeights = Map<string, Float64Array>;

/** Which keys token i may see: key j (0-based among the T tokens). Default: causal. */
export type RefMask = (i: number, j: number) => boolean;

/** x [rows, dim] normalized per row and scaled by w [dim]. */
function rmsnorm(x: Float64Array, w: Float64Array, rows: number, dim: number, eps: number): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[r * dim + j]! ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) out[r * dim + j] = x[r * dim + j]! * inv * w[j]!;
  }
  return out;
}

/** y [rows, out] = x [rows, in] @ W^T (+ b), W stored [out, in] as torch.nn.Linear. */
function linear(x: Float64Array, W: Float64Array, b: Float64Array | undefined, rows: number, nin: number, nout: number) {
  const y = new Float64Array(rows * nout);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nout; o++) {
      let s = b ? b[o]! : 0;
      for (let i = 0; i < nin; i++) s += x[r * nin + i]! * W[o * nin + i]!;
      y[r * nout + o] = s;
    }
  }
  return y;
}

/** HF rotate-half RoPE in place on x [T, heads, D]: pairs (j, j + D/2) rotated by pos * theta^(-2j/D). */
function rope(x: Float64Array, positions: ArrayLike<number>, T: number, heads: number, D: number, theta: number) {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D;
      for (let j = 0; j < half; j++) {
        const invFreq = 1 / Math.pow(theta, (2 * j) / D);
        const ang = positions[t]! * invFreq;
        const c = Math.cos(ang);
        const s = Math.sin(ang);
        const x1 = x[base + j]!;
        const x2 = x[base + j + half]!;
        x[base + j] = x1 * c - x2 * s;
        x[base + j + half] = x2 * c + x1 * s;
      }
    }
  }
}

function get(w: RefWeights, name: string): Float64Array {
  const t = w.get(name);
  if (!t) throw new Error(`reference: missing weight ${name}`);
  return t;
}

/**
 * Logits [T, V] (row-major) for `ids` at `positions` (default 0..T-1) under `mask` (default
 * causal), all in float64.
 */
export function referenceLogits(
  cfg: RefConfig,
  w: RefWeights,
  ids: ArrayLike<number>,
  positions?: ArrayLike<number>,
  mask: RefMask = (i, j) => j <= i,
): Float64Array {
  const T = ids.length;
  const V = cfg.vocab_size;
  const C = cfg.hidden_size;
  const I = cfg.intermediate_size;
  const H = cfg.num_attention_heads;
  const Hkv = cfg.num_key_value_heads;
  const D = cfg.head_dim;
  const eps = cfg.rms_norm_eps;
  const pos = positions ?? Array.from({ length: T }, (_, i) => i);
  const nRep = H / Hkv;
  const bias = (n: string) => (cfg.attention_bias ? get(w, n) : undefined);

  const E = get(w, "model.embed_tokens.weight");
  const h = new Float64Array(T * C);
  for (let t = 0; t < T; t++) h.set(E.subarray(ids[t]! * C, ids[t]! * C + C), t * C);

  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    const a = rmsnorm(h, get(w, `${p}.input_layernorm.weight`), T, C, eps);
    const q = linear(a, get(w, `${p}.self_attn.q_proj.weight`), bias(`${p}.self_attn.q_proj.bias`), T, C, H * D);
    const k = linear(a, get(w, `${p}.self_attn.k_proj.weight`), bias(`${p}.self_attn.k_proj.bias`), T, C, Hkv * D);
    const v = linear(a, get(w, `${p}.self_attn.v_proj.weight`), bias(`${p}.self_attn.v_proj.bias`), T, C, Hkv * D);
    const qn = rmsnorm(q, get(w, `${p}.self_attn.q_norm.weight`), T * H, D, eps);
    const kn = rmsnorm(k, get(w, `${p}.self_attn.k_norm.weight`), T * Hkv, D, eps);
    rope(qn, pos, T, H, D, cfg.rope_theta);
    rope(kn, pos, T, Hkv, D, cfg.rope_theta);

    // Attention: head hq reads kv head floor(hq / nRep) (repeat_kv), softmax(q.k / sqrt(D)) over visible keys.
    const att = new Float64Array(T * H * D);
    const scale = 1 / Math.sqrt(D);
    const scores = new Float64Array(T);
    for (let i = 0; i < T; i++) {
      for (let hq = 0; hq < H; hq++) {
        const hk = Math.floor(hq / nRep);
        let mx = -Infinity;
        for (let j = 0; j < T; j++) {
          if (!mask(i, j)) {
            scores[j] = -Infinity;
            continue;
          }
          let s = 0;
          for (let d = 0; d < D; d++) s += qn[(i * H + hq) * D + d]! * kn[(j * Hkv + hk) * D + d]!;
          scores[j] = s * scale;
          if (scores[j]! > mx) mx = scores[j]!;
        }
        let den = 0;
        for (let j = 0; j < T; j++) {
          scores[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j]! - mx);
          den += scores[j]!;
        }
        for (let j = 0; j < T; j++) {
          const pj = scores[j]! / den;
          if (pj === 0) continue;
          for (let d = 0; d < D; d++) att[(i * H + hq) * D + d] += pj * v[(j * Hkv + hk) * D + d]!;
        }
      }
    }
    const o = linear(att, get(w, `${p}.self_attn.o_proj.weight`), bias(`${p}.self_attn.o_proj.bias`), T, H * D, C);
    for (let x = 0; x < T * C; x++) h[x] += o[x]!;

    const m = rmsnorm(h, get(w, `${p}.post_attention_layernorm.weight`), T, C, eps);
    const g = linear(m, get(w, `${p}.mlp.gate_proj.weight`), undefined, T, C, I);
    const u = linear(m, get(w, `${p}.mlp.up_proj.weight`), undefined, T, C, I);
    for (let x = 0; x < T * I; x++) g[x] = (g[x]! / (1 + Math.exp(-g[x]!))) * u[x]!;
    const dn = linear(g, get(w, `${p}.mlp.down_proj.weight`), undefined, T, I, C);
    for (let x = 0; x < T * C; x++) h[x] += dn[x]!;
  }
  const hf = rmsnorm(h, get(w, "model.norm.weight"), T, C, eps);
  const head = cfg.tie_word_embeddings ? E : get(w, "lm_head.weight");
  return linear(hf, head, undefined, T, C, V);
}

/** Reads config.json and every tensor of a checkpoint folder as float64. */
export function readReferenceCheckpoint(dir: string): { cfg: RefConfig; weights: RefWeights } {
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8")) as RefConfig;
  cfg.tie_word_embeddings = cfg.tie_word_embeddings ?? false;
  cfg.attention_bias = cfg.attention_bias ?? false;
  if (cfg.rope_theta === undefined) {
    cfg.rope_theta = (cfg["rope_parameters"] as { rope_theta: number }).rope_theta;
  }
  const ck = SafetensorsCheckpoint.open(dir);
  const weights: RefWeights = new Map();
  try {
    for (const name of ck.names()) {
      const info = ck.get(name)!;
      weights.set(name, decodeToFloat(ck.readBytes(name), info.dtype, "f64") as Float64Array);
    }
  } finally {
    ck.close();
  }
  return { cfg, weights };
}

/** The HF parameter list of a raw config, written out independently of src/model/weights.ts. */
export function referenceParamShapes(cfg: RefConfig): Array<[string, number[]]> {
  const { vocab_size: V, hidden_size: C, intermediate_size: I, head_dim: D } = cfg;
  const H = cfg.num_attention_heads;
  const Hkv = cfg.num_key_value_heads;
  const out: Array<[string, number[]]> = [["model.embed_tokens.weight", [V, C]]];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    out.push([`${p}.self_attn.q_proj.weight`, [H * D, C]], [`${p}.self_attn.k_proj.weight`, [Hkv * D, C]]);
    out.push([`${p}.self_attn.v_proj.weight`, [Hkv * D, C]], [`${p}.self_attn.o_proj.weight`, [C, H * D]]);
    if (cfg.attention_bias) {
      out.push([`${p}.self_attn.q_proj.bias`, [H * D]], [`${p}.self_attn.k_proj.bias`, [Hkv * D]]);
      out.push([`${p}.self_attn.v_proj.bias`, [Hkv * D]], [`${p}.self_attn.o_proj.bias`, [C]]);
    }
    out.push([`${p}.self_attn.q_norm.weight`, [D]], [`${p}.self_attn.k_norm.weight`, [D]]);
    out.push([`${p}.mlp.gate_proj.weight`, [I, C]], [`${p}.mlp.up_proj.weight`, [I, C]]);
    out.push([`${p}.mlp.down_proj.weight`, [C, I]]);
    out.push([`${p}.input_layernorm.weight`, [C]], [`${p}.post_attention_layernorm.weight`, [C]]);
  }
  out.push(["model.norm.weight", [C]]);
  if (!cfg.tie_word_embeddings) out.push(["lm_head.weight", [V, C]]);
  return out;
}

/**
 * Random weights for a raw config: matrices ~ N(0, std), norm weights ~ 1 + N(0, 0.1) and biases
 * ~ N(0, 0.1) (not ones/zeros, so a swapped or skipped norm or bias shows in the logits).
 * `roundTo` rounds every value to what that storage dtype holds, so the float64 oracle sees
 * exactly the numbers the model under test loads. `extra` tensors are added as given.
 */
export function randomWeights(
  cfg: RefConfig,
  opts: { seed: number; std?: number; roundTo?: "F32" | "BF16" | "F16" | "F64"; extra?: Array<[string, number[]]> },
): { weights: RefWeights; shapes: Map<string, number[]> } {
  const rng = new Rng(opts.seed);
  const std = opts.std ?? 0.1;
  const weights: RefWeights = new Map();
  const shapes = new Map<string, number[]>();
  for (const [name, shape] of [...referenceParamShapes(cfg), ...(opts.extra ?? [])]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const vals = new Float64Array(n);
    const isNorm = name.endsWith("norm.weight");
    const isBias = name.endsWith(".bias");
    for (let i = 0; i < n; i++) {
      vals[i] = isNorm ? 1 + 0.1 * rng.normal() : isBias ? 0.1 * rng.normal() : std * rng.normal();
    }
    const rounded =
      opts.roundTo && opts.roundTo !== "F64" ? (decodeToFloat(encodeFloat(vals, opts.roundTo), opts.roundTo, "f64") as Float64Array) : vals;
    weights.set(name, rounded);
    shapes.set(name, shape);
  }
  return { weights, shapes };
}

/** Writes a random HF-layout checkpoint (config.json + model.safetensors) and returns its float64 weights. */
export function writeRandomCheckpoint(
  dir: string,
  configJson: RefConfig,
  opts: { seed: number; dtype: "F32" | "BF16" | "F16"; std?: number; extra?: Array<[string, number[]]> },
): RefWeights {
  const { weights, shapes } = randomWeights(configJson, { ...opts, roundTo: opts.dtype });
  const entries = [...weights].map(([name, vals]) => ({
    name,
    dtype: opts.dtype,
    shape: shapes.get(name)!,
    data: encodeFloat(vals, opts.dtype),
  }));
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(configJson, null, 2));
  writeSafetensorsCheckpoint(dir, entries, { metadata: { format: "pt" } });
  return weights;
}
