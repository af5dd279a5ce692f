/**
 * config.json parsing: every required key missing gives the exact error naming it; bad values
 * name key, value and expectation; the transformers-5 rope_parameters form; ignored vs unknown
 * keys; qwen3ConfigToJson round-trips through the parser.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../../src/util/errors.ts";
import { CONFIG_LIMITS, REQUIRED_KEYS, makeQwen3Config, parseQwen3Config, qwen3ConfigToJson } from "../../src/model/config.ts";

/** A real Qwen3-0.6B config.json (transformers 4.51), trimmed of nothing. */
const QWEN3_06B = {
  architectures: ["Qwen3ForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: "qwen3",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  transformers_version: "4.51.0",
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

function without(obj: Record<string, unknown>, key: string): Record<string, unknown> {
  const out = { ...obj };
  delete out[key];
  return out;
}

function expectConfigError(fn: () => unknown, code: string, param: string, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.param, param);
    assert.equal(err.message.split("\n")[0], message);
    return true;
  });
}

test("parses a real Qwen3-0.6B config.json", () => {
  const { config, ignored, unknown } = parseQwen3Config(QWEN3_06B);
  assert.equal(config.vocabSize, 151936);
  assert.equal(config.hiddenSize, 1024);
  assert.equal(config.headDim, 128);
  assert.equal(config.numKeyValueHeads, 8);
  assert.equal(config.ropeTheta, 1e6);
  assert.equal(config.rmsNormEps, 1e-6);
  assert.equal(config.tieWordEmbeddings, true);
  assert.equal(config.attentionBias, false);
  assert.equal(config.eosTokenId, 151645);
  assert.equal(config.torchDtype, "bfloat16");
  assert.deepEqual(unknown, []);
  assert.deepEqual([...ignored].sort(), [
    "architectures",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "initializer_range",
    "max_position_embeddings",
    "max_window_layers",
    "model_type",
    "sliding_window",
    "torch_dtype",
    "transformers_version",
    "use_cache",
  ]);
});

test("every missing required key is an error naming the file and the key", () => {
  for (const key of REQUIRED_KEYS) {
    expectConfigError(
      () => parseQwen3Config(without(QWEN3_06B, key), "/ck/config.json"),
      "missing_key",
      key,
      `/ck/config.json: missing required key "${key}"`,
    );
  }
  expectConfigError(
    () => parseQwen3Config(without(QWEN3_06B, "rope_theta"), "/ck/config.json"),
    "missing_key",
    "rope_theta",
    `/ck/config.json: missing required key "rope_theta" (or "rope_parameters.rope_theta")`,
  );
});

test("bad values name key, value and expectation", () => {
  const cases: Array<[Record<string, unknown>, string, string]> = [
    [{ hidden_size: 0 }, "hidden_size", `config.json: key "hidden_size" is 0, expected a positive integer <= 65536`],
    [{ vocab_size: "32" }, "vocab_size", `config.json: key "vocab_size" is "32", expected a positive integer <= 4194304`],
    [{ head_dim: 2.5 }, "head_dim", `config.json: key "head_dim" is 2.5, expected a positive integer <= 1024`],
    [{ rms_norm_eps: -1 }, "rms_norm_eps", `config.json: key "rms_norm_eps" is -1, expected a positive number`],
    [{ rope_theta: "1e6" }, "rope_theta", `config.json: key "rope_theta" is "1e6", expected a positive number`],
    [{ hidden_act: "gelu" }, "hidden_act", `config.json: key "hidden_act" is "gelu", expected "silu" (the only activation Qwen3 uses)`],
    [{ tie_word_embeddings: "yes" }, "tie_word_embeddings", `config.json: key "tie_word_embeddings" is "yes", expected true or false`],
    [{ attention_bias: 1 }, "attention_bias", `config.json: key "attention_bias" is 1, expected true or false`],
    [
      { use_sliding_window: true },
      "use_sliding_window",
      `config.json: key "use_sliding_window" is true, expected false (sliding-window attention is not supported)`,
    ],
    [{ model_type: "llama" }, "model_type", `config.json: key "model_type" is "llama", expected "qwen3"`],
    [
      { rope_scaling: { rope_type: "yarn", factor: 4 } },
      "rope_scaling",
      `config.json: key "rope_scaling" is {"rope_type":"yarn","factor":4}, expected null or a "default" rope type (scaled RoPE is not supported)`,
    ],
    [
      { layer_types: ["full_attention", "sliding_attention"] },
      "layer_types",
      `config.json: key "layer_types" is ["full_attention","sliding_attention"], expected null or a list of 28 "full_attention" entries`,
    ],
    [{ head_dim: 127 }, "head_dim", `config.json: head_dim must be even for rotary embeddings, got 127`],
    [
      { num_key_value_heads: 3 },
      "num_key_value_heads",
      `config.json: num_attention_heads (16) must be a multiple of num_key_value_heads (3)`,
    ],
    [
      { eos_token_id: [] },
      "eos_token_id",
      `config.json: key "eos_token_id" is [], expected a token id, a non-empty list of token ids, or null`,
    ],
  ];
  for (const [patch, param, message] of cases) {
    expectConfigError(() => parseQwen3Config({ ...QWEN3_06B, ...patch }), "bad_value", param, message);
  }
  expectConfigError(() => parseQwen3Config([1, 2]), "bad_value", "config.json", "config.json: expected a JSON object, got [1,2]");
});

