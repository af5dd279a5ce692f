/**
 * Mixed-precision training (`computeDtype: "bf16"` over f32 master parameters): one forward +
 * backward over an NPR-shaped layout gives gradients within bf16 tolerance of the f32 model's on
 * the same masters (every parameter gets an f32 gradient), and a few AdamW steps lower the loss.
 * CPU backend (the reference); bench/gpu-train.ts measures the same path on CUDA.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model } from "../../src/model/qwen3.ts";
import { AdamW, Tensor, crossEntropy } from "../../src/tensor/index.ts";
import { UsageError } from "../../src/util/errors.ts";
import { segmentLayout } from "../../src/util/layout.ts";
import type { Layout } from "../../src/util/layout.ts";
import { cpu, modelFromWeights, rawConfig, tokens } from "./helpers.ts";
import { randomWeights } from "./reference-qwen3.ts";

/**
 * One NPR block after a prompt: prompt (p tokens, causal), guideline (g, causal), `branches`
 * steps of `len` tokens each seeing the prefix + their own step and restarting positions after
 * the guideline, then a takeaway (t tokens) that sees everything before it.
 */
function nprBlockLayout(p: number, g: number, branches: number, len: number, t: number): Layout {
  const positions: number[] = [];
  const visible: Array<Array<[number, number]>> = [];
  const prefix = p + g;
  for (let i = 0; i < prefix; i++) {
    positions.push(i);
    visible.push([[0, i + 1]]);
  }
  for (let b = 0; b < branches; b++) {
    const start = prefix + b * len;
    for (let j = 0; j < len; j++) {
      positions.push(prefix + j);
      visible.push([
        [0, prefix],
        [start, start + j + 1],
      ]);
    }
  }
  const end = prefix + branches * len;
  for (let j = 0; j < t; j++) {
    positions.push(prefix + len + j);
    visible.push([[0, end + j + 1]]);
  }
  return segmentLayout(positions, visible);
}

const CFG = rawConfig({
  vocab_size: 64,
  hidden_size: 32,
  intermediate_size: 48,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  head_dim: 16,
  tie_word_embeddings: true,
});

function setup(seed: number): { layout: Layout; ids: Int32Array | number[]; targets: Tensor } {
  const layout = nprBlockLayout(6, 3, 3, 5, 4);
  const T = layout.numTokens;
  const ids = tokens(T, CFG.vocab_size, seed);
  const targets = Tensor.fromArray(tokens(T, CFG.vocab_size, seed + 1), [T], { dtype: "i32", backend: cpu });
  return { layout, ids, targets };
}

test("bf16-compute gradients match the f32 ones within bf16 tolerance (f32 masters)", () => {
  const { weights } = randomWeights(CFG, { seed: 5, std: 0.3 });
  const f32 = modelFromWeights(CFG, weights, { dtype: "f32", backend: cpu, requiresGrad: true });
  // Same parameter tensors, computing in bf16: gradients land on the same f32 masters.
  const mixed = new Qwen3Model(f32.config, f32.params, { computeDtype: "bf16" });
  assert.equal(mixed.gemmDtype, "bf16");
  assert.equal(mixed.weightDtype, "f32");
  const { layout, ids, targets } = setup(31);

  crossEntropy(f32.forward(ids, layout), targets).backward();
  const ref = new Map([...f32.params].map(([n, p]) => [n, p.grad!.toArray()]));
  for (const p of f32.params.values()) p.grad = null;
  const lossMixed = crossEntropy(mixed.forward(ids, layout), targets);
  lossMixed.backward();

  let worstRel = 0;
  let worstName = "";
  let anyDiff = false;
  for (const [name, p] of mixed.params) {
    assert.ok(p.grad, `${name} got no gradient`);
    assert.equal(p.grad.dtype, "f32", `${name}: gradient must reach the f32 master as f32`);
    const g = p.grad.toArray();
    const r = ref.get(name)!;
    let num = 0;
    let den = 0;
    let maxAbs = 0;
    for (let i = 0; i < g.length; i++) {
      const d = Math.abs(g[i]! - r[i]!);
      num += d * d;
      den += r[i]! * r[i]!;
      maxAbs = Math.max(maxAbs, d);
      if (d > 0) anyDiff = true;
    }
    const rel = Math.sqrt(num / Math.max(den, 1e-30));
    console.log(`  ${name}: rel ${rel.toExponential(2)}, max abs ${maxAbs.toExponential(2)}`);
    if (rel > worstRel) [worstRel, worstName] = [rel, name];
  }
  console.log(`  worst relative gradient error ${worstRel.toExponential(2)} (${worstName})`);
  // bf16 rounds GEMM inputs to 8 bits of mantissa (2^-9 relative each); a few roundings along
  // each path give ~1e-2, never 0.
  assert.ok(worstRel < 5e-2, `worst relative gradient error ${worstRel} at ${worstName}`);
  assert.ok(anyDiff, "bf16 gradients equal the f32 ones bit for bit: was anything cast?");
});

test("bf16-compute training lowers the loss over a few AdamW steps", () => {
  const masters = modelFromWeights(CFG, randomWeights(CFG, { seed: 1 }).weights, { dtype: "f32", backend: cpu, requiresGrad: true });
  const model = new Qwen3Model(masters.config, masters.params, { computeDtype: "bf16" });
  const { layout, ids, targets } = setup(41);
  const opt = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0 });
  const losses: number[] = [];
  for (let s = 0; s < 8; s++) {
    opt.zeroGrad();
    const loss = crossEntropy(model.forward(ids, layout), targets);
    losses.push(loss.item());
    loss.backward();
    opt.step();
  }
  console.log(`  losses ${losses.map((l) => l.toFixed(4)).join(" ")}`);
  assert.ok(losses[7]! < 0.8 * losses[0]!, `loss went ${losses[0]} -> ${losses[7]}`);
});

test("computeDtype bf16 is refused over non-f32 parameters", () => {
  const f64 = modelFromWeights(CFG, randomWeights(CFG, { seed: 2 }).weights, { dtype: "f64", backend: cpu });
  assert.throws(() => new Qwen3Model(f64.config, f64.params, { computeDtype: "bf16" }), UsageError);
});
