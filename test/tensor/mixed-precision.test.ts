/**
 * The tensor ops' mixed precision: `cast` (and its gradient back to the input dtype), linear with a
 * bf16 weight (x rounded to bf16, fp32 accumulation, f32 out) against a float64 emulation on the
 * host, and its gradient (the f32 output gradient cast to bf16, dx cast back to f32). CPU backend.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Tensor, cast, linear, mul, sum } from "../../src/tensor/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { bf16BitsToF32, f32ToBf16Bits } from "../../src/tensor/dtype.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats } from "../util/check-close.ts";

const backend = new CpuBackend({ useBlas: false });
const bf = (x: number) => bf16BitsToF32(f32ToBf16Bits(x));

function randn(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

test("linear: f32 x times a bf16 weight = bf16(x) . w in float64, f32 out", (t) => {
  const rng = new Rng(41);
  const [R, I, O] = [7, 33, 10];
  const x = randn(rng, R * I);
  const wv = Float32Array.from(randn(rng, O * I), bf);
  const w = cast(Tensor.fromArray(wv, [O, I], { backend }), "bf16");
  const y = linear(Tensor.fromArray(x, [R, I], { backend }), w);
  assert.equal(y.dtype, "f32");
  const expected = new Float64Array(R * O);
  for (let r = 0; r < R; r++)
    for (let o = 0; o < O; o++) {
      let s = 0;
      for (let i = 0; i < I; i++) s += bf(x[r * I + i]) * wv[o * I + i];
      expected[r * O + o] = s;
    }
  const stats = checkClose("mixed linear", y.toArray(), expected, { atol: 1e-5, rtol: 1e-5 });
  t.diagnostic(formatStats("mixed linear", stats));
  // Without the rounding of x the result is measurably different (the test sees the cast).
  let plain = 0;
  for (let o = 0; o < O; o++) for (let i = 0; i < I; i++) plain += x[i] * wv[o * I + i] - bf(x[i]) * wv[o * I + i];
  assert.ok(Math.abs(plain) > 1e-4);
});

test("gradients flow through cast and the mixed linear in the input's dtype", (t) => {
  const rng = new Rng(42);
  const [R, I, O] = [5, 12, 6];
  const x = Tensor.fromArray(randn(rng, R * I), [R, I], { backend, requiresGrad: true });
  const wv = Float32Array.from(randn(rng, O * I), bf);
  const w = cast(Tensor.fromArray(wv, [O, I], { backend }), "bf16");
  const gv = randn(rng, R * O);
  const loss = sum(mul(linear(x, w), Tensor.fromArray(gv, [R, O], { backend })));
  loss.backward();
  assert.equal(x.grad!.dtype, "f32");
  // dx = bf16( bf16(g) @ w ) per the rule; compare with float64 at bf16 tolerance.
  const expected = new Float64Array(R * I);
  for (let r = 0; r < R; r++)
    for (let i = 0; i < I; i++) {
      let s = 0;
      for (let o = 0; o < O; o++) s += bf(gv[r * O + o]) * wv[o * I + i];
      expected[r * I + i] = s;
    }
  const stats = checkClose("dx", x.grad!.toArray(), expected, { atol: 1e-3, rtol: 2 ** -8 });
  t.diagnostic(formatStats("dx", stats));
  // cast's own rule: d(sum(cast(a, bf16)))/da is ones, back in f32.
  const a = Tensor.fromArray(randn(rng, 8), [8], { backend, requiresGrad: true });
  sum(cast(cast(a, "bf16"), "f32")).backward();
  assert.equal(a.grad!.dtype, "f32");
  assert.deepEqual(Array.from(a.grad!.toArray()), new Array(8).fill(1));
});
