// nn.cu: embedding (+ backward), RMSNorm (+ backward), RoPE at explicit positions, the softmax
// family and the log-prob gather (+ backward).
//
// Mapping: row kernels (rmsnorm, rmsnorm_backward_dx, softmax*, log_softmax*, logprob_gather*)
// run one 256-thread block per row (grid = rows) with block reductions in double (common.cuh);
// embedding kernels run one 256-thread block per id (grid = n) striding over the row;
// rmsnorm_backward_dw_partial runs 256-thread blocks over (32-column tile, chunk of rows), each
// warp a row of 32 consecutive columns, into double partials [chunks, dim] that
// rmsnorm_backward_dw_sum (one thread per column) adds up; rope runs one thread per (token,
// head, pair j < dim/2).
// Layouts (row-major): x, out, dy, dx [rows, cols or dim]; table [V, dim]; ids, targets,
// positions [n or rows] i32; rstd, lse, logp [rows]; rope's x [tokens, heads, dim].
// Bad ids and targets are not read: they are recorded in `err` (report_error) and the host
// throws at its next synchronizing call.
#include "common.cuh"

/** out[i, :] = table[ids[i], :]; an id outside [0, V) leaves the row unwritten and is reported. */
KERNEL(embedding)(const T* table, const int* ids, T* out, i64 dim, i64 V, int* err) {
  const i64 i = blockIdx.x;
  const int id = ids[i];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report_error(err, 1, i, id);
    return;
  }
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) out[i * dim + j] = table[(i64)id * dim + j];
}

/** dTable[ids[i], :] += dOut[i, :] with atomics (repeated ids sum; the order is not fixed). */
KERNEL(embedding_backward)(const T* dout, const int* ids, T* dtable, i64 dim, i64 V, int* err) {
  const i64 i = blockIdx.x;
  const int id = ids[i];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report_error(err, 2, i, id);
    return;
  }
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(&dtable[(i64)id * dim + j], dout[i * dim + j]);
}

/** out = x rstd w, rstd = 1 / sqrt(mean(x^2) + eps) per row. */
KERNEL(rmsnorm)(const T* x, const T* w, T* out, T* rstd, i64 dim, double eps) {
  __shared__ ACC sh[32];
  const T* xr = x + (i64)blockIdx.x * dim;
  ACC ss = 0;
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) ss += (ACC)xr[j] * (ACC)xr[j];
  ss = block_sum(ss, sh);
  const ACC rs = 1.0 / sqrt(ss / (ACC)dim + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = (T)rs;
  T* orow = out + (i64)blockIdx.x * dim;
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) orow[j] = (T)((ACC)xr[j] * rs * (ACC)w[j]);
}

/** dx = rs w dy - x rs^3 (sum_j dy w x) / dim, per row. */
KERNEL(rmsnorm_backward_dx)(const T* x, const T* w, const T* rstd, const T* dy, T* dx, i64 dim) {
  __shared__ ACC sh[32];
  const i64 o = (i64)blockIdx.x * dim;
  const ACC rs = rstd[blockIdx.x];
  ACC dot = 0;
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) dot += (ACC)dy[o + j] * (ACC)w[j] * (ACC)x[o + j];
  dot = block_sum(dot, sh);
  const ACC c = rs * rs * rs * dot / (ACC)dim;
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) dx[o + j] = (T)(rs * (ACC)w[j] * (ACC)dy[o + j] - (ACC)x[o + j] * c);
}

/**
 * dw[j] = sum_r dy[r, j] x[r, j] rstd[r], stage 1 of 2: block (blockIdx.x, blockIdx.y) sums rows
 * [y * rowsPerChunk, (y + 1) * rowsPerChunk) for columns [32 x, 32 x + 32) into
 * part[y, j] (double). Each warp reads 32 consecutive columns of one row (coalesced); the 8 warps
 * take every 8th row and are summed in shared memory in a fixed order. A column-per-thread loop
 * over all rows (the first version) ran on dim / 256 blocks only: for the q/k norms (dim 128,
 * 71,680 rows) one block on one SM, ~25 ms per call.
 */
KERNEL(rmsnorm_backward_dw_partial)(const T* x, const T* rstd, const T* dy, ACC* part, i64 rows, i64 dim, i64 rowsPerChunk) {
  __shared__ ACC sh[8][33];
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const i64 j = (i64)blockIdx.x * 32 + lane;
  const i64 r0 = (i64)blockIdx.y * rowsPerChunk;
  const i64 r1 = r0 + rowsPerChunk < rows ? r0 + rowsPerChunk : rows;
  ACC s = 0;
  if (j < dim) {
    for (i64 r = r0 + w; r < r1; r += 8) s += (ACC)dy[r * dim + j] * (ACC)x[r * dim + j] * (ACC)rstd[r];
  }
  sh[w][lane] = s;
  __syncthreads();
  if (w == 0 && j < dim) {
    ACC t = 0;
    for (int k = 0; k < 8; k++) t += sh[k][lane];
    part[(i64)blockIdx.y * dim + j] = t;
  }
}

/** Stage 2: dw[j] = sum over chunks c of part[c, j], in chunk order (overwrites; deterministic). */
KERNEL(rmsnorm_backward_dw_sum)(const ACC* part, T* dw, i64 chunks, i64 dim) {
  const i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  ACC s = 0;
  for (i64 c = 0; c < chunks; c++) s += part[c * dim + j];
  dw[j] = (T)s;
}

