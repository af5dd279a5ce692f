/**
 * CPU kernels for the neural-network primitives except attention: embedding, RMSNorm, rotary
 * embedding, softmax and log-softmax, the log-probability gather used by every loss, and AdamW,
 * each with its backward where the contract has one.
 *
 * Plain functions over typed arrays; sizes and dtypes were checked by CpuBackend (index.ts). The
 * only checks here are on values no size check can see (ids and targets), because a bad id would
 * otherwise read a neighbour's row silently. Row sums accumulate in JS doubles (f64) whatever the
 * buffer dtype, and each result is rounded once when stored.
 */
import { invariant } from "../../../util/index.ts";
import type { FloatArray } from "../types.ts";
import { expF } from "./exp.ts";

// ---------------------------------------------------------------- embedding

/** out[i, :] = table[ids[i], :]; table [V, C], ids [N], out [N, C]. */
export function embedding(table: FloatArray, ids: Int32Array, out: FloatArray, n: number, dim: number): void {
  const V = Math.floor(table.length / dim);
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    invariant(id >= 0 && id < V, () => `embedding: ids[${i}] = ${id} is outside the table's rows [0, ${V})`);
    // Same array type on both sides (checked by the backend): a memcpy of one row.
    out.set(table.subarray(id * dim, id * dim + dim) as never, i * dim);
  }
}

/** dTable[ids[i], :] += dOut[i, :]; accumulates (repeated ids sum), the caller zeroes dTable. */
export function embeddingBackward(dOut: FloatArray, ids: Int32Array, dTable: FloatArray, n: number, dim: number): void {
  const V = Math.floor(dTable.length / dim);
  for (let i = 0; i < n; i++) {
    const id = ids[i];
    invariant(id >= 0 && id < V, () => `embeddingBackward: ids[${i}] = ${id} is outside the table's rows [0, ${V})`);
    const t = id * dim;
    const o = i * dim;
    for (let j = 0; j < dim; j++) dTable[t + j] += dOut[o + j];
  }
}

// ---------------------------------------------------------------- rmsnorm

/**
 * out = x * rstd * w with rstd[r] = 1 / sqrt(mean(x[r, :]^2) + eps); x [rows, dim], w [dim];
 * rows [r0, r1) of them.
 */
export function rmsnorm(
  x: FloatArray,
  w: FloatArray,
  out: FloatArray,
  rstd: FloatArray,
  r0: number,
  r1: number,
  dim: number,
  eps: number,
): void {
  for (let r = r0; r < r1; r++) {
    const o = r * dim;
    let ss = 0; // f64 even for f32 rows
    for (let j = 0; j < dim; j++) {
      const v = x[o + j];
      ss += v * v;
    }
    const rs = 1 / Math.sqrt(ss / dim + eps);
    rstd[r] = rs;
    for (let j = 0; j < dim; j++) out[o + j] = x[o + j] * rs * w[j];
  }
}

/**
 * With y = x r w and r = (mean(x^2) + eps)^(-1/2):
 *   dw[j] = sum_r dy[j] x[j] r                                  (over rows)
 *   dx[j] = r w[j] dy[j] - x[j] r^3 / dim * sum_k dy[k] w[k] x[k]   (overwritten)
 * over rows [r0, r1), their dw sum added into dwAcc [dim] (f64). r is read from the saved rstd,
 * so forward and backward agree on it exactly. The backend sums the dw partials of fixed row
 * chunks in chunk order, so dw does not depend on how many threads ran them.
 */
export function rmsnormBackwardRows(
  x: FloatArray,
  w: FloatArray,
  rstd: FloatArray,
  dy: FloatArray,
  dx: FloatArray,
  dwAcc: Float64Array,
  r0: number,
  r1: number,
  dim: number,
): void {
  for (let r = r0; r < r1; r++) {
    const o = r * dim;
    const rs = rstd[r];
    let dot = 0;
    for (let j = 0; j < dim; j++) {
      const g = dy[o + j];
      const v = x[o + j];
      dot += g * w[j] * v;
      dwAcc[j] += g * v * rs;
    }
    const c = (rs * rs * rs * dot) / dim;
    // dx may alias dy: each element of dy is read before its own slot is written.
    for (let j = 0; j < dim; j++) dx[o + j] = rs * w[j] * dy[o + j] - x[o + j] * c;
  }
}

// ---------------------------------------------------------------- rope

/** cos and sin of pos * inv_freq[j] for positions [0, rows): [rows, half] each, f64. */
interface RopeTable {
  rows: number;
  cos: Float64Array;
  sin: Float64Array;
}

