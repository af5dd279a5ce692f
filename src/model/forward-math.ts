/**
 * The arithmetic choices of one Qwen3 forward, as a small set of ops the layer loop in qwen3.ts
 * calls (norm, linear, RoPE, attention, MLP, residual): the plain set (fused kernels, rounding
 * only where the model's dtypes say) and the `activations: "bf16"` set, which rounds to bf16 at
 * every point where transformers' Qwen3 computing in bf16 rounds, so npr's logits can be held to
 * a bf16 Hugging Face reference and not only to an fp32 one.
 * Knows tensor ops and the config; not parameter names, files, KV caches or scheduling.
 * Mirrors https://github.com/huggingface/transformers/blob/v4.51.0/src/transformers/models/qwen3/modeling_qwen3.py
 */
import {
  Tensor,
  add,
  attention,
  cast,
  embedding,
  linear,
  matmul,
  mul,
  mulScalar,
  rmsnorm,
  rope,
  silu,
  softmax,
  swiglu,
} from "../tensor/index.ts";
import type { Backend } from "../tensor/index.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import type { Layout } from "../util/index.ts";
import type { Qwen3Config } from "./config.ts";

/**
 * What a forward does at each step of a layer. Positions and the layout are bound when the set
 * is made (one set per forward call). Shapes: x [T, C] or [T, heads, D]; q [T, H, D]; k, v
 * [S, Hkv, D] with S = layout.numKeys.
 */
export interface ForwardMath {
  /** [T] i32 ids -> the [T, C] residual stream. */
  embed(table: Tensor, ids: Tensor): Tensor;
  /** RMSNorm of x over its last axis, scaled by w. */
  norm(x: Tensor, w: Tensor): Tensor;
  /** An activation as the GEMMs read it (cast once when several GEMMs read it). */
  gemmIn(x: Tensor): Tensor;
  /** x @ w^T (+ b); w already in the dtype the GEMMs read. */
  linear(x: Tensor, w: Tensor, b: Tensor | null): Tensor;
  /** Rotate-half RoPE of x [T, heads, D] at the bound positions. */
  rope(x: Tensor): Tensor;
  /** Grouped-query attention under the bound layout -> [T, H, D]. */
  attention(q: Tensor, k: Tensor, v: Tensor): Tensor;
  /** silu(gate) * up. */
  mlp(gate: Tensor, up: Tensor): Tensor;
  /** The residual add h + y. */
  residual(h: Tensor, y: Tensor): Tensor;
}

/**
 * The default: fused kernels, f32 (or f64) activations; with `gemmBf16` GEMM inputs are cast to
 * bf16 (mixed precision) and attention may take bf16 inner products (tensor cores on CUDA).
 */
export function plainMath(config: Qwen3Config, layout: Layout, positions: Tensor, gemmBf16: boolean): ForwardMath {
  const eps = config.rmsNormEps;
  const scale = 1 / Math.sqrt(config.headDim);
  return {
    embed: (table, ids) => embedding(table, ids),
    norm: (x, w) => rmsnorm(x, w, eps),
    gemmIn: (x) => (gemmBf16 ? cast(x, "bf16") : x),
    linear: (x, w, b) => linear(x, w, b),
    rope: (x) => rope(x, positions, config.ropeTheta),
    // HF: scaling = head_dim ** -0.5; query head h reads kv head floor(h / (H / Hkv)) (repeat_kv).
    attention: (q, k, v) => attention(q, k, v, layout, scale, { bf16Inner: gemmBf16 }),
    mlp: (gate, up) => swiglu(gate, up),
    residual: (h, y) => add(h, y),
  };
}

/** x rounded to bf16 (nearest even), kept as an f32 tensor: cast there and back, both exact but the first. */
export function roundBf16(x: Tensor): Tensor {
  return cast(cast(x, "bf16"), "f32");
}

/** A host value rounded to bf16 through f32, as torch's `.to(bfloat16)` of an fp32 result does. */
function bf16Host(x: number): number {
  return bf16BitsToF32(f32ToBf16Bits(Math.fround(x)));
}

/**
 * cos and sin [T, 1, D] as Qwen3RotaryEmbedding makes them: inv_freq = 1 / theta^(2j/D) in fp32
 * (the buffer stays fp32 in a bf16 model loaded with from_pretrained), angles pos * inv_freq in
 * fp32, cos/sin of cat(freqs, freqs) in fp32, then rounded to the activation dtype (bf16).
 */
