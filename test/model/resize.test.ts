/**
 * The NPR vocabulary resize (src/model/resize.ts) and the tag-extended checkpoint round trip:
 * rows of a tiny random Qwen3 checked against independently computed means (tag rows = mean of
 * the tag name's sub-token rows, padding rows = mean of old rows, old rows unchanged), tied and
 * untied heads, vocab padded to 64; then `npr tokenizer add-tags` on a checkpoint folder: the
 * written tokenizer has the tags, config vocab_size equals the embedding rows, and the folder
 * loads back to the same weights and logits.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Qwen3Model, loadQwen3, makeQwen3Config, paddedVocabSize, resizeVocab, saveQwen3, EMBED, LM_HEAD } from "../../src/model/index.ts";
import { NPR_TAGS, tagInitText } from "../../src/format/npr-tags.ts";
import { NprTokenizer, byteTokenizerFiles } from "../../src/tokenizer/index.ts";
import { addTagsToCheckpoint } from "../../src/cli/tokenizer.ts";
import { causalLayout } from "../../src/util/layout.ts";
import { diffStats } from "../util/check-close.ts";
import { cpu } from "./helpers.ts";

/** The byte tokenizer without the 8 tags (259 ids), as a base model's tokenizer would be. */
function untaggedByteTokenizer(): NprTokenizer {
  const { tokenizerJson, tokenizerConfig } = byteTokenizerFiles();
  const added = (tokenizerJson["added_tokens"] as Array<{ content: string }>).filter(
    (t) => !(NPR_TAGS as readonly string[]).includes(t.content),
  );
  const cfg = { ...tokenizerConfig, additional_special_tokens: [] as string[] };
  const dec = Object.fromEntries(
    Object.entries(tokenizerConfig["added_tokens_decoder"] as Record<string, { content: string }>).filter(
      ([, v]) => !(NPR_TAGS as readonly string[]).includes(v.content),
    ),
  );
  return new NprTokenizer({ ...tokenizerJson, added_tokens: added }, { ...cfg, added_tokens_decoder: dec });
}

function tinyModel(vocabSize: number, tied: boolean, seed: number): Qwen3Model {
  const config = makeQwen3Config({
    vocabSize,
    hiddenSize: 16,
    intermediateSize: 24,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    headDim: 8,
    tieWordEmbeddings: tied,
  });
  return Qwen3Model.random(config, { seed, dtype: "f64", std: 0.5, backend: cpu });
}

const rows = (t: { toArray(): ArrayLike<number>; shape: readonly number[] }) => {
  const a = Array.from(t.toArray());
  const C = t.shape[1]!;
  return Array.from({ length: t.shape[0]! }, (_, r) => a.slice(r * C, (r + 1) * C));
};

test("resizeVocab: tag rows are sub-token means, padding rows the old mean, vocab padded to 64", () => {
  const base = untaggedByteTokenizer();
  assert.equal(base.size, 259);
  const tagged = base.withTags();
  assert.equal(tagged.size, 267);
  for (const tied of [true, false]) {
    const model = tinyModel(259, tied, tied ? 1 : 2);
    const init = NPR_TAGS.map((tag) => ({ id: tagged.tagId(tag), sourceIds: base.encode(tagInitText(tag)) }));
    assert.deepEqual(init[1]!.sourceIds, [...Buffer.from("/guideline")], "byte tokenizer: one id per byte");
    const out = resizeVocab(model, { tokenizerSize: tagged.size, init });
    assert.equal(out.config.vocabSize, 320);
    assert.equal(paddedVocabSize(151677), 151680);
    for (const name of tied ? [EMBED] : [EMBED, LM_HEAD]) {
      const oldRows = rows(model.param(name));
      const newRows = rows(out.param(name));
      assert.equal(newRows.length, 320);
      let maxDiff = 0;
      for (let r = 0; r < 259; r++) assert.deepEqual(newRows[r], oldRows[r]);
      const mean = oldRows[0]!.map((_, c) => oldRows.reduce((a, row) => a + row[c]!, 0) / 259);
      for (let r = 267; r < 320; r++) newRows[r]!.forEach((v, c) => (maxDiff = Math.max(maxDiff, Math.abs(v - mean[c]!))));
      for (const t of init) {
        const want = oldRows[0]!.map((_, c) => t.sourceIds.reduce((a, s) => a + oldRows[s]![c]!, 0) / t.sourceIds.length);
        newRows[t.id]!.forEach((v, c) => (maxDiff = Math.max(maxDiff, Math.abs(v - want[c]!))));
      }
      console.log(`${tied ? "tied" : "untied"} ${name}: max abs diff of new rows vs reference means ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff < 1e-12);
    }
    // Everything else is shared, not copied.
    assert.equal(out.param("model.norm.weight"), model.param("model.norm.weight"));
  }
});

test("add-tags checkpoint round trip: tokenizer + resized weights load back identically", () => {
  const dir = mkdtempSync(join(tmpdir(), "npr-resize-"));
  try {
    const src = join(dir, "base");
    const out = join(dir, "tagged");
    const model = tinyModel(259, false, 3);
    saveQwen3(model, src, { dtype: "f32" });
    untaggedByteTokenizer().save(src);
    const r = addTagsToCheckpoint(src, out, { dtype: "f32" });
    assert.deepEqual(r.tagIds, [259, 260, 261, 262, 263, 264, 265, 266]);
    assert.equal(r.vocabSize, 320);
    const cfg = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as { vocab_size: number };
    assert.equal(cfg.vocab_size, 320);
    const tok = NprTokenizer.load(out);
    assert.ok(tok.hasTags);
    assert.equal(tok.tagId("<takeaway>"), 265);
    const back = loadQwen3(out, { backend: cpu, dtype: "f64" });
    assert.equal(back.param(EMBED).shape[0], 320, "HF requires config vocab_size == embedding rows");
    assert.throws(() => addTagsToCheckpoint(out, join(dir, "again")), /already has the NPR tags/);
    // Same logits as the in-memory resize (f32 storage of f64 weights: compare at f32 precision).
    const ids = tok.encode("<guideline><plan>1: hi</plan></guideline>");
    const want = resizeVocab(model, {
      tokenizerSize: 267,
      init: NPR_TAGS.map((t) => ({ id: tok.tagId(t), sourceIds: [...Buffer.from(tagInitText(t))] })),
    });
    const a = back.forward(ids, causalLayout(ids.length)).toArray();
    const b = want.forward(ids, causalLayout(ids.length)).toArray();
    const { max, mean } = diffStats(a, b);
    console.log(`reloaded tag-extended checkpoint: logits max abs diff ${max.toExponential(2)}, mean ${mean.toExponential(2)}`);
    assert.ok(max < 1e-4);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
