/**
 * The ops for clipped objectives (minimum, maximum, clamp, where, lessEqual) through autograd, in
 * float64 on the CPU backend: gradients against central finite differences on inputs kept away
 * from ties and clamp boundaries (where the derivative jumps), then the subgradient convention
 * pinned exactly at ties and boundaries (a tie gives the whole gradient to the first operand, so
 * clamp passes it at both boundaries), and a DAPO-style clipped surrogate
 * -mean(min(r A, clamp(r, 1 - eps_lo, 1 + eps_hi) A)) checked against finite differences and
 * against its analytic gradient (zero where clipped and the clipped branch is the min).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import * as F from "../../src/tensor/ops.ts";
import { noGrad } from "../../src/tensor/autograd.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats } from "../util/check-close.ts";

const backend = new CpuBackend({ useBlas: false, threads: 1 });
/** Central-difference step: the derivatives checked are piecewise linear or smooth at scale ~1. */
const H = 1e-6;

function f64(values: ArrayLike<number>, shape: readonly number[], requiresGrad = true): Tensor {
  return Tensor.fromArray(Float64Array.from(values), shape, { dtype: "f64", backend, requiresGrad });
}

/** n normal values, each at least `gap` away from every value in `avoid` (resampled until so). */
function awayFrom(rng: Rng, n: number, avoid: (i: number) => number[], gap: number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v: number;
    do v = rng.normal() * scale;
    while (avoid(i).some((w) => Math.abs(v - w) < gap));
    out[i] = v;
  }
  return out;
}

/**
 * Checks d/dx sum(f(xs) * R) for every input that requires a gradient against central
 * differences at every element; R is a fixed random weight per output element. Prints the max
 * and mean differences.
 */
function gradcheck(name: string, f: (xs: Tensor[]) => Tensor, inputs: Tensor[], seed = 11): void {
  const rng = new Rng(seed);
  const out0 = noGrad(() => f(inputs));
  const R = f64(
    Array.from({ length: out0.size }, () => rng.normal()),
    out0.shape,
    false,
  );
  const lossOf = (): number => noGrad(() => F.sum(F.mul(f(inputs), R)).item());
  for (const x of inputs) x.grad = null;
  F.sum(F.mul(f(inputs), R)).backward();
  const analytic: number[] = [];
  const numeric: number[] = [];
  inputs.forEach((x, idx) => {
    if (!x.requiresGrad) return;
    assert.ok(x.grad, `${name}: input ${idx} got no gradient`);
    const g = x.grad.toArray();
    const host = x.toArray() as Float64Array;
    for (let i = 0; i < x.size; i++) {
      const orig = host[i]!;
      host[i] = orig + H;
      backend.write(x.buffer, host);
      const up = lossOf();
      host[i] = orig - H;
      backend.write(x.buffer, host);
      const down = lossOf();
      host[i] = orig;
      backend.write(x.buffer, host);
      numeric.push((up - down) / (2 * H));
      analytic.push(g[i]!);
    }
  });
  const stats = checkClose(`${name}: autograd vs finite differences`, analytic, numeric, { atol: 1e-7, rtol: 1e-6 });
  console.log(`  ${formatStats(name, stats)}`);
}

