/**
 * Naive float64 references for the backend conformance suite (backend.case.ts): every primitive
 * written out the textbook way (dense masks from the segments, explicit loops, no tiling, no
 * fusion), independent of any kernel, plus the layouts the attention cases run on. cpu.test.ts
 * and cpu-threads.test.ts reuse the attention reference. Knows the Backend's parameter types and
 * util/layout.ts only; never a backend.
 */
import type { BinaryOp, MatmulParams, UnaryOp } from "../../src/tensor/backend/types.ts";
import { segmentLayout, type Layout } from "../../src/util/layout.ts";
import type { Rng } from "../../src/util/rng.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../src/tensor/dtype.ts";

export type FloatDType = "f32" | "f64" | "bf16";

// ---------------------------------------------------------------- elementwise, copy, gemm

export function sigmoidRef(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** f and f' of every unary op, written out independently of any kernel. */
export const UNARY_REF: Record<UnaryOp, { f: (x: number) => number; df: (x: number) => number; positive?: boolean }> = {
  neg: { f: (x) => -x, df: () => -1 },
  exp: { f: Math.exp, df: Math.exp },
  log: { f: Math.log, df: (x) => 1 / x, positive: true },
  sqrt: { f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x), positive: true },
  rsqrt: { f: (x) => 1 / Math.sqrt(x), df: (x) => -0.5 * Math.pow(x, -1.5), positive: true },
  silu: { f: (x) => x * sigmoidRef(x), df: (x) => sigmoidRef(x) + x * sigmoidRef(x) - x * sigmoidRef(x) ** 2 },
  square: { f: (x) => x * x, df: (x) => 2 * x },
  sigmoid: { f: sigmoidRef, df: (x) => Math.exp(-x) / (1 + Math.exp(-x)) ** 2 },
};

/**
 * Every binary op. min and max follow the contract's tie rule (types.ts): a tie returns a, so
 * signed zeros tell which operand came back; a NaN in either operand gives NaN. le is 1 or 0.
 */
export const BINARY_REF: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  min: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : a === b ? a : a < b ? a : b),
  max: (a, b) => (Number.isNaN(a) || Number.isNaN(b) ? NaN : a === b ? a : a > b ? a : b),
  le: (a, b) => (a <= b ? 1 : 0),
};

/** The select of `where`: a where the mask is nonzero (NaN included), else b. */
export function whereRef(mask: number, a: number, b: number): number {
  return mask !== 0 ? a : b;
}

/** Calls fn(flatIndex, multiIndex) over a shape in row-major order. */
export function forEachIndex(shape: readonly number[], fn: (flat: number, idx: number[]) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(shape.length).fill(0);
  for (let flat = 0; flat < n; flat++) {
    fn(flat, idx);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}

export function stridedIndex(idx: readonly number[], strides: readonly number[], offset = 0): number {
  let o = offset;
  for (let d = 0; d < idx.length; d++) o += idx[d] * strides[d];
  return o;
}

/** Elements needed to hold a strided view. */
export function extent(shape: readonly number[], strides: readonly number[], offset = 0): number {
  return shape.reduce((acc, d, i) => acc + (d - 1) * strides[i], offset) + 1;
}

export function matmulRef(a: Float64Array, b: Float64Array, c: Float64Array, p: MatmulParams): Float64Array {
  const out = c.slice();
  const { m, n, k, alpha = 1, beta = 0 } = p;
  for (let bi = 0; bi < p.batch; bi++) {
    const oa = (p.offsetA ?? 0) + bi * p.strideA;
    const ob = (p.offsetB ?? 0) + bi * p.strideB;
    const oc = (p.offsetC ?? 0) + bi * p.strideC;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let l = 0; l < k; l++) {
          const av = p.transA ? a[oa + l * m + i] : a[oa + i * k + l];
          const bv = p.transB ? b[ob + j * k + l] : b[ob + l * n + j];
          s += av * bv;
        }
        out[oc + i * n + j] = alpha * s + (beta === 0 ? 0 : beta * c[oc + i * n + j]);
      }
    }
  }
  return out;
}

/** Dense [T][S] visibility built by walking the segments one key at a time. */
export function denseMask(layout: Layout): boolean[][] {
  const mask: boolean[][] = [];
  for (let t = 0; t < layout.numTokens; t++) {
    const row = new Array<boolean>(layout.numKeys).fill(false);
    for (let sg = layout.segOffsets[t]; sg < layout.segOffsets[t + 1]; sg++) {
      for (let s = layout.segStarts[sg]; s < layout.segEnds[sg]; s++) row[s] = true;
    }
    mask.push(row);
  }
  return mask;
}

export interface AttnCase {
  T: number;
  S: number;
  H: number;
  Hkv: number;
  D: number;
  scale: number;
}