/**
 * Rotate-half RoPE: for pair (j, j + dim/2) of head h of token t, angle = pos[t] / denom[j] with
 * denom[j] = theta^(2j/dim) computed on the host (sign -1 for the inverse). Angles and sines are
 * double: positions reach 10^5 and a float angle would be off by ~10^-2 rad there; dividing by a
 * host-made table gives the angle bit for bit as the float64 references compute it.
 */
KERNEL(rope)(const T* x, const int* pos, T* out, i64 tokens, i64 heads, i64 dim, const double* denom, double sign) {
  const i64 half = dim / 2;
  const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= tokens * heads * half) return;
  const i64 j = i % half, th = i / half, t = th / heads;
  double s, c;
  sincos((double)pos[t] / denom[j], &s, &c);
  s *= sign;
  const i64 o = th * dim;
  const double x1 = x[o + j], x2 = x[o + half + j];
  out[o + j] = (T)(x1 * c - x2 * s);
  out[o + half + j] = (T)(x2 * c + x1 * s);
}

/** Row max and log-sum-exp of one row, block-wide (every thread gets both). */
__device__ __forceinline__ void row_lse(const T* row, i64 cols, ACC* sh, T* maxOut, ACC* lseOut) {
  T mx = -t_inf<T>();
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) mx = t_max(mx, row[j]);
  __shared__ T shm[32];
  mx = block_max(mx, shm);
  ACC s = 0;
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += exp((ACC)row[j] - (ACC)mx);
  s = block_sum(s, sh);
  *maxOut = mx;
  *lseOut = (ACC)mx + log(s);
}

/** out = softmax(x) row by row, max-subtracted. */
KERNEL(softmax)(const T* x, T* out, i64 cols) {
  __shared__ ACC sh[32];
  const i64 o = (i64)blockIdx.x * cols;
  T mx;
  ACC lse;
  row_lse(x + o, cols, sh, &mx, &lse);
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) out[o + j] = (T)exp((ACC)x[o + j] - lse);
}

/** dx = y (dy - sum_j dy y). */
KERNEL(softmax_backward)(const T* y, const T* dy, T* dx, i64 cols) {
  __shared__ ACC sh[32];
  const i64 o = (i64)blockIdx.x * cols;
  ACC dot = 0;
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) dot += (ACC)dy[o + j] * (ACC)y[o + j];
  dot = block_sum(dot, sh);
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) dx[o + j] = (T)((ACC)y[o + j] * ((ACC)dy[o + j] - dot));
}

/** out = x - logsumexp(x) row by row. */
KERNEL(log_softmax)(const T* x, T* out, i64 cols) {
  __shared__ ACC sh[32];
  const i64 o = (i64)blockIdx.x * cols;
  T mx;
  ACC lse;
  row_lse(x + o, cols, sh, &mx, &lse);
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) out[o + j] = (T)((ACC)x[o + j] - lse);
}

/** dx = dy - exp(y) sum_j dy. */
KERNEL(log_softmax_backward)(const T* y, const T* dy, T* dx, i64 cols) {
  __shared__ ACC sh[32];
  const i64 o = (i64)blockIdx.x * cols;
  ACC s = 0;
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += (ACC)dy[o + j];
  s = block_sum(s, sh);
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) dx[o + j] = (T)((ACC)dy[o + j] - exp((ACC)y[o + j]) * s);
}

/** logp[r] = logits[r, t] - lse[r] (0 for the ignore index); writes lse. Bad targets are reported. */
KERNEL(logprob_gather)(const T* logits, const int* targets, T* logp, T* lse, i64 cols, int ignore, int* err) {
  __shared__ ACC sh[32];
  const i64 r = blockIdx.x, o = r * cols;
  const int t = targets[r];
  const bool ok = t == ignore || (t >= 0 && t < cols);
  T mx;
  ACC l;
  row_lse(logits + o, cols, sh, &mx, &l);
  if (threadIdx.x == 0) {
    lse[r] = (T)l;
    if (!ok) report_error(err, 3, r, t);
    logp[r] = (t == ignore || !ok) ? T(0) : (T)((ACC)logits[o + t] - l);
  }
}

/** dLogits[r, :] = dLogp[r] (onehot(t) - exp(logits - lse)); zero rows for the ignore index. */
KERNEL(logprob_gather_backward)(const T* logits, const int* targets, const T* lse, const T* dlogp, T* dlogits, i64 cols, int ignore, int* err) {
  const i64 r = blockIdx.x, o = r * cols;
  const int t = targets[r];
  const bool ok = t == ignore || (t >= 0 && t < cols);
  if (!ok && threadIdx.x == 0) report_error(err, 4, r, t);
  if (t == ignore || !ok) {
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) dlogits[o + j] = T(0);
    return;
  }
  const ACC g = dlogp[r], l = lse[r];
  for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
    const ACC p = exp((ACC)logits[o + j] - l);
    dlogits[o + j] = (T)((j == t ? g : 0.0) - g * p);
  }
}

/**
 * Paged KV write of a decode step (not a Backend primitive: the CUDA decode graphs use it):
 * pages[slots[r], :] = src[r, :] for each of `rows` rows of rowSize elements; a negative slot
 * (a padding row of a batch bucket) writes nothing. One thread per element, grid-stride. The
 * slots live on the device so a captured graph can be replayed with new ones.
 */
KERNEL(scatter_rows)(const T* src, const int* slots, T* pages, i64 rows, i64 rowSize) {
  const i64 n = rows * rowSize;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
    const i64 r = i / rowSize;
    const int s = slots[r];
    if (s >= 0) pages[(i64)s * rowSize + (i - r * rowSize)] = src[i];
  }
}
