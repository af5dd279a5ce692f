/**
 * Mixed precision (dtype "bf16"): bf16 matrices, f32 norms, softmax, residual and KV cache, GEMMs
 * fed bf16 activations with fp32 accumulation. Checked against the float64 oracle on bf16-rounded
 * weights (the error is the activation rounding: ~1e-2 relative, never 0), against the f32 model
 * on the same weights, for KV-cache decode equal to a full forward, and for a bf16 save/load that
 * keeps every bit. CPU backend (the reference); the GPU runs the same through bench/parity.ts.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Qwen3Model, loadQwen3, saveQwen3 } from "../../src/model/index.ts";
import { parseQwen3Config } from "../../src/model/config.ts";
import { paramDtype, qwen3ParamSpecs } from "../../src/model/weights.ts";
import { Tensor, noGrad } from "../../src/tensor/index.ts";
import { toBf16Bits } from "../../src/tensor/dtype.ts";
import { causalLayout } from "../../src/util/layout.ts";
import { randomWeights, referenceLogits, type RefConfig, type RefWeights } from "./reference-qwen3.ts";
import { PARITY_CONFIGS, argmaxRows, cpu, diff, fmt, modelFromWeights, tokens } from "./helpers.ts";

const T = 9;

/** A mixed-precision model holding exactly `weights` (which must already be bf16 values). */
function mixedFromWeights(cfg: RefConfig, weights: RefWeights): Qwen3Model {
  const f32 = modelFromWeights(cfg, weights, { dtype: "f32", backend: cpu });
  const be = cpu;
  const params = new Map<string, Tensor>();
  for (const spec of qwen3ParamSpecs(f32.config)) {
    const t = f32.param(spec.name);
    if (paramDtype(spec, "bf16") === "f32") {
      params.set(spec.name, t);
      continue;
    }
    const buf = be.alloc("bf16", t.size);
    be.write(buf, toBf16Bits(t.toArray() as Float32Array));
    params.set(spec.name, new Tensor(be, buf, spec.shape));
  }
  return new Qwen3Model(f32.config, params);
}

for (const [name, cfg] of Object.entries(PARITY_CONFIGS)) {
  test(`bf16 mixed precision vs the float64 oracle and the f32 model: ${name}`, () => {
    const { weights } = randomWeights(cfg, { seed: 21, roundTo: "BF16" });
    const ids = tokens(T, cfg.vocab_size, 8);
    const ref = referenceLogits(cfg, weights, ids);
    const mixed = mixedFromWeights(cfg, weights);
    assert.equal(mixed.weightDtype, "bf16");
    assert.equal(mixed.dtype, "f32");
    const out = noGrad(() => mixed.forward(ids, causalLayout(T)));
    assert.equal(out.dtype, "f32");
    const logits = out.toArray();
    const dRef = diff(logits, ref);
    const f32 = noGrad(() => modelFromWeights(cfg, weights, { dtype: "f32", backend: cpu }).forward(ids, causalLayout(T))).toArray();
    const dF32 = diff(logits, f32);
    const agree = argmaxRows(logits, cfg.vocab_size).filter((a, i) => a === argmaxRows(ref, cfg.vocab_size)[i]).length / T;
    console.log(`  ${name} bf16 vs f64 oracle: ${fmt(dRef)}; vs f32 model: ${fmt(dF32)}; argmax agree ${agree}`);
    // Activations rounded to bf16 before each GEMM: about 2^-9 relative per rounding.
    assert.ok(dRef.rel <= 2e-2, `relative error ${dRef.rel}`);
    assert.ok(dF32.maxAbs > 0, "bf16 logits equal the f32 ones bit for bit: were activations cast at all?");
    assert.ok(agree >= 7 / 9, `argmax agreement ${agree}`);
  });
}

test("bf16 mixed precision: KV-cache decode equals the full forward", () => {
  const cfg = PARITY_CONFIGS["gqa H4/Hkv2 D12 untied"]!;
  const { weights } = randomWeights(cfg, { seed: 3, roundTo: "BF16" });
  const m = mixedFromWeights(cfg, weights);
  const ids = tokens(T, cfg.vocab_size, 4);
  const full = noGrad(() => m.forward(ids, causalLayout(T))).toArray();
  const kv = m.newKVCache(T);
  const first = m.forward(ids.subarray(0, 5), causalLayout(5), kv).toArray();
  const rest: number[] = [...first];
  for (let t = 5; t < T; t++) rest.push(...m.forward(ids.subarray(t, t + 1), causalLayout(1, t), kv).toArray());
  const d = diff(rest, full);
  console.log(`  cached vs full: ${fmt(d)}`);
  assert.ok(d.rel <= 1e-5, `cached decode differs: ${fmt(d)}`);
});

test("bf16 mixed precision: Qwen3Model.random, save as BF16, load with dtype bf16 keeps every bit", () => {
  const { config } = parseQwen3Config(PARITY_CONFIGS["gqa H4/Hkv1 D8 tied+bias"]!);
  const m = Qwen3Model.random(config, { seed: 9, dtype: "bf16", backend: cpu });
  for (const spec of qwen3ParamSpecs(config)) assert.equal(m.param(spec.name).dtype, spec.shape.length === 2 ? "bf16" : "f32", spec.name);
  const dir = mkdtempSync(path.join(tmpdir(), "npr-bf16-"));
  try {
    saveQwen3(m, path.join(dir, "ck"), { dtype: "bf16" });
    const back = loadQwen3(path.join(dir, "ck"), { backend: cpu, dtype: "bf16", requiresGrad: false });
    for (const spec of qwen3ParamSpecs(config)) {
      assert.deepEqual(back.param(spec.name).toArray(), m.param(spec.name).toArray(), spec.name);
    }
    const ids = tokens(5, config.vocabSize, 2);
    const a = noGrad(() => m.forward(ids, causalLayout(5))).toArray();
    const b = noGrad(() => back.forward(ids, causalLayout(5))).toArray();
    assert.deepEqual(b, a);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