test("minimum and maximum: gradients vs float64 finite differences, broadcast, no ties", () => {
  const rng = new Rng(1);
  // a [4, 5] against b [5]: every a[r, j] kept 0.05 away from b[j], so no tie is within H.
  const b = rng.normal();
  const bRow = Float64Array.from({ length: 5 }, () => rng.normal());
  const a = awayFrom(rng, 20, (i) => [bRow[i % 5]!], 0.05);
  gradcheck("minimum [4,5] x [5]", ([x, y]) => F.minimum(x!, y!), [f64(a, [4, 5]), f64(bRow, [5])]);
  gradcheck("maximum [4,5] x [5]", ([x, y]) => F.maximum(x!, y!), [f64(a, [4, 5]), f64(bRow, [5])]);
  // [3, 1, 4] against [2, 4] -> [3, 2, 4]: both operands broadcast.
  const c = Float64Array.from({ length: 8 }, () => rng.normal());
  const d = awayFrom(rng, 12, (i) => [c[i % 4]!, c[4 + (i % 4)]!], 0.05);
  gradcheck("maximum [3,1,4] x [2,4]", ([x, y]) => F.maximum(x!, y!), [f64(d, [3, 1, 4]), f64(c, [2, 4])]);
  gradcheck("minimum with b a constant", ([x]) => F.minimum(x!, f64([b], [1], false)), [
    f64(
      awayFrom(rng, 9, () => [b], 0.05),
      [9],
    ),
  ]);
});

test("clamp: gradients vs float64 finite differences, number and tensor bounds, away from the boundaries", () => {
  const rng = new Rng(2);
  const [lo, hi] = [-0.7, 0.9];
  const x = awayFrom(rng, 30, () => [lo, hi], 0.05);
  gradcheck("clamp [30] to [-0.7, 0.9]", ([t]) => F.clamp(t!, lo, hi), [f64(x, [30])]);
  // Per-column bounds [6] that require a gradient themselves, x [4, 6].
  const loT = Float64Array.from({ length: 6 }, () => -0.5 - Math.abs(rng.normal()) * 0.3);
  const hiT = Float64Array.from({ length: 6 }, () => 0.5 + Math.abs(rng.normal()) * 0.3);
  const x2 = awayFrom(rng, 24, (i) => [loT[i % 6]!, hiT[i % 6]!], 0.05);
  gradcheck("clamp [4,6] to tensor bounds [6]", ([t, l, u]) => F.clamp(t!, l!, u!), [f64(x2, [4, 6]), f64(loT, [6]), f64(hiT, [6])]);
});

test("where: gradients vs float64 finite differences, i32 and float masks, broadcast", () => {
  const rng = new Rng(3);
  const a = Float64Array.from({ length: 20 }, () => rng.normal());
  const b = Float64Array.from({ length: 5 }, () => rng.normal());
  const maskI = Tensor.fromArray(Int32Array.from([1, 0, 1, 1]), [4, 1], { dtype: "i32", backend });
  gradcheck("where(i32 [4,1], [4,5], [5])", ([x, y]) => F.where(maskI, x!, y!), [f64(a, [4, 5]), f64(b, [5])]);
  const maskF = f64([0, 1, 0, 0, 1], [5], false);
  gradcheck("where(f64 [5], [4,5], [1])", ([x, y]) => F.where(maskF, x!, y!), [f64(a, [4, 5]), f64([rng.normal()], [1])]);
  // A mask from lessEqual: where(a <= b, a, b) is minimum, value and gradient.
  const c = awayFrom(rng, 12, () => [], 0);
  const d = awayFrom(rng, 12, (i) => [c[i]!], 0.05);
  const viaWhere = (xs: Tensor[]) => F.where(F.lessEqual(xs[0]!, xs[1]!), xs[0]!, xs[1]!);
  gradcheck("where(a <= b, a, b)", viaWhere, [f64(c, [12]), f64(d, [12])]);
  const [p, q] = [f64(c, [12]), f64(d, [12])];
  assert.deepEqual(Array.from(viaWhere([p, q]).toArray()), Array.from(F.minimum(p, q).toArray()));
});

/** Gradients of sum(f(inputs)) (a gradient of ones), as plain arrays, one per input. */
function gradsOfSum(f: (xs: Tensor[]) => Tensor, inputs: Tensor[]): number[][] {
  for (const x of inputs) x.grad = null;
  F.sum(f(inputs)).backward();
  return inputs.map((x) => Array.from(x.grad?.toArray() ?? []));
}

