/**
 * HF checkpoints: random checkpoints written by the oracle's own writer (bf16 and f32 storage,
 * GQA, head_dim != hidden/heads, tied and untied, biases) load through loadQwen3 and give the
 * reference logits (f32 compute: rel <= 1e-3 and identical argmax; f64: ~1e-10). Then
 * missing/mis-shaped tensors, tied lm_head handling, save -> load round trips (bf16 and f32
 * exact, sharded) and atomic save.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { loadQwen3, saveQwen3 } from "../../src/model/checkpoint.ts";
import { makeQwen3Config } from "../../src/model/config.ts";
import { Qwen3Model } from "../../src/model/qwen3.ts";
import { qwen3ParamSpecs } from "../../src/model/weights.ts";
import { SafetensorsCheckpoint, writeSafetensorsCheckpoint } from "../../src/format/safetensors.ts";
import { decodeToFloat, encodeFloat } from "../../src/tensor/dtype.ts";
import { noGrad } from "../../src/tensor/index.ts";
import { CheckpointFormatError } from "../../src/util/errors.ts";
import { causalLayout } from "../../src/util/layout.ts";
import { readReferenceCheckpoint, referenceLogits, writeRandomCheckpoint } from "./reference-qwen3.ts";
import { PARITY_CONFIGS, argmaxRows, cpu, diff, fmt, rawConfig, tokens } from "./helpers.ts";

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "npr-model-"));
process.on("exit", () => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (tag: string) => path.join(tmpRoot, `${tag}-${dirCount++}`);

for (const [name, cfg] of Object.entries(PARITY_CONFIGS)) {
  for (const storage of ["BF16", "F32"] as const) {
    test(`loaded ${storage} checkpoint matches the float64 reference: ${name}`, () => {
      const dir = freshDir("parity");
      writeRandomCheckpoint(dir, cfg, { seed: 13, dtype: storage });
      // The oracle reads the files itself (its own decode path), not the in-memory weights.
      const { cfg: refCfg, weights } = readReferenceCheckpoint(dir);
      const ids = tokens(8, cfg.vocab_size, 17);
      const ref = referenceLogits(refCfg, weights, ids);
      const V = cfg.vocab_size;

      const m32 = loadQwen3(dir, { backend: cpu, dtype: "f32", requiresGrad: false });
      const out32 = noGrad(() => m32.forward(ids, causalLayout(ids.length))).toArray();
      const d32 = diff(out32, ref);
      const argmaxSame = argmaxRows(out32, V).every((a, i) => a === argmaxRows(ref, V)[i]);
      console.log(`  ${name} ${storage} f32 compute: ${fmt(d32)} argmax identical: ${argmaxSame}`);
      assert.ok(d32.rel <= 1e-3);
      assert.ok(argmaxSame);

      const m64 = loadQwen3(dir, { backend: cpu, dtype: "f64", requiresGrad: false });
      const d64 = diff(noGrad(() => m64.forward(ids, causalLayout(ids.length))).toArray(), ref);
      console.log(`  ${name} ${storage} f64 compute: ${fmt(d64)}`);
      assert.ok(d64.rel <= 1e-10);
    });
  }
}

/** Rewrites a checkpoint's tensors through `edit` (add, drop or replace entries). */
function rewrite(dir: string, edit: (entries: Map<string, { dtype: string; shape: number[]; data: Uint8Array }>) => void) {
  const ck = SafetensorsCheckpoint.open(dir);
  const entries = new Map<string, { dtype: string; shape: number[]; data: Uint8Array }>();
  for (const n of ck.names()) {
    const e = ck.get(n)!;
    entries.set(n, { dtype: e.dtype, shape: [...e.shape], data: ck.readBytes(n).slice() });
  }
  ck.close();
  edit(entries);
  fs.rmSync(path.join(dir, "model.safetensors"));
  writeSafetensorsCheckpoint(
    dir,
    [...entries].map(([name, e]) => ({ name, dtype: e.dtype as "F32", shape: e.shape, data: e.data })),
    { metadata: { format: "pt" } },
  );
}

