/**
 * Parameter names, shapes and init: the spec list equals the oracle's independently written HF
 * list (tied/untied, with/without biases); random init is deterministic per seed, independent of
 * which other parameters exist, and has the HF statistics (N(0, 0.02), ones, zeros).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseQwen3Config } from "../../src/model/config.ts";
import { Qwen3Model } from "../../src/model/qwen3.ts";
import { initQwen3Params, qwen3ParamCount, qwen3ParamSpecs } from "../../src/model/weights.ts";
import { referenceParamShapes } from "./reference-qwen3.ts";
import { PARITY_CONFIGS, cpu, rawConfig } from "./helpers.ts";

test("parameter specs match the HF names and shapes", () => {
  for (const [name, cfg] of Object.entries(PARITY_CONFIGS)) {
    const specs = qwen3ParamSpecs(parseQwen3Config(cfg).config);
    const mine = new Map(specs.map((s) => [s.name, [...s.shape]]));
    const ref = new Map(referenceParamShapes(cfg));
    assert.deepEqual(mine, ref, name);
    assert.equal(specs.length, ref.size, `${name}: duplicate names`);
    for (const s of specs) {
      const want = s.name.endsWith(".bias") ? "zeros" : s.name.endsWith("norm.weight") ? "ones" : "normal";
      assert.equal(s.init, want, s.name);
    }
  }
  // Qwen3-0.6B's published parameter count (tied): 596,049,920.
  const q06 = parseQwen3Config(
    rawConfig({
      vocab_size: 151936,
      hidden_size: 1024,
      intermediate_size: 3072,
      num_hidden_layers: 28,
      num_attention_heads: 16,
      num_key_value_heads: 8,
      head_dim: 128,
      tie_word_embeddings: true,
    }),
  ).config;
  assert.equal(qwen3ParamCount(q06), 596049920);
});

test("random init is deterministic per seed and per name, with HF statistics", () => {
  const untied = parseQwen3Config(rawConfig({ attention_bias: true })).config;
  const tied = parseQwen3Config(rawConfig({ attention_bias: false, tie_word_embeddings: true })).config;
  const a = initQwen3Params(untied, { seed: 42, dtype: "f64", backend: cpu });
  const b = initQwen3Params(untied, { seed: 42, dtype: "f64", backend: cpu });
  const c = initQwen3Params(untied, { seed: 43, dtype: "f64", backend: cpu });
  const t = initQwen3Params(tied, { seed: 42, dtype: "f64", backend: cpu });
  for (const [name, p] of a) {
    assert.deepEqual(p.toArray(), b.get(name)!.toArray(), `${name} differs between runs`);
    // Same name, same values, whatever else the model has (no biases, no lm_head).
    if (t.has(name)) assert.deepEqual(p.toArray(), t.get(name)!.toArray(), `${name} depends on other params`);
  }
  const emb = a.get("model.embed_tokens.weight")!.toArray();
  assert.notDeepEqual(emb, c.get("model.embed_tokens.weight")!.toArray());
  assert.notDeepEqual(emb, a.get("lm_head.weight")!.toArray());
  let sum = 0;
  let sq = 0;
  for (const v of emb) {
    sum += v;
    sq += v * v;
  }
  const mean = sum / emb.length;
  const std = Math.sqrt(sq / emb.length - mean * mean);
  console.log(`  embed init: n ${emb.length} mean ${mean.toExponential(3)} std ${std.toFixed(5)} (want 0.02)`);
  assert.ok(Math.abs(std - 0.02) < 0.002 && Math.abs(mean) < 0.002);
  assert.ok(
    a
      .get("model.norm.weight")!
      .toArray()
      .every((v) => v === 1),
  );
  assert.ok(
    a
      .get("model.layers.1.self_attn.k_proj.bias")!
      .toArray()
      .every((v) => v === 0),
  );

  const m = Qwen3Model.random(untied, { seed: 42, dtype: "f64", backend: cpu });
  assert.deepEqual(
    m.parameters().map((p) => p.shape),
    qwen3ParamSpecs(untied).map((s) => s.shape),
  );
  assert.deepEqual(m.param("model.layers.0.mlp.up_proj.weight").toArray(), a.get("model.layers.0.mlp.up_proj.weight")!.toArray());
});
