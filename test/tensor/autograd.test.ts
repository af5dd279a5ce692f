/**
 * Every differentiable op's gradient against central finite differences in float64 on the CPU
 * backend (the pure-TypeScript GEMM, so the check does not depend on OpenBLAS). The scalar
 * checked is sum(f(inputs) * R) for a fixed random R, so every output element's gradient counts
 * with a different weight.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import * as F from "../../src/tensor/ops.ts";
import { noGrad } from "../../src/tensor/autograd.ts";
import { Rng } from "../../src/util/rng.ts";
import { causalLayout, segmentLayout, type Layout } from "../../src/util/layout.ts";

const backend = new CpuBackend({ useBlas: false });
const H = 1e-6;

function randT(rng: Rng, shape: number[], opts: { positive?: boolean; scale?: number } = {}): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = rng.normal() * (opts.scale ?? 1);
    data[i] = opts.positive ? 0.5 + Math.abs(v) : v;
  }
  return Tensor.fromArray(data, shape, { dtype: "f64", backend, requiresGrad: true });
}

function ints(values: number[]): Tensor {
  return Tensor.fromArray(Int32Array.from(values), [values.length], { dtype: "i32", backend });
}

/**
 * Checks d/dx sum(f(xs) * R) for every float input against central differences on up to
 * `maxPerInput` elements of each input.
 */
function gradcheck(name: string, f: (xs: Tensor[]) => Tensor, inputs: Tensor[], seed = 7, maxPerInput = 40): void {
  const rng = new Rng(seed);
  const out0 = noGrad(() => f(inputs));
  const R = Tensor.fromArray(
    Float64Array.from({ length: out0.size }, () => rng.normal()),
    out0.shape,
    { dtype: "f64", backend },
  );
  const lossOf = (): number => noGrad(() => F.sum(F.mul(f(inputs), R)).item());
  for (const x of inputs) x.grad = null;
  F.sum(F.mul(f(inputs), R)).backward();
  let worst = 0;
  let sumDiff = 0;
  let count = 0;
  inputs.forEach((x, idx) => {
    if (!x.requiresGrad) return;
    assert.ok(x.grad, `${name}: input ${idx} got no gradient`);
    const analytic = x.grad.toArray();
    const host = x.toArray() as Float64Array;
    const picks = x.size <= maxPerInput ? [...Array(x.size).keys()] : Array.from({ length: maxPerInput }, () => rng.int(x.size));
    for (const i of picks) {
      const orig = host[i]!;
      host[i] = orig + H;
      backend.write(x.buffer, host);
      const up = lossOf();
      host[i] = orig - H;
      backend.write(x.buffer, host);
      const down = lossOf();
      host[i] = orig;
      backend.write(x.buffer, host);
      const numeric = (up - down) / (2 * H);
      const diff = Math.abs(numeric - analytic[i]!);
      const rel = diff / Math.max(1, Math.abs(numeric));
      worst = Math.max(worst, rel);
      sumDiff += diff;
      count++;
      assert.ok(
        rel < 1e-6,
        `${name}: input ${idx} element ${i}: autograd ${analytic[i]} vs finite difference ${numeric} (rel ${rel.toExponential(2)})`,
      );
    }
  });
  console.log(
    `  ${name}: ${count} entries, max rel diff ${worst.toExponential(2)}, mean abs diff ${(sumDiff / Math.max(1, count)).toExponential(2)}`,
  );
}

test("elementwise binary ops with broadcasting", () => {
  const rng = new Rng(1);
  for (const [sa, sb] of [
    [
      [3, 4],
      [3, 4],
    ],
    [[3, 4], [4]],
    [
      [2, 3, 4],
      [3, 1],
    ],
    [
      [1, 4],
      [3, 1],
    ],
  ] as Array<[number[], number[]]>) {
    gradcheck(`add ${sa}+${sb}`, ([a, b]) => F.add(a!, b!), [randT(rng, sa), randT(rng, sb)]);
    gradcheck(`sub ${sa}-${sb}`, ([a, b]) => F.sub(a!, b!), [randT(rng, sa), randT(rng, sb)]);
    gradcheck(`mul ${sa}*${sb}`, ([a, b]) => F.mul(a!, b!), [randT(rng, sa), randT(rng, sb)]);
    gradcheck(`div ${sa}/${sb}`, ([a, b]) => F.div(a!, b!), [randT(rng, sa), randT(rng, sb, { positive: true })]);
  }
});

