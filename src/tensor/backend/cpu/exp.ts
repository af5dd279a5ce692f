/**
 * A cheaper exp for kernels whose results are stored as f32: softmax and log-softmax rows,
 * attention probabilities, the SwiGLU sigmoid. Math.exp is a call V8 does not inline (7-8 ns an
 * element here, and the call spills the loop's registers); expF is straight-line arithmetic and
 * two table reads that V8 inlines into the loop (about 2.5 ns).
 *
 * Only for f32 buffers: f64 buffers keep Math.exp, so f64 stays the exact reference path.
 */

// exp(x) = 2^(k / 64) * exp(r), k = round(64 x / ln 2), |r| <= ln 2 / 128. 2^(k/64) is
// 2^(k >> 6) * 2^((k & 63) / 64), two table reads; exp(r) a degree-4 Taylor polynomial whose
// truncation error r^5 / 120 < 4e-14 relative. Against Math.exp over [-104, 104] the relative
// error is below 1e-13, six orders under half an f32 ulp (3e-8), so rounded to f32 the two agree
// except on inputs within 1e-13 of a rounding boundary.
const N = 64;
const FRACTION = new Float64Array(N); // 2^(j / 64)
for (let j = 0; j < N; j++) FRACTION[j] = Math.pow(2, j / N);
// 2^m for m in [-M_BIAS, M_BIAS): x in [-104, 104] gives m = k >> 6 in [-151, 150].
const M_BIAS = 160;
const POWER = new Float64Array(2 * M_BIAS);
for (let m = -M_BIAS; m < M_BIAS; m++) POWER[m + M_BIAS] = Math.pow(2, m);
const TO_K = N / Math.LN2;
const FROM_K = Math.LN2 / N;
// Adding and subtracting 1.5 * 2^52 rounds a double to the nearest integer (ties to even): the
// sum's ulp is 1, so the addition itself rounds.
const ROUND = 1.5 * 2 ** 52;
// Inputs are clamped to [-104, 104]: exp(-104) = 6.8e-46 rounds to 0 in f32 and exp(104) = 1.5e45
// to Infinity, so clamped results are the correct f32 values of exp at -Infinity and +Infinity
// (the f64 intermediate differs: 6.8e-46 instead of 0, which no f32 sum or product can see).
// NaN passes the clamp and comes out NaN.
const LO = -104;
const HI = 104;

/** exp(x) to about 1e-13 relative for f32 results (see above); NaN in, NaN out. */
export function expF(x: number): number {
  const xc = x < LO ? LO : x > HI ? HI : x;
  const k = xc * TO_K + ROUND - ROUND;
  const r = xc - k * FROM_K;
  const ki = k | 0;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24))));
  return FRACTION[ki & 63] * POWER[(ki >> 6) + M_BIAS] * p;
}

/** 1 / (1 + exp(-x)) with expF; exact in the f32 sense for all x, since expF saturates. */
export function sigmoidF(x: number): number {
  return 1 / (1 + expF(-x));
}