/** Dense softmax attention, then the textbook backward (dS = P (dP - rowsum(P dP))). */
export function attentionRef(
  c: AttnCase,
  mask: boolean[][],
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  dO: Float64Array,
): { out: Float64Array; lse: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { T, S, H, Hkv, D, scale } = c;
  const out = new Float64Array(T * H * D);
  const lse = new Float64Array(T * H);
  const dq = new Float64Array(T * H * D);
  const dk = new Float64Array(S * Hkv * D);
  const dv = new Float64Array(S * Hkv * D);
  const qi = (t: number, h: number, d: number) => (t * H + h) * D + d;
  const ki = (s: number, g: number, d: number) => (s * Hkv + g) * D + d;
  for (let h = 0; h < H; h++) {
    const g = Math.floor((h * Hkv) / H);
    for (let t = 0; t < T; t++) {
      const sc = new Float64Array(S).fill(-Infinity);
      for (let s = 0; s < S; s++) {
        if (!mask[t][s]) continue;
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qi(t, h, d)] * k[ki(s, g, d)];
        sc[s] = scale * dot;
      }
      const max = Math.max(...sc);
      let z = 0;
      for (let s = 0; s < S; s++) z += mask[t][s] ? Math.exp(sc[s] - max) : 0;
      lse[t * H + h] = max + Math.log(z);
      const P = Float64Array.from(sc, (x, s) => (mask[t][s] ? Math.exp(x - max) / z : 0));
      const dP = new Float64Array(S);
      for (let s = 0; s < S; s++) {
        for (let d = 0; d < D; d++) {
          out[qi(t, h, d)] += P[s] * v[ki(s, g, d)];
          dP[s] += dO[qi(t, h, d)] * v[ki(s, g, d)];
          dv[ki(s, g, d)] += P[s] * dO[qi(t, h, d)];
        }
      }
      let pdp = 0;
      for (let s = 0; s < S; s++) pdp += P[s] * dP[s];
      for (let s = 0; s < S; s++) {
        const dS = P[s] * (dP[s] - pdp);
        for (let d = 0; d < D; d++) {
          dq[qi(t, h, d)] += scale * dS * k[ki(s, g, d)];
          dk[ki(s, g, d)] += scale * dS * q[qi(t, h, d)];
        }
      }
    }
  }
  return { out, lse, dq, dk, dv };
}

/** x rounded to a float dtype, on the host (tensor/dtype.ts rounds f64 -> bf16 once). */
export function roundTo(dtype: FloatDType, x: number): number {
  return dtype === "f32" ? Math.fround(x) : dtype === "bf16" ? bf16BitsToF32(f32ToBf16Bits(x)) : x;
}

// ---------------------------------------------------------------- nn

export function rmsRef(
  x: Float64Array,
  w: Float64Array,
  p: { rows: number; dim: number; eps: number },
): { out: Float64Array; rstd: Float64Array } {
  const { rows, dim, eps } = p;
  const out = new Float64Array(rows * dim);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ms = 0;
    for (let j = 0; j < dim; j++) ms += x[r * dim + j] ** 2 / dim;
    rstd[r] = 1 / Math.sqrt(ms + eps);
    for (let j = 0; j < dim; j++) out[r * dim + j] = x[r * dim + j] * rstd[r] * w[j];
  }
  return { out, rstd };
}

export function ropeRef(x: Float64Array, pos: number[], heads: number, dim: number, theta: number, sign: number): Float64Array {
  const out = new Float64Array(x.length);
  const half = dim / 2;
  pos.forEach((p, t) => {
    for (let hd = 0; hd < heads; hd++) {
      const o = (t * heads + hd) * dim;
      for (let j = 0; j < half; j++) {
        const angle = (sign * p) / theta ** ((2 * j) / dim);
        const [c, s] = [Math.cos(angle), Math.sin(angle)];
        out[o + j] = x[o + j] * c - x[o + j + half] * s;
        out[o + j + half] = x[o + j + half] * c + x[o + j] * s;
      }
    }
  });
  return out;
}

export function softmaxRef(x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const max = Math.max(...row);
    const z = row.reduce((acc, v) => acc + Math.exp(v - max), 0);
    for (let j = 0; j < cols; j++) y[r * cols + j] = Math.exp(row[j] - max) / z;
  }
  return y;
}

export function lseRef(x: Float64Array, rows: number, cols: number): Float64Array {
  return Float64Array.from({ length: rows }, (_, r) => {
    const row = x.subarray(r * cols, (r + 1) * cols);
    const max = Math.max(...row);
    return max + Math.log(row.reduce((acc, v) => acc + Math.exp(v - max), 0));
  });
}

// ---------------------------------------------------------------- attention layouts

/** Random NPR-like visibility: each token sees itself plus random earlier ranges. */
export function randomLayout(rng: Rng, T: number, past: number): Layout {
  const visible: Array<Array<[number, number]>> = [];
  for (let i = 0; i < T; i++) {
    const self = past + i;
    const ranges: Array<[number, number]> = [[self, self + 1]];
    const numRanges = rng.int(3);
    for (let r = 0; r < numRanges; r++) {
      const a = rng.int(self + 1);
      ranges.push([a, a + 1 + rng.int(self + 1 - a)]);
    }
    visible.push(ranges);
  }
  return segmentLayout(
    Array.from({ length: T }, (_, i) => past + i),
    visible,
    past + T,
  );
}

/**
 * An NPR-shaped layout: a 4-token prompt, two 3-token branches that each see the prompt and
 * themselves only, then a 2-token takeaway that sees everything.
 */
export function branchLayout(): Layout {
  const prompt: [number, number] = [0, 4];
  const visible: Array<Array<[number, number]>> = [];
  for (let i = 0; i < 4; i++) visible.push([[0, i + 1]]);
  for (let i = 4; i < 7; i++) visible.push([prompt, [4, i + 1]]);
  for (let i = 7; i < 10; i++) visible.push([prompt, [7, i + 1]]);
  for (let i = 10; i < 12; i++) visible.push([[0, i + 1]]);
  return segmentLayout(
    Array.from({ length: 12 }, (_, i) => i),
    visible,
  );
}