test("transformers-5 rope_parameters form", () => {
  const v5: Record<string, unknown> = {
    ...without(without(QWEN3_06B, "rope_theta"), "rope_scaling"),
    rope_parameters: { rope_type: "default", rope_theta: 5e5 },
    dtype: "bfloat16",
  };
  delete v5["torch_dtype"];
  const { config, unknown } = parseQwen3Config(v5);
  assert.equal(config.ropeTheta, 5e5);
  assert.equal(config.torchDtype, "bfloat16");
  assert.deepEqual(unknown, []);
  expectConfigError(
    () => parseQwen3Config({ ...v5, rope_parameters: { rope_type: "yarn", rope_theta: 5e5, factor: 4 } }),
    "bad_value",
    "rope_parameters.rope_type",
    `config.json: key "rope_parameters.rope_type" is "yarn", expected "default" (scaled RoPE is not supported)`,
  );
  expectConfigError(
    () => parseQwen3Config({ ...v5, rope_theta: 1e4 }),
    "bad_value",
    "rope_theta",
    "config.json: rope_theta (10000) disagrees with rope_parameters.rope_theta (500000)",
  );
  // Both spellings agreeing is fine (some 4.5x exports write both).
  assert.equal(parseQwen3Config({ ...v5, rope_theta: 5e5 }).config.ropeTheta, 5e5);
});

test("unknown keys are reported, not rejected; defaults apply", () => {
  const minimal: Record<string, unknown> = {};
  for (const k of REQUIRED_KEYS) minimal[k] = QWEN3_06B[k];
  minimal["rope_theta"] = 10000;
  minimal["some_future_key"] = 1;
  const { config, ignored, unknown } = parseQwen3Config(minimal);
  assert.deepEqual(unknown, ["some_future_key"]);
  assert.deepEqual(ignored, []);
  assert.equal(config.tieWordEmbeddings, false);
  assert.equal(config.attentionBias, false);
  assert.equal(config.initializerRange, 0.02);
  assert.equal(config.bosTokenId, null);
});

test("qwen3ConfigToJson round-trips and writes what transformers expects", () => {
  const { config } = parseQwen3Config({ ...QWEN3_06B, eos_token_id: [151645, 151643] });
  const json = qwen3ConfigToJson(config, { torchDtype: "float32" });
  assert.deepEqual(json["architectures"], ["Qwen3ForCausalLM"]);
  assert.equal(json["model_type"], "qwen3");
  assert.equal(json["torch_dtype"], "float32");
  assert.equal(json["rope_theta"], 1e6);
  assert.deepEqual(json["eos_token_id"], [151645, 151643]);
  const again = parseQwen3Config(JSON.parse(JSON.stringify(json)));
  assert.deepEqual(again.unknown, []);
  assert.deepEqual({ ...again.config, torchDtype: null }, { ...config, torchDtype: null });

  const small = makeQwen3Config({
    vocabSize: 32,
    hiddenSize: 16,
    intermediateSize: 24,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 6,
    attentionBias: true,
  });
  assert.equal(small.attentionBias, true);
  assert.equal(small.ropeTheta, 1e6);
  assert.throws(
    () =>
      makeQwen3Config({
        vocabSize: 32,
        hiddenSize: 16,
        intermediateSize: 24,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 3,
        headDim: 6,
      }),
    ConfigError,
  );
});

test("size keys have ranges: a typo like vocab_size 1e12 is refused by name, not by a failed allocation", () => {
  const cases: Array<[string, unknown, string]> = [
    ["vocab_size", 1e12, `/tmp/c.json: key "vocab_size" is 1000000000000, expected a positive integer <= ${CONFIG_LIMITS.vocab_size}`],
    ["hidden_size", 2 ** 20, `/tmp/c.json: key "hidden_size" is 1048576, expected a positive integer <= ${CONFIG_LIMITS.hidden_size}`],
    [
      "num_hidden_layers",
      1e6,
      `/tmp/c.json: key "num_hidden_layers" is 1000000, expected a positive integer <= ${CONFIG_LIMITS.num_hidden_layers}`,
    ],
    [
      "max_position_embeddings",
      2 ** 30,
      `/tmp/c.json: key "max_position_embeddings" is 1073741824, expected a positive integer <= ${CONFIG_LIMITS.max_position_embeddings}`,
    ],
    ["rms_norm_eps", 2, `/tmp/c.json: key "rms_norm_eps" is 2, expected a positive number below 1`],
    [
      "eos_token_id",
      2 ** 40,
      `/tmp/c.json: key "eos_token_id" is 1099511627776, expected a token id, a non-empty list of token ids, or null`,
    ],
  ];
  for (const [key, value, message] of cases) {
    expectConfigError(() => parseQwen3Config({ ...QWEN3_06B, [key]: value }, "/tmp/c.json"), "bad_value", key, message);
  }
  // The limits stand far above every released Qwen3 (this one parses at its real sizes).
  assert.equal(parseQwen3Config({ ...QWEN3_06B, vocab_size: CONFIG_LIMITS.vocab_size }).config.vocabSize, CONFIG_LIMITS.vocab_size);
});
