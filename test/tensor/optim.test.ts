/**
 * AdamW against an independent float64 formula over several steps (with weight decay, bias
 * correction, a parameter without a gradient), global-norm clipping against torch's definition,
 * and the LR schedules against verl's cosine-with-warm-up formula.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { AdamW, clipGradNorm, constantLr, cosineLr, gradNorm } from "../../src/tensor/optim.ts";
import { Rng } from "../../src/util/rng.ts";

const backend = new CpuBackend({ useBlas: false });

function randArr(rng: Rng, n: number): Float64Array {
  return Float64Array.from({ length: n }, () => rng.normal());
}

for (const dtype of ["f64", "f32"] as const) {
  test(`AdamW matches the reference formula over 4 steps (${dtype})`, () => {
    const rng = new Rng(3);
    const n = 7;
    const init = randArr(rng, n);
    const p = Tensor.fromArray(init, [n], { dtype, backend, requiresGrad: true });
    const frozen = Tensor.fromArray(randArr(rng, 3), [3], { dtype, backend, requiresGrad: true });
    const lr = 0.05,
      b1 = 0.8,
      b2 = 0.95,
      eps = 1e-6,
      wd = 0.1;
    const opt = new AdamW([p, frozen], { lr, betas: [b1, b2], eps, weightDecay: wd });
    const ref = Float64Array.from(init);
    const m = new Float64Array(n);
    const v = new Float64Array(n);
    const frozenBefore = frozen.toArray();
    for (let step = 1; step <= 4; step++) {
      const g = randArr(rng, n);
      p.grad = Tensor.fromArray(g, [n], { dtype, backend });
      frozen.grad = null;
      opt.step();
      for (let i = 0; i < n; i++) {
        m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
        v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
        const mh = m[i]! / (1 - b1 ** step);
        const vh = v[i]! / (1 - b2 ** step);
        ref[i] = ref[i]! - lr * (wd * ref[i]! + mh / (Math.sqrt(vh) + eps));
      }
    }
    const got = p.toArray();
    let maxDiff = 0;
    for (let i = 0; i < n; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i]! - ref[i]!));
    console.log(`  AdamW ${dtype}: max abs diff ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < (dtype === "f64" ? 1e-12 : 1e-6), `AdamW drifted from the reference by ${maxDiff}`);
    assert.deepEqual(Array.from(frozen.toArray()), Array.from(frozenBefore), "a parameter without a gradient must not move");
    assert.equal(opt.numSteps, 4);
    // State round trip: a fresh optimizer loaded with the state takes the same next step.
    const state = opt.state();
    const q = Tensor.fromArray(p.toArray(), [n], { dtype, backend, requiresGrad: true });
    const opt2 = new AdamW([q, frozen], { lr, betas: [b1, b2], eps, weightDecay: wd });
    opt2.loadState(state);
    const g = randArr(rng, n);
    p.grad = Tensor.fromArray(g, [n], { dtype, backend });
    q.grad = Tensor.fromArray(g, [n], { dtype, backend });
    opt.step();
    opt2.step();
    assert.deepEqual(Array.from(q.toArray()), Array.from(p.toArray()));
  });
}

test("clipGradNorm scales to the max norm and returns the norm before clipping", () => {
  const rng = new Rng(4);
  const a = Tensor.fromArray(randArr(rng, 5), [5], { dtype: "f64", backend, requiresGrad: true });
  const b = Tensor.fromArray(randArr(rng, 3), [3], { dtype: "f64", backend, requiresGrad: true });
  const ga = randArr(rng, 5).map((x) => x * 10);
  const gb = randArr(rng, 3).map((x) => x * 10);
  a.grad = Tensor.fromArray(ga, [5], { dtype: "f64", backend });
  b.grad = Tensor.fromArray(gb, [3], { dtype: "f64", backend });
  const expected = Math.sqrt([...ga, ...gb].reduce((s, x) => s + x * x, 0));
  const norm = clipGradNorm([a, b], 1.0);
  assert.ok(Math.abs(norm - expected) < 1e-9);
  const after = gradNorm([a, b]);
  assert.ok(Math.abs(after - 1.0) < 1e-5, `norm after clipping ${after}`);
  // Below the limit nothing changes.
  const before = Array.from(a.grad!.toArray());
  clipGradNorm([a, b], 10);
  assert.deepEqual(Array.from(a.grad!.toArray()), before);
});

test("learning-rate schedules", () => {
  assert.equal(constantLr(0.1)(1234), 0.1);
  const lr = 1e-3,
    warmup = 10,
    total = 110,
    minRatio = 0.1;
  const f = cosineLr({ lr, warmupSteps: warmup, totalSteps: total, minLrRatio: minRatio });
  // verl get_cosine_schedule_with_warmup, num_cycles = 0.5
  const verl = (step: number): number => {
    if (step < warmup) return (lr * step) / warmup;
    const progress = (step - warmup) / (total - warmup);
    const x = 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress));
    return lr * Math.max(0, x * (1 - minRatio) + minRatio);
  };
  for (const s of [0, 1, 5, 9, 10, 11, 50, 60, 109, 110]) {
    assert.ok(Math.abs(f(s) - verl(s)) < 1e-15, `step ${s}: ${f(s)} vs ${verl(s)}`);
  }
  assert.equal(f(0), 0);
  assert.ok(Math.abs(f(warmup) - lr) < 1e-15);
  assert.ok(Math.abs(f(total) - lr * minRatio) < 1e-15);
  assert.ok(f(60) < f(30) && f(30) < f(11));
});