test("scalar and unary ops", () => {
  const rng = new Rng(2);
  gradcheck("addScalar", ([x]) => F.addScalar(x!, 0.7), [randT(rng, [5, 3])]);
  gradcheck("mulScalar", ([x]) => F.mulScalar(x!, -1.3), [randT(rng, [5, 3])]);
  gradcheck("powScalar", ([x]) => F.powScalar(x!, 2.5), [randT(rng, [5, 3], { positive: true })]);
  gradcheck("neg", ([x]) => F.neg(x!), [randT(rng, [4, 3])]);
  gradcheck("exp", ([x]) => F.exp(x!), [randT(rng, [4, 3])]);
  gradcheck("log", ([x]) => F.log(x!), [randT(rng, [4, 3], { positive: true })]);
  gradcheck("sqrt", ([x]) => F.sqrt(x!), [randT(rng, [4, 3], { positive: true })]);
  gradcheck("rsqrt", ([x]) => F.rsqrt(x!), [randT(rng, [4, 3], { positive: true })]);
  gradcheck("silu", ([x]) => F.silu(x!), [randT(rng, [4, 3], { scale: 3 })]);
  gradcheck("sigmoid", ([x]) => F.sigmoid(x!), [randT(rng, [4, 3], { scale: 3 })]);
  gradcheck("square", ([x]) => F.square(x!), [randT(rng, [4, 3])]);
  gradcheck("swiglu", ([g, u]) => F.swiglu(g!, u!), [randT(rng, [4, 6], { scale: 2 }), randT(rng, [4, 6])]);
});

test("reductions and views", () => {
  const rng = new Rng(3);
  gradcheck("sum all", ([x]) => F.sum(x!), [randT(rng, [3, 4, 2])]);
  gradcheck("sum axis 1", ([x]) => F.sum(x!, 1), [randT(rng, [3, 4, 2])]);
  gradcheck("sum axes [0,2] keepdim", ([x]) => F.sum(x!, [0, 2], true), [randT(rng, [3, 4, 2])]);
  gradcheck("mean axis -1", ([x]) => F.mean(x!, -1), [randT(rng, [3, 5])]);
  gradcheck("reshape", ([x]) => F.mul(x!.reshape([6, 4]), x!.reshape([6, 4])), [randT(rng, [2, 3, 4])]);
  gradcheck("permute", ([x]) => F.exp(x!.permute([2, 0, 1])), [randT(rng, [2, 3, 4])]);
  gradcheck("transpose+reshape", ([x]) => x!.transpose(0, 1).reshape([-1]), [randT(rng, [3, 5])]);
});

test("matmul and linear", () => {
  const rng = new Rng(4);
  gradcheck("matmul 2d", ([a, b]) => F.matmul(a!, b!), [randT(rng, [3, 5]), randT(rng, [5, 4])]);
  gradcheck("matmul batched", ([a, b]) => F.matmul(a!, b!), [randT(rng, [2, 3, 5]), randT(rng, [2, 5, 4])]);
  gradcheck("matmul batched @ shared", ([a, b]) => F.matmul(a!, b!), [randT(rng, [2, 3, 5]), randT(rng, [5, 4])]);
  gradcheck("matmul of a transposed view", ([a, b]) => F.matmul(a!.transpose(0, 1), b!), [randT(rng, [5, 3]), randT(rng, [5, 4])]);
  gradcheck("linear", ([x, w]) => F.linear(x!, w!), [randT(rng, [4, 6]), randT(rng, [3, 6])]);
  gradcheck("linear 3-d input + bias", ([x, w, b]) => F.linear(x!, w!, b!), [randT(rng, [2, 3, 6]), randT(rng, [5, 6]), randT(rng, [5])]);
});

test("embedding, rmsnorm, rope", () => {
  const rng = new Rng(5);
  gradcheck("embedding (repeated ids)", ([t]) => F.embedding(t!, ints([2, 0, 2, 4, 1])), [randT(rng, [6, 3])]);
  gradcheck("rmsnorm", ([x, w]) => F.rmsnorm(x!, w!, 1e-6), [randT(rng, [5, 8]), randT(rng, [8])]);
  gradcheck("rmsnorm 3-d (per head)", ([x, w]) => F.rmsnorm(x!, w!, 1e-5), [randT(rng, [3, 2, 4]), randT(rng, [4])]);
  gradcheck("rope", ([x]) => F.rope(x!, ints([0, 3, 1, 7]), 10000), [randT(rng, [4, 2, 6])]);
});

