/**
 * The oracle for `activations: "bf16"`: transformers' Qwen3 computing in bf16, written with plain
 * float64 loops and a bf16 rounding of its own (bf16 below), rounding at the points PyTorch stores
 * a bf16 result: each Linear output, both steps of each RMSNorm, RoPE's two products and their
 * sum, the attention scores before and after scaling, the softmax probabilities, the attention
 * output, SiLU, the SwiGLU product, the residual adds and the logits. Between roundings it computes
 * in float64 (dot products essentially exact), where PyTorch and npr accumulate in fp32: a
 * rounding may then land one bf16 ulp apart, so tests bound the fraction of such flips.
 * Never touches src/tensor or src/model. Same weights format as reference-qwen3.ts.
 * https://github.com/huggingface/transformers/blob/v4.51.0/src/transformers/models/qwen3/modeling_qwen3.py
 */
import type { RefConfig, RefMask, RefWeights } from "./reference-qwen3.ts";

/**
 * x rounded to the nearest bf16 (8 significant bits, f32's exponent range), ties to even, from
 * the exact double. Scaling by the power of two 2^(e-7) is exact, so only Math.round rounds.
 */
export function bf16(x: number): number {
  if (x === 0 || !Number.isFinite(x)) return x;
  const ax = Math.abs(x);
  let e = Math.floor(Math.log2(ax));
  if (2 ** e > ax)
    e--; // log2 may be off by one next to a power of two
  else if (2 ** (e + 1) <= ax) e++;
  const ulp = 2 ** (Math.max(e, -126) - 7); // below 2^-126: bf16 subnormals, fixed spacing 2^-133
  const q = x / ulp;
  const r = Math.abs(q - Math.trunc(q)) === 0.5 ? 2 * Math.round(q / 2) : Math.round(q);
  const y = r * ulp;
  return Math.abs(y) >= 2 ** 128 ? Math.sign(y) * Infinity : y;
}

/** Qwen3RMSNorm in bf16: y = bf16(x * rsqrt(mean(x^2) + eps)), out = bf16(w * y), per row. */
function rmsnorm(x: Float64Array, w: Float64Array, rows: number, dim: number, eps: number): Float64Array {
  const out = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[r * dim + j]! ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) out[r * dim + j] = bf16(w[j]! * bf16(x[r * dim + j]! * inv));
  }
  return out;
}

/** bf16(x @ W^T + b): the bias joins the accumulator before the one rounding. */
function linear(x: Float64Array, W: Float64Array, b: Float64Array | undefined, rows: number, nin: number, nout: number) {
  const y = new Float64Array(rows * nout);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < nout; o++) {
      let s = b ? b[o]! : 0;
      for (let i = 0; i < nin; i++) s += x[r * nin + i]! * W[o * nin + i]!;
      y[r * nout + o] = bf16(s);
    }
  }
  return y;
}

/**
 * HF RoPE in bf16 on x [T, heads, D] (in place): cos/sin from an fp32 inv_freq and fp32 angles,
 * rounded to bf16; x * cos and rotate_half(x) * sin rounded, then their sum.
 */
function rope(x: Float64Array, positions: ArrayLike<number>, T: number, heads: number, D: number, theta: number) {
  const f = Math.fround;
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < half; j++) {
      const invFreq = f(1 / f(Math.pow(theta, f((2 * j) / D))));
      const ang = f(positions[t]! * invFreq);
      const c = bf16(f(Math.cos(ang)));
      const s = bf16(f(Math.sin(ang)));
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * D;
        const x1 = x[base + j]!;
        const x2 = x[base + j + half]!;
        x[base + j] = bf16(bf16(x1 * c) + bf16(-x2 * s));
        x[base + j + half] = bf16(bf16(x2 * c) + bf16(x1 * s));
      }
    }
  }
}

function get(w: RefWeights, name: string): Float64Array {
  const t = w.get(name);
  if (!t) throw new Error(`reference-bf16: missing weight ${name}`);
  return t;
}

/**
 * Logits [T, V] (bf16 values) of transformers' Qwen3 run in bf16 with eager attention, for `ids`
 * at `positions` (default 0..T-1) under `mask` (default causal). The weights must already be
 * bf16 values (randomWeights with roundTo "BF16").
 */
export function referenceLogitsBf16(
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
  // self.scaling = head_dim ** -0.5, a Python float the bf16 mul kernel reads as fp32.
  const scale = Math.fround(1 / Math.sqrt(D));

  const E = get(w, "model.embed_tokens.weight");
  let h: Float64Array = new Float64Array(T * C);
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

    // eager_attention_forward: scores bf16(bf16(q.k) * scaling), softmax in float64 rounded to
    // bf16, output bf16(P . V); head hq reads kv head floor(hq / nRep) (repeat_kv).
    const att = new Float64Array(T * H * D);
    const scores = new Float64Array(T);
    const acc = new Float64Array(D);
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
          scores[j] = bf16(bf16(s) * scale);
          if (scores[j]! > mx) mx = scores[j]!;
        }
        let den = 0;
        for (let j = 0; j < T; j++) {
          scores[j] = scores[j] === -Infinity ? 0 : Math.exp(scores[j]! - mx);
          den += scores[j]!;
        }
        acc.fill(0);
        for (let j = 0; j < T; j++) {
          const pj = bf16(scores[j]! / den);
          if (pj === 0) continue;
          for (let d = 0; d < D; d++) acc[d] += pj * v[(j * Hkv + hk) * D + d]!;
        }
        for (let d = 0; d < D; d++) att[(i * H + hq) * D + d] = bf16(acc[d]!);
      }
    }
    const o = linear(att, get(w, `${p}.self_attn.o_proj.weight`), bias(`${p}.self_attn.o_proj.bias`), T, H * D, C);
    for (let x = 0; x < T * C; x++) h[x] = bf16(h[x]! + o[x]!);

    const m = rmsnorm(h, get(w, `${p}.post_attention_layernorm.weight`), T, C, eps);
    const g = linear(m, get(w, `${p}.mlp.gate_proj.weight`), undefined, T, C, I);
    const u = linear(m, get(w, `${p}.mlp.up_proj.weight`), undefined, T, C, I);
    for (let x = 0; x < T * I; x++) g[x] = bf16(bf16(g[x]! / (1 + Math.exp(-g[x]!))) * u[x]!);
    const dn = linear(g, get(w, `${p}.mlp.down_proj.weight`), undefined, T, I, C);
    for (let x = 0; x < T * C; x++) h[x] = bf16(h[x]! + dn[x]!);
  }
  h = rmsnorm(h, get(w, "model.norm.weight"), T, C, eps);
  const head = cfg.tie_word_embeddings ? E : get(w, "lm_head.weight");
  return linear(h, head, undefined, T, C, V); // bf16(logits), as lm_head's bf16 output
}