// NOTE: cos/sin depend only on (theta, dim, position), and a training step calls rope a few
// times per layer with the same positions, so the table is kept per (theta, dim) and grown to
// the largest position seen; computing it was most of rope's time. Module state, per thread.
const ropeTables = new Map<string, RopeTable>();
// Positions at or past this are computed per call instead of cached (the table would be too big).
const ROPE_TABLE_MAX = 1 << 15;

function ropeTable(theta: number, dim: number, maxPos: number): RopeTable | null {
  if (maxPos >= ROPE_TABLE_MAX) return null;
  const key = `${theta}/${dim}`;
  const half = dim / 2;
  const old = ropeTables.get(key);
  if (old && old.rows > maxPos) return old;
  const rows = Math.min(ROPE_TABLE_MAX, Math.max(maxPos + 1, 2 * (old?.rows ?? 0), 256));
  const cos = new Float64Array(rows * half);
  const sin = new Float64Array(rows * half);
  for (let j = 0; j < half; j++) {
    const f = 1 / Math.pow(theta, (2 * j) / dim);
    for (let pos = 0; pos < rows; pos++) {
      const a = pos * f;
      cos[pos * half + j] = Math.cos(a);
      sin[pos * half + j] = Math.sin(a);
    }
  }
  const t = { rows, cos, sin };
  ropeTables.set(key, t);
  return t;
}

/**
 * Rotate-half rotary embedding, Hugging Face Llama/Qwen convention. x and out are [T, heads, dim]
 * (out may be x); positions [T]; tokens [t0, t1) of them. With half = dim/2,
 * inv_freq[j] = theta^(-2j/dim) and angle = pos * inv_freq[j] (both in f64; `inverse` negates
 * the angle), for j < half:
 *   out[j]        = x[j] cos - x[j+half] sin
 *   out[j+half]   = x[j+half] cos + x[j] sin
 * The cos/sin row of a token is shared by its heads.
 */
export function rope(
  x: FloatArray,
  positions: Int32Array,
  out: FloatArray,
  t0: number,
  t1: number,
  heads: number,
  dim: number,
  theta: number,
  inverse: boolean,
): void {
  const half = dim / 2;
  let maxPos = 0;
  let minPos = 0;
  for (let t = t0; t < t1; t++) {
    maxPos = Math.max(maxPos, positions[t]);
    minPos = Math.min(minPos, positions[t]);
  }
  const table = minPos >= 0 ? ropeTable(theta, dim, maxPos) : null;
  const rowCos = new Float64Array(half);
  const rowSin = new Float64Array(half);
  const sign = inverse ? -1 : 1;
  for (let t = t0; t < t1; t++) {
    const pos = positions[t];
    let cos: Float64Array = rowCos;
    let sin: Float64Array = rowSin;
    let c0 = 0;
    if (table) {
      cos = table.cos;
      sin = table.sin;
      c0 = pos * half;
    } else {
      for (let j = 0; j < half; j++) {
        const a = pos * (1 / Math.pow(theta, (2 * j) / dim));
        rowCos[j] = Math.cos(a);
        rowSin[j] = Math.sin(a);
      }
    }
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * dim;
      for (let j = 0; j < half; j++) {
        const c = cos[c0 + j];
        const s = sign * sin[c0 + j];
        const x1 = x[o + j];
        const x2 = x[o + half + j];
        out[o + j] = x1 * c - x2 * s;
        out[o + half + j] = x2 * c + x1 * s;
      }
    }
  }
}

// ---------------------------------------------------------------- softmax family

/** Row-wise softmax of x [rows, cols], max-subtracted; out may be x. */
export function softmax(x: FloatArray, out: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let max = -Infinity;
    for (let j = 0; j < cols; j++) if (x[o + j] > max) max = x[o + j];
    let sum = 0;
    for (let j = 0; j < cols; j++) {
      const e = Math.exp(x[o + j] - max);
      out[o + j] = e;
      sum += e;
    }
    const inv = 1 / sum;
    for (let j = 0; j < cols; j++) out[o + j] *= inv;
  }
}

/** dx = y * (dy - sum_j dy[j] y[j]) row by row, for y = softmax(x). */
export function softmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let dot = 0;
    for (let j = 0; j < cols; j++) dot += dy[o + j] * y[o + j];
    for (let j = 0; j < cols; j++) dx[o + j] = y[o + j] * (dy[o + j] - dot);
  }
}

/**
 * log-sum-exp of one row, max-subtracted (the max is +-Infinity-safe for finite rows). f32 rows
 * take expF (exp.ts); the sum is f64 either way.
 */