export function hfRopeTables(positions: Int32Array, headDim: number, theta: number, backend: Backend): { cos: Tensor; sin: Tensor } {
  const T = positions.length;
  const D = headDim;
  const half = D / 2;
  const f = Math.fround;
  const invFreq = new Float64Array(half);
  for (let j = 0; j < half; j++) invFreq[j] = f(1 / f(Math.pow(theta, f(f(2 * j) / D))));
  const cos = new Float32Array(T * D);
  const sin = new Float32Array(T * D);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j < half; j++) {
      const ang = f(positions[t]! * invFreq[j]!);
      const c = bf16Host(Math.cos(ang));
      const s = bf16Host(Math.sin(ang));
      cos[t * D + j] = cos[t * D + j + half] = c;
      sin[t * D + j] = sin[t * D + j + half] = s;
    }
  }
  return {
    cos: Tensor.fromArray(cos, [T, 1, D], { backend, dtype: "f32" }),
    sin: Tensor.fromArray(sin, [T, 1, D], { backend, dtype: "f32" }),
  };
}

/**
 * R [D, D] with x @ R = rotate_half(x) = cat(-x[D/2:], x[:D/2]). Exact as a GEMM: each output is
 * one input times +-1 plus zeros. (npr has no slice/concat op; the fused rope kernel rounds nothing
 * between its products, which is the point of this mode.)
 */
function rotateHalfMatrix(D: number, backend: Backend): Tensor {
  const half = D / 2;
  const r = new Float32Array(D * D);
  for (let j = 0; j < half; j++) {
    r[(j + half) * D + j] = -1; // out[j] = -x[j + D/2]
    r[j * D + j + half] = 1; // out[j + D/2] = x[j]
  }
  return Tensor.fromArray(r, [D, D], { backend, dtype: "f32" });
}

/**
 * Additive mask [T, S] of a layout: 0 where the query sees the key, -Infinity elsewhere (HF adds
 * the dtype's minimum, which softmax turns into the same exact zeros).
 */
export function layoutMask(layout: Layout, backend: Backend): Tensor {
  const T = layout.numTokens;
  const S = layout.numKeys;
  const m = new Float32Array(T * S).fill(-Infinity);
  for (let i = 0; i < T; i++) {
    for (let s = layout.segOffsets[i]!; s < layout.segOffsets[i + 1]!; s++) {
      m.fill(0, i * S + layout.segStarts[s]!, i * S + layout.segEnds[s]!);
    }
  }
  return Tensor.fromArray(m, [T, S], { backend, dtype: "f32" });
}

/**
 * transformers' Qwen3 in bf16, rounding for rounding. Every tensor stays f32 (KV caches, the
 * engine and autograd see the usual dtype) but holds bf16 values; each op computes in fp32 from
 * bf16 inputs, as PyTorch's bf16 kernels do, and rounds where PyTorch stores a bf16 result:
 *
 *   embedding        bf16 table rows (exact)
 *   RMSNorm          r(r(x * rsqrt(mean(x^2) + eps)) * w)               two roundings
 *   Linear           r(x @ W^T [+ b]), bf16 operands, fp32 accumulation
 *   RoPE             r(r(x * cos) + r(rotate_half(x) * sin)), cos/sin bf16 (hfRopeTables)
 *   attention        P = r(softmax_fp32(r(r(q . k) * scaling) + mask)); out = r(P . V)
 *   SwiGLU           r(r(silu(gate)) * up)
 *   residual         r(h + y)
 *
 * Attention is eager as in HF: the [Hkv, G*T, S] scores are materialized (f32 GEMMs over
 * bf16-valued operands: products are exact in f32, accumulation is fp32 like a bf16 GEMM's), since
 * the fused kernel cannot round between its steps. That costs O(H T S) memory per layer.
 */
export class HfBf16Math implements ForwardMath {
  private readonly config: Qwen3Config;
  private readonly layout: Layout;
  private readonly backend: Backend;
  private readonly cos: Tensor;
  private readonly sin: Tensor;
  private readonly rot: Tensor;
  private readonly mask: Tensor;
  /** Unit weights per norm width: the fused rmsnorm then computes x * rsqrt(mean(x^2) + eps) alone. */
  private readonly ones = new Map<number, Tensor>();