test("the subgradient convention: a tie gives the whole gradient to the first operand", () => {
  // min: [1 tie, 2 vs 0 -> b, 3 vs 5 -> a]; max: [tie -> a, 2 vs 0 -> a, 3 vs 5 -> b].
  const a = [1, 2, 3];
  const b = [1, 0, 5];
  assert.deepEqual(
    gradsOfSum(([x, y]) => F.minimum(x!, y!), [f64(a, [3]), f64(b, [3])]),
    [
      [1, 0, 1],
      [0, 1, 0],
    ],
  );
  assert.deepEqual(
    gradsOfSum(([x, y]) => F.maximum(x!, y!), [f64(a, [3]), f64(b, [3])]),
    [
      [1, 1, 0],
      [0, 0, 1],
    ],
  );
  // Swapping the operands moves the tie's gradient with the first one.
  assert.deepEqual(
    gradsOfSum(([x, y]) => F.minimum(y!, x!), [f64(a, [3]), f64(b, [3])]),
    [
      [0, 0, 1],
      [1, 1, 0],
    ],
  );
  // A broadcast operand sums its share: b [1] ties with a at two places, wins at one.
  assert.deepEqual(
    gradsOfSum(([x, y]) => F.minimum(x!, y!), [f64([2, 2, 3, 1], [4]), f64([2], [1])]),
    [[1, 1, 0, 1], [1]],
  );
  // The values at a tie: a's, so signed zeros show it.
  assert.ok(Object.is(F.minimum(f64([0], [1]), f64([-0], [1])).item(), 0));
  assert.ok(Object.is(F.maximum(f64([-0], [1]), f64([0], [1])).item(), -0));
});

test("clamp at its boundaries passes the gradient (torch.clamp's convention); outside it is 0", () => {
  const x = [-1, -0.5, 0, 0.5, 1, 2];
  assert.deepEqual(
    gradsOfSum(([t]) => F.clamp(t!, -0.5, 0.5), [f64(x, [6])]),
    [[0, 1, 1, 1, 0, 0]],
  );
  assert.deepEqual(Array.from(noGrad(() => F.clamp(f64(x, [6]), -0.5, 0.5)).toArray()), [-0.5, -0.5, 0, 0.5, 0.5, 0.5]);
  // Tensor bounds get the gradient only where their side was strictly clipped: x = -1 (lo) and
  // x = 1, 2 (hi); at x = +-0.5 the tie keeps it with x.
  const [dx, dlo, dhi] = gradsOfSum(([t, l, u]) => F.clamp(t!, l!, u!), [f64(x, [6]), f64([-0.5], [1]), f64([0.5], [1])]);
  assert.deepEqual([dx, dlo, dhi], [[0, 1, 1, 1, 0, 0], [1], [2]]);
});

test("lessEqual is a mask: 0/1 values, no gradient; where keeps an unselected inf or NaN out of the gradient", () => {
  const a = f64([1, 2, NaN, -0], [4]);
  const b = f64([1, 1, 0, 0], [4]);
  const m = F.lessEqual(a, b);
  assert.deepEqual(Array.from(m.toArray()), [1, 0, 0, 1]);
  assert.equal(m.requiresGrad, false);
  assert.equal(m.node, null);
  // The unselected branch holds inf and NaN: neither the value nor the gradient sees them.
  const mask = Tensor.fromArray(Int32Array.from([1, 0, 1, 0]), [4], { dtype: "i32", backend });
  const x = f64([1, Infinity, 3, NaN], [4]);
  const y = f64([NaN, 2, -Infinity, 4], [4]);
  const out = F.where(mask, x, y);
  assert.deepEqual(Array.from(out.toArray()), [1, 2, 3, 4]);
  const [dx, dy] = gradsOfSum(() => F.mul(F.where(mask, x, y), f64([5, 6, 7, 8], [4], false)), [x, y]);
  assert.deepEqual(
    [dx, dy],
    [
      [5, 0, 7, 0],
      [0, 6, 0, 8],
    ],
  );
  const f32Mask = Tensor.fromArray(Float32Array.from([1, 0, 1, 0]), [4], { dtype: "f32", backend });
  assert.throws(() => F.where(f32Mask, x, y), /where: mask \[4\] is f32, a is f64/);
});