test("attention with causal, segment and cached layouts (GQA)", () => {
  const rng = new Rng(6);
  const T = 5;
  const causal = causalLayout(T);
  gradcheck("attention causal H=2", ([q, k, v]) => F.attention(q!, k!, v!, causal), [
    randT(rng, [T, 2, 4]),
    randT(rng, [T, 2, 4]),
    randT(rng, [T, 2, 4]),
  ]);
  gradcheck("attention causal GQA H=4 Hkv=2", ([q, k, v]) => F.attention(q!, k!, v!, causal), [
    randT(rng, [T, 4, 4]),
    randT(rng, [T, 2, 4]),
    randT(rng, [T, 2, 4]),
  ]);
  // An NPR-like layout: tokens 0-1 shared prefix, 2-3 branch A, 4-5 branch B, 6 sees everything.
  const seg: Layout = segmentLayout(
    [0, 1, 2, 3, 2, 3, 4],
    [
      [[0, 1]],
      [[0, 2]],
      [[0, 3]],
      [[0, 4]],
      [
        [0, 2],
        [4, 5],
      ],
      [
        [0, 2],
        [4, 6],
      ],
      [[0, 7]],
    ],
  );
  gradcheck("attention NPR segments", ([q, k, v]) => F.attention(q!, k!, v!, seg, 0.4), [
    randT(rng, [7, 2, 4]),
    randT(rng, [7, 1, 4]),
    randT(rng, [7, 1, 4]),
  ]);
  // Two new tokens after three cached keys.
  const cached = causalLayout(2, 3);
  gradcheck("attention with past keys", ([q, k, v]) => F.attention(q!, k!, v!, cached), [
    randT(rng, [2, 2, 4]),
    randT(rng, [5, 2, 4]),
    randT(rng, [5, 2, 4]),
  ]);
});

test("softmax, logSoftmax, logprobs, crossEntropy", () => {
  const rng = new Rng(8);
  gradcheck("softmax", ([x]) => F.softmax(x!), [randT(rng, [3, 7], { scale: 2 })]);
  gradcheck("logSoftmax", ([x]) => F.logSoftmax(x!), [randT(rng, [3, 7], { scale: 2 })]);
  gradcheck("logprobs with ignore", ([x]) => F.logprobs(x!, ints([1, -100, 6, 0])), [randT(rng, [4, 7], { scale: 2 })]);
  gradcheck("crossEntropy", ([x]) => F.crossEntropy(x!, ints([3, 5, -100, 0])), [randT(rng, [4, 7], { scale: 2 })]);
});

test("crossEntropy value equals the mean negative log-likelihood", () => {
  const rng = new Rng(9);
  const logits = randT(rng, [3, 5]);
  const targets = [4, -100, 1];
  const loss = F.crossEntropy(logits, ints(targets)).item();
  const host = logits.toArray();
  let expected = 0;
  for (const r of [0, 2]) {
    const row = Array.from(host.slice(r * 5, r * 5 + 5));
    const lse = Math.log(row.reduce((a, v) => a + Math.exp(v), 0));
    expected += lse - row[targets[r]!]!;
  }
  expected /= 2;
  assert.ok(Math.abs(loss - expected) < 1e-12, `crossEntropy ${loss} vs ${expected}`);
});

test("gradients accumulate over backward calls and shared inputs", () => {
  const rng = new Rng(10);
  const x = randT(rng, [3]);
  F.sum(F.mul(x, x)).backward();
  F.sum(x).backward();
  const host = x.toArray();
  const g = x.grad!.toArray();
  for (let i = 0; i < 3; i++) assert.ok(Math.abs(g[i]! - (2 * host[i]! + 1)) < 1e-12);
});

test("an op without a gradient rule cannot be recorded, and noGrad records nothing", () => {
  const rng = new Rng(11);
  const x = randT(rng, [2, 2]);
  const y = noGrad(() => F.exp(x));
  assert.equal(y.requiresGrad, false);
  assert.equal(y.node, null);
  assert.throws(() => y.backward(), /does not require a gradient/);
});
