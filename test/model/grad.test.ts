/**
 * Whole-model gradient check in float64: central finite differences of a scalar loss
 * (crossEntropy of the logits against fixed targets) versus autograd, for a sample of entries of
 * EVERY parameter tensor, on tiny configs (tied + biases, untied GQA). Then a tiny model
 * overfits one small batch with AdamW (loss falls by >= 90%).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model } from "../../src/model/qwen3.ts";
import { makeQwen3Config } from "../../src/model/config.ts";
import { AdamW, Tensor, crossEntropy, noGrad } from "../../src/tensor/index.ts";
import { causalLayout, packedCausalLayout } from "../../src/util/layout.ts";
import { Rng } from "../../src/util/rng.ts";
import { randomWeights } from "./reference-qwen3.ts";
import { cpu, modelFromWeights, rawConfig, tokens } from "./helpers.ts";

const GRAD_CONFIGS = {
  "tied + bias, H2/Hkv1 D6": rawConfig({
    vocab_size: 11,
    hidden_size: 8,
    intermediate_size: 12,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 6,
    tie_word_embeddings: true,
    attention_bias: true,
  }),
  "untied, H4/Hkv2 D4": rawConfig({
    vocab_size: 13,
    hidden_size: 8,
    intermediate_size: 10,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 4,
    tie_word_embeddings: false,
    attention_bias: false,
  }),
};

for (const [name, cfg] of Object.entries(GRAD_CONFIGS)) {
  test(`whole-model gradient check (f64, central differences): ${name}`, () => {
    // std 0.5 so every path (norm weights, rope, attention mixing) carries a sizeable gradient.
    const { weights } = randomWeights(cfg, { seed: 7, std: 0.5 });
    const model = modelFromWeights(cfg, weights, { dtype: "f64", backend: cpu, requiresGrad: true });
    const T = 7;
    const ids = tokens(T, cfg.vocab_size, 9);
    const targets = Tensor.fromArray(tokens(T, cfg.vocab_size, 10), [T], { dtype: "i32", backend: cpu });
    const layout = causalLayout(T);
    const loss = () => crossEntropy(model.forward(ids, layout), targets);

    const l = loss();
    l.backward();
    const rng = new Rng(99);
    const h = 1e-5;
    let worst = 0;
    let worstAt = "";
    let checked = 0;
    for (const [pname, p] of model.params) {
      assert.ok(p.grad, `${pname} got no gradient`);
      const grad = p.grad.toArray();
      const values = p.toArray();
      // Parameters are contiguous from element 0 of their buffer: poke entries in place.
      const set = (i: number, v: number) => p.backend.write(p.buffer, Float64Array.of(v), i);
      const picks = new Set<number>();
      while (picks.size < Math.min(4, p.size)) picks.add(rng.int(p.size));
      for (const i of picks) {
        const orig = values[i]!;
        set(i, orig + h);
        const up = noGrad(loss).item();
        set(i, orig - h);
        const down = noGrad(loss).item();
        set(i, orig);
        const numeric = (up - down) / (2 * h);
        const analytic = grad[i]!;
        const rel = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric) + Math.abs(analytic), 1e-6);
        if (rel > worst) {
          worst = rel;
          worstAt = `${pname}[${i}] numeric ${numeric} autograd ${analytic}`;
        }
        checked++;
      }
    }
    console.log(`  ${name}: ${checked} entries of ${model.params.size} tensors, max relative diff ${worst.toExponential(3)} (${worstAt})`);
    assert.ok(worst < 1e-5, `gradient mismatch at ${worstAt}`);
  });
}

test("a tiny model overfits one small batch (loss falls by >= 90%)", () => {
  const config = makeQwen3Config({
    vocabSize: 32,
    hiddenSize: 32,
    intermediateSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 8,
    tieWordEmbeddings: true,
  });
  const model = Qwen3Model.random(config, { seed: 1, dtype: "f32", backend: cpu });
  // Two packed sequences of 16 random tokens; each predicts its next token.
  const lengths = [16, 16];
  const seqs = lengths.map((n, s) => tokens(n + 1, 32, 100 + s));
  const ids = Int32Array.from(seqs.flatMap((q) => [...q.subarray(0, -1)]));
  const targets = Tensor.fromArray(Int32Array.from(seqs.flatMap((q) => [...q.subarray(1)])), [ids.length], { dtype: "i32", backend: cpu });
  const layout = packedCausalLayout(lengths);
  const opt = new AdamW(model.parameters(), { lr: 1e-2, betas: [0.9, 0.95], eps: 1e-8, weightDecay: 0 });
  let first = 0;
  let last = 0;
  let steps = 0;
  for (; steps < 300; steps++) {
    const loss = crossEntropy(model.forward(ids, layout), targets);
    last = loss.item();
    if (steps === 0) first = last;
    if (last <= 0.1 * first) break;
    opt.zeroGrad();
    loss.backward();
    opt.step();
  }
  console.log(
    `  overfit: loss ${first.toFixed(4)} -> ${last.toFixed(4)} in ${steps} steps (${((1 - last / first) * 100).toFixed(1)}% lower)`,
  );
  assert.ok(last <= 0.1 * first, `loss only fell from ${first} to ${last}`);
});