  constructor(config: Qwen3Config, layout: Layout, backend: Backend) {
    this.config = config;
    this.layout = layout;
    this.backend = backend;
    ({ cos: this.cos, sin: this.sin } = hfRopeTables(layout.positions, config.headDim, config.ropeTheta, backend));
    this.rot = rotateHalfMatrix(config.headDim, backend);
    this.mask = layoutMask(layout, backend);
  }

  embed(table: Tensor, ids: Tensor): Tensor {
    // A bf16 table gathers exactly; an f32 one (f32 masters) is what model.to(bf16) would round.
    const e = embedding(table, ids);
    return table.dtype === "bf16" ? e : roundBf16(e);
  }

  norm(x: Tensor, w: Tensor): Tensor {
    const dim = x.shape[x.ndim - 1]!;
    let one = this.ones.get(dim);
    if (!one) this.ones.set(dim, (one = Tensor.full([dim], 1, { backend: this.backend, dtype: "f32" })));
    // Qwen3RMSNorm: hidden_states.to(input_dtype) rounds the normalized row, then weight * it rounds again.
    const n = roundBf16(rmsnorm(x, one, this.config.rmsNormEps));
    return roundBf16(mul(n, roundBf16(w)));
  }

  gemmIn(x: Tensor): Tensor {
    return cast(x, "bf16"); // exact: x already holds bf16 values
  }

  linear(x: Tensor, w: Tensor, b: Tensor | null): Tensor {
    invariant(w.dtype === "bf16", () => `HfBf16Math.linear: weight must be bf16, got ${w.dtype}`);
    // fp32 accumulator (+ bias, added in fp32 as cuBLAS's epilogue does) rounded once to bf16.
    const y = linear(x, w);
    return roundBf16(b ? add(y, roundBf16(b)) : y);
  }

  rope(x: Tensor): Tensor {
    const [T, heads, D] = x.shape as [number, number, number];
    const rotated = matmul(x.reshape([T * heads, D]), this.rot).reshape([T, heads, D]);
    return roundBf16(add(roundBf16(mul(x, this.cos)), roundBf16(mul(rotated, this.sin))));
  }

  attention(q: Tensor, k: Tensor, v: Tensor): Tensor {
    const [T, H, D] = q.shape as [number, number, number];
    const [S, Hkv] = k.shape as [number, number, number];
    const G = H / Hkv;
    invariant(
      S === this.layout.numKeys && T === this.layout.numTokens,
      () =>
        `HfBf16Math.attention: q [${q.shape}], k [${k.shape}] for a layout of ${this.layout.numTokens} tokens over ${this.layout.numKeys} keys`,
    );
    // Query head h = kvHead * G + g reads kv head kvHead (repeat_kv), so one batched GEMM per kv head.
    const qh = q
      .reshape([T, Hkv, G, D])
      .permute([1, 2, 0, 3])
      .reshape([Hkv, G * T, D]);
    const kt = k.permute([1, 2, 0]); // [Hkv, D, S]
    const vh = v.permute([1, 0, 2]); // [Hkv, S, D]
    // torch: matmul(q, k^T) is a bf16 tensor, `* scaling` (a Python float, fp32 in the kernel) another.
    const scores = roundBf16(mulScalar(roundBf16(matmul(qh, kt)), Math.fround(1 / Math.sqrt(D)))); // [Hkv, G*T, S]
    const masked = add(scores.reshape([Hkv, G, T, S]), this.mask);
    // softmax(dtype=float32).to(bf16)
    const p = roundBf16(softmax(masked)).reshape([Hkv, G * T, S]);
    const out = roundBf16(matmul(p, vh)); // [Hkv, G*T, D]
    return out.reshape([Hkv, G, T, D]).permute([2, 0, 1, 3]).reshape([T, H, D]);
  }

  mlp(gate: Tensor, up: Tensor): Tensor {
    // act_fn(gate) is a bf16 tensor before the product.
    return roundBf16(mul(roundBf16(silu(gate)), up));
  }

  residual(h: Tensor, y: Tensor): Tensor {
    return roundBf16(add(h, y));
  }
}
