/**
 * The engine and the model's context (max_position_embeddings): an empty prompt or one that
 * leaves no position free is refused by name before anything is queued; max_new_tokens is capped
 * so no token (sampled, forced step prefix or takeaway) is decoded at a position >= the context,
 * in parallel and in sequential mode.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { Engine, engineVocab, parseForceStructure } from "../../src/engine/index.ts";
import { UsageError } from "../../src/util/errors.ts";

const CTX = 64;
const cfg = makeQwen3Config({
  vocabSize: 300,
  hiddenSize: 32,
  intermediateSize: 48,
  numHiddenLayers: 1,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 16,
  ropeTheta: 10000,
  maxPositionEmbeddings: CTX,
});
const tok = byteTokenizer();
const vocab = engineVocab(tok, 300);
const model = Qwen3Model.random(cfg, { seed: 3, backend: new CpuBackend() });

test("a prompt that fills the context, or an empty one, is refused before anything is queued", () => {
  const e = new Engine(model, vocab, { numBlocks: 64, blockSize: 8 });
  try {
    assert.equal(e.maxContext, CTX);
    const full = Array.from({ length: CTX }, (_, i) => 97 + (i % 26));
    assert.throws(
      () => e.add([[97, 98], full]),
      (err: unknown) => {
        assert.ok(err instanceof UsageError);
        assert.equal(err.code, "prompt_too_long");
        assert.match(err.message, /^prompt 1 has 64 tokens; the model's context holds 64 positions/);
        return true;
      },
    );
    assert.equal(e.scheduler.hasWork(), false, "the valid first prompt was not queued either");
    assert.throws(
      () => e.add([[]]),
      (err: unknown) => err instanceof UsageError && err.code === "empty_prompt",
    );
    assert.equal(e.cappedMaxNewTokens(60, 1_000_000), 4);
  } finally {
    e.dispose();
  }
});

test("max_new_tokens is capped at the context: no position reaches max_position_embeddings", () => {
  for (const mode of ["parallel", "sequential"] as const) {
    const e = new Engine(model, vocab, { numBlocks: 256, blockSize: 8 });
    const prompt = tok.encodeChat([{ role: "user", content: "hi" }]);
    const [r] = e.generateSync([prompt], {
      mode,
      temperature: 0,
      maxNewTokens: 1_000_000,
      minForkBudget: 0,
      forceStructure: parseForceStructure("3x30,2x30"),
      maxPlans: 5,
      seed: 0,
    });
    e.dispose();
    const last = Math.max(...r!.positions);
    console.log(
      `${mode}: prompt ${prompt.length}, ${r!.ids.length} tokens, finish ${r!.finishReason}, last position ${last} (context ${CTX})`,
    );
    assert.equal(r!.finishReason, "length");
    assert.ok(last < CTX, `position ${last} >= ${CTX}`);
    // Sequentially the budget is the critical path, so it runs to the last position; in parallel
    // NPR's serialized-length rule (a branch counts times its siblings) ends it earlier.
    if (mode === "sequential") assert.equal(last, CTX - 1);
    else assert.ok(r!.stats.serializedTokens <= CTX - prompt.length);
  }
});