function expectCkError(fn: () => unknown, code: string, param: string, re: RegExp) {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CheckpointFormatError, `expected CheckpointFormatError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.param, param);
    assert.match(err.message, re);
    return true;
  });
}

test("missing, mis-shaped and non-float tensors are errors naming the tensor", () => {
  const cfg = rawConfig({ num_hidden_layers: 1 });
  const base = freshDir("bad");
  writeRandomCheckpoint(base, cfg, { seed: 1, dtype: "BF16" });
  const copy = () => {
    const d = freshDir("bad");
    fs.cpSync(base, d, { recursive: true });
    return d;
  };

  const d1 = copy();
  rewrite(d1, (e) => e.delete("model.layers.0.self_attn.k_norm.weight"));
  expectCkError(
    () => loadQwen3(d1, { backend: cpu }),
    "missing_tensor",
    "model.layers.0.self_attn.k_norm.weight",
    /: tensor model\.layers\.0\.self_attn\.k_norm\.weight is missing/,
  );

  const d2 = copy();
  rewrite(d2, (e) => {
    const q = e.get("model.layers.0.self_attn.q_proj.weight")!;
    q.shape = [q.shape[1]!, q.shape[0]!];
  });
  expectCkError(
    () => loadQwen3(d2, { backend: cpu }),
    "bad_shape",
    "model.layers.0.self_attn.q_proj.weight",
    /q_proj\.weight has shape \[32, 48\], config\.json implies \[48, 32\]/,
  );

  const d3 = copy();
  rewrite(d3, (e) => e.delete("lm_head.weight"));
  expectCkError(
    () => loadQwen3(d3, { backend: cpu }),
    "missing_tensor",
    "lm_head.weight",
    /tensor lm_head\.weight is missing[^]*tie_word_embeddings/,
  );

  const d4 = copy();
  rewrite(d4, (e) => {
    const n = e.get("model.norm.weight")!;
    e.set("model.norm.weight", { dtype: "I32", shape: n.shape, data: new Uint8Array(n.shape[0]! * 4) });
  });
  expectCkError(() => loadQwen3(d4, { backend: cpu }), "bad_dtype", "model.norm.weight", /stored as I32/);

  const d5 = copy();
  fs.rmSync(path.join(d5, "config.json"));
  expectCkError(() => loadQwen3(d5, { backend: cpu }), "missing_file", path.join(d5, "config.json"), /cannot read the model config/);
});

test("a tied checkpoint that also stores lm_head.weight loads with it ignored", () => {
  const cfg = rawConfig({ tie_word_embeddings: true, num_hidden_layers: 1 });
  const dir = freshDir("tied");
  // A stray lm_head of random values: HF ignores it, so must we (the embeddings are the head).
  writeRandomCheckpoint(dir, cfg, {
    seed: 2,
    dtype: "F32",
    extra: [
      ["lm_head.weight", [48, 32]],
      ["model.rotary_emb.inv_freq", [6]],
    ],
  });
  const unexpected: string[] = [];
  const m = loadQwen3(dir, { backend: cpu, onUnexpected: (n) => unexpected.push(...n) });
  assert.equal(m.params.has("lm_head.weight"), false);
  assert.deepEqual(unexpected, ["model.rotary_emb.inv_freq"]);
  const { weights } = readReferenceCheckpoint(dir);
  const ids = tokens(4, 48, 3);
  const d = diff(noGrad(() => m.forward(ids, causalLayout(4))).toArray(), referenceLogits({ ...cfg }, weights, ids));
  console.log(`  tied with stray lm_head: ${fmt(d)}`);
  assert.ok(d.rel <= 1e-3);
});

test("save -> load round trips exactly (bf16, f32, sharded) and writes the HF files", () => {
  const config = makeQwen3Config({
    vocabSize: 40,
    hiddenSize: 16,
    intermediateSize: 24,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 6,
    attentionBias: true,
    bosTokenId: 1,
    eosTokenId: [2, 3],
  });
  const model = Qwen3Model.random(config, { seed: 5, dtype: "f32", backend: cpu });
  for (const [dtype, st] of [
    ["bf16", "BF16"],
    ["f32", "F32"],
  ] as const) {
    const dir = freshDir(`save-${dtype}`);
    saveQwen3(model, dir, { dtype });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["config.json", "generation_config.json", "model.safetensors"]);
    const cj = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
    assert.equal(cj.torch_dtype, dtype === "bf16" ? "bfloat16" : "float32");
    assert.deepEqual(cj.architectures, ["Qwen3ForCausalLM"]);
    const gen = JSON.parse(fs.readFileSync(path.join(dir, "generation_config.json"), "utf8"));
    assert.deepEqual(gen, { _from_model_config: true, bos_token_id: 1, eos_token_id: [2, 3] });
    const ck = SafetensorsCheckpoint.open(dir);
    assert.equal(ck.get("model.embed_tokens.weight")!.dtype, st);
    ck.close();

    const back = loadQwen3(dir, { backend: cpu, dtype: "f32" });
    assert.deepEqual(back.config, { ...config, torchDtype: dtype === "bf16" ? "bfloat16" : "float32" });
    let maxAbs = 0;
    for (const spec of qwen3ParamSpecs(config)) {
      const orig = model.param(spec.name).toArray() as Float32Array;
      // What storage holds: bf16 rounds (RNE) once; f32 is the identity.
      const expect = decodeToFloat(encodeFloat(orig, st), st, "f32");
      const got = back.param(spec.name).toArray();
      assert.deepEqual(got, expect, `${spec.name} differs after ${dtype} round trip`);
      maxAbs = Math.max(maxAbs, diff(got, orig).maxAbs);
    }
    console.log(`  ${dtype} round trip: exact to storage; max |loaded - original| ${maxAbs.toExponential(3)}`);
    if (dtype === "f32") assert.equal(maxAbs, 0);
  }

  // Sharded: tiny shard limit gives an index + several files, and the same tensors.
  const sharded = freshDir("sharded");
  saveQwen3(model, sharded, { dtype: "f32", maxShardBytes: 4096 });
  const files = fs.readdirSync(sharded);
  assert.ok(files.includes("model.safetensors.index.json"), `files: ${files}`);
  const back = loadQwen3(sharded, { backend: cpu });
  for (const spec of qwen3ParamSpecs(config)) {
    assert.deepEqual(back.param(spec.name).toArray(), model.param(spec.name).toArray());
  }
});

test("save is atomic: no partial folder under the final name, no overwrite by default", () => {
  const config = makeQwen3Config({
    vocabSize: 16,
    hiddenSize: 8,
    intermediateSize: 8,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    headDim: 4,
  });
  const model = Qwen3Model.random(config, { seed: 1, backend: cpu });
  const parent = freshDir("atomic");
  const dir = path.join(parent, "ck");

  // A failure mid-write (a tensor that cannot be read back) leaves neither ck nor a temp folder.
  const broken = new Qwen3Model(config, new Map(model.params));
  const realParam = broken.param.bind(broken);
  broken.param = (name: string) => {
    if (name === "model.norm.weight") throw new Error("disk on fire");
    return realParam(name);
  };
  assert.throws(() => saveQwen3(broken, dir), /disk on fire/);
  assert.deepEqual(fs.readdirSync(parent), []);

  saveQwen3(model, dir);
  expectCkError(() => saveQwen3(model, dir), "exists", dir, /folder exists and is not empty/);
  fs.writeFileSync(path.join(dir, "stale.txt"), "old");
  saveQwen3(model, dir, { overwrite: true, dtype: "f32" });
  assert.deepEqual(fs.readdirSync(dir).sort(), ["config.json", "generation_config.json", "model.safetensors"]);
  assert.deepEqual(fs.readdirSync(parent), ["ck"]);
});