test("a DAPO clipped surrogate from the ops: gradient vs finite differences and vs its analytic form", () => {
  // L = -mean_i min(r_i A_i, clamp(r_i, 1 - epsLo, 1 + epsHi) A_i), r_i = exp(logp_i - old_i):
  // verl's DAPO token loss with clip-higher (epsLo 0.2, epsHi 0.28), per-token advantages.
  const rng = new Rng(4);
  const N = 96;
  const [epsLo, epsHi] = [0.2, 0.28];
  const old = Float64Array.from({ length: N }, () => -1 - Math.abs(rng.normal()));
  // log-ratios spread over [-0.6, 0.6] so every regime occurs, kept 1e-3 away from the clip
  // boundaries log(1 - epsLo), log(1 + epsHi) where the gradient jumps.
  const delta = awayFrom(rng, N, () => [Math.log(1 - epsLo), Math.log(1 + epsHi)], 1e-3, 0.3);
  const logp = Float64Array.from(delta, (d, i) => old[i]! + d);
  const adv = Float64Array.from({ length: N }, () => rng.normal());
  const oldT = f64(old, [N], false);
  const advT = f64(adv, [N], false);
  const surrogate = ([lp]: Tensor[]): Tensor => {
    const r = F.exp(F.sub(lp!, oldT));
    const unclipped = F.mul(r, advT);
    const clipped = F.mul(F.clamp(r, 1 - epsLo, 1 + epsHi), advT);
    return F.mulScalar(F.mean(F.minimum(unclipped, clipped)), -1);
  };
  const lp = f64(logp, [N]);
  const loss = surrogate([lp]);
  // The value in float64, written out.
  let expectedLoss = 0;
  const expectedGrad = new Float64Array(N);
  const regimes = { inside: 0, clippedAndMin: 0, clippedNotMin: 0 };
  for (let i = 0; i < N; i++) {
    const r = Math.exp(logp[i]! - old[i]!);
    const rc = Math.min(Math.max(r, 1 - epsLo), 1 + epsHi);
    const [u, c] = [r * adv[i]!, rc * adv[i]!];
    expectedLoss -= Math.min(u, c) / N;
    // dL/dlogp_i = -A_i r_i / N unless r was clipped and the clipped (constant) branch is the min.
    const clipped = rc !== r;
    const clippedIsMin = clipped && c < u;
    expectedGrad[i] = clippedIsMin ? 0 : (-adv[i]! * r) / N;
    if (!clipped) regimes.inside++;
    else if (clippedIsMin) regimes.clippedAndMin++;
    else regimes.clippedNotMin++;
  }
  console.log(`  surrogate regimes over ${N} tokens: ${JSON.stringify(regimes)}`);
  assert.ok(regimes.inside > 5 && regimes.clippedAndMin > 5 && regimes.clippedNotMin > 5, "every regime must occur");
  const lossStats = checkClose("surrogate value", [loss.item()], [expectedLoss], { atol: 1e-14, rtol: 1e-12 });
  console.log(`  ${formatStats("surrogate value", lossStats)}`);
  loss.backward();
  const got = lp.grad!.toArray();
  const analytic = checkClose("surrogate gradient vs analytic", got, expectedGrad, { atol: 1e-15, rtol: 1e-12 });
  console.log(`  ${formatStats("surrogate gradient vs analytic", analytic)}`);
  for (let i = 0; i < N; i++) {
    if (expectedGrad[i] === 0) assert.equal(got[i], 0, `token ${i}: clipped branch is the min, gradient must be exactly 0`);
  }
  gradcheck("DAPO surrogate", surrogate, [f64(logp, [N])]);
});