function rowLogSumExp(x: FloatArray, o: number, cols: number): number {
  let max = -Infinity;
  for (let j = 0; j < cols; j++) if (x[o + j] > max) max = x[o + j];
  let sum = 0;
  if (x instanceof Float32Array) for (let j = 0; j < cols; j++) sum += expF(x[o + j] - max);
  else for (let j = 0; j < cols; j++) sum += Math.exp(x[o + j] - max);
  return max + Math.log(sum);
}

/** out = x - logsumexp(x) row by row; out may be x. */
export function logSoftmax(x: FloatArray, out: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    const lse = rowLogSumExp(x, o, cols);
    for (let j = 0; j < cols; j++) out[o + j] = x[o + j] - lse;
  }
}

/** dx = dy - exp(y) * sum_j dy[j] row by row, for y = logSoftmax(x). */
export function logSoftmaxBackward(y: FloatArray, dy: FloatArray, dx: FloatArray, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += dy[o + j];
    for (let j = 0; j < cols; j++) dx[o + j] = dy[o + j] - Math.exp(y[o + j]) * sum;
  }
}

/** Checks a target once per row; the message names the row so a bad batch can be traced. */
function checkTarget(op: string, targets: Int32Array, r: number, cols: number, ignoreIndex: number): number {
  const t = targets[r];
  invariant(
    t === ignoreIndex || (t >= 0 && t < cols),
    () => `${op}: targets[${r}] = ${t} is outside [0, ${cols}) and is not the ignore index ${ignoreIndex}`,
  );
  return t;
}

/** Checks every target (the threaded kernels run checked rows only, so errors come from here). */
export function checkTargets(op: string, targets: Int32Array, rows: number, cols: number, ignoreIndex: number): void {
  for (let r = 0; r < rows; r++) checkTarget(op, targets, r, cols, ignoreIndex);
}

/**
 * logp[r] = logits[r, targets[r]] - lse[r] (0 on rows whose target is ignoreIndex); lse[r] is
 * written for every row. logits [rows, cols], targets [rows]; rows [r0, r1) of them.
 */
export function logprobGather(
  logits: FloatArray,
  targets: Int32Array,
  logp: FloatArray,
  lse: FloatArray,
  r0: number,
  r1: number,
  cols: number,
  ignoreIndex: number,
): void {
  for (let r = r0; r < r1; r++) {
    const t = checkTarget("logprobGather", targets, r, cols, ignoreIndex);
    const o = r * cols;
    const l = rowLogSumExp(logits, o, cols);
    lse[r] = l;
    logp[r] = t === ignoreIndex ? 0 : logits[o + t] - l;
  }
}

/**
 * dLogits[r, :] = dLogp[r] (onehot(targets[r]) - exp(logits[r, :] - lse[r])); 0 on ignored rows.
 * Rows [r0, r1).
 */
export function logprobGatherBackward(
  logits: FloatArray,
  targets: Int32Array,
  lse: FloatArray,
  dLogp: FloatArray,
  dLogits: FloatArray,
  r0: number,
  r1: number,
  cols: number,
  ignoreIndex: number,
): void {
  const f32 = dLogits instanceof Float32Array;
  for (let r = r0; r < r1; r++) {
    const t = checkTarget("logprobGatherBackward", targets, r, cols, ignoreIndex);
    const o = r * cols;
    if (t === ignoreIndex) {
      dLogits.fill(0, o, o + cols);
      continue;
    }
    const g = dLogp[r];
    const l = lse[r];
    if (f32) for (let j = 0; j < cols; j++) dLogits[o + j] = -g * expF(logits[o + j] - l);
    else for (let j = 0; j < cols; j++) dLogits[o + j] = -g * Math.exp(logits[o + j] - l);
    dLogits[o + t] += g;
  }
}

// ---------------------------------------------------------------- optimizer

/**
 * One AdamW step in place over elements [start, end) (decoupled weight decay, bias-corrected moments):
 *   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (wd p + m_hat / (sqrt(v_hat) + eps))
 * with m_hat = m / (1 - b1^step), v_hat = v / (1 - b2^step). The decay uses p before the update,
 * as torch.optim.AdamW does (it scales p by 1 - lr wd first, which is the same thing).
 */
export function adamw(
  param: FloatArray,
  grad: FloatArray,
  m: FloatArray,
  v: FloatArray,
  start: number,
  end: number,
  lr: number,
  beta1: number,
  beta2: number,
  eps: number,
  weightDecay: number,
  step: number,
): void {
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  for (let i = start; i < end; i++) {
    const g = grad[i];
    const mi = beta1 * m[i] + (1 - beta1) * g;
    const vi = beta2 * v[i] + (1 - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const p = param[i];
    param[i] = p - lr * (weightDecay * p + mi / bc1 / (Math.sqrt(vi / bc2) + eps));
  }
}
