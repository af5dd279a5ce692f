/**
 * The task tokenizer: decode(encode(x)) == x on thousands of generated samples (prompts, both
 * trace forms, chat renderings) and on arbitrary text; every piece the generators write is one
 * token (no byte fallback: the vocabulary covers the corpus); tags and chat tokens are single
 * special ids; the files load back through NprTokenizer.load with the same ids and keep the HF
 * layout transformers reads; the NPR layout builds from its parser tokens. Prints the length
 * ratio against the byte tokenizer.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { buildNprLayout } from "../../src/format/npr-layout.ts";
import { NPR_TAGS } from "../../src/format/npr-tags.ts";
import { generateExamples, TASK_VOCABULARY, type SyntheticTaskName } from "../../src/tasks/index.ts";
import { byteTokenizer, NprTokenizer, TASK_SPLIT_PATTERN, taskTokenizer, taskTokenizerFiles } from "../../src/tokenizer/index.ts";

const tok = taskTokenizer(TASK_VOCABULARY);
const bytes = byteTokenizer();
const SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", ...NPR_TAGS];

/** The pieces the pre-tokenizer cuts `text` into (special tokens split out first). */
function pieces(text: string): string[] {
  const re = new RegExp(TASK_SPLIT_PATTERN, "g");
  const out: string[] = [];
  const specials = new RegExp(`(${SPECIALS.map((s) => s.replace(/[|<>/]/g, (c) => `\\${c}`)).join("|")})`);
  for (const part of text.split(specials)) {
    if (part === "") continue;
    if (SPECIALS.includes(part)) out.push(part);
    else out.push(...(part.match(re) ?? []));
  }
  return out;
}

/** Length under the byte tokenizer: one id per UTF-8 byte, one per special token (it has no merges). */
function byteCount(text: string): number {
  let n = 0;
  for (const p of pieces(text)) n += SPECIALS.includes(p) ? 1 : Buffer.byteLength(p, "utf8");
  return n;
}

const CORPUS: [SyntheticTaskName, string, number][] = [
  ["countdown", "apr", 1000],
  ["countdown", "small", 300],
  ["countdown", "large", 300],
  ["logic-grid", "small", 600],
  ["logic-grid", "medium", 100],
];

test("round trip and one token per piece on thousands of samples; ratio to the byte tokenizer", () => {
  let checked = 0;
  for (const [task, preset, n] of CORPUS) {
    const xs = generateExamples({ task, n, seed: 77, difficulty: { preset } });
    const sums = { prompt: [0, 0], sequential: [0, 0], parallel: [0, 0] };
    for (const s of xs) {
      const texts = { prompt: s.prompt, sequential: s.sequential!.text, parallel: s.parallel!.text };
      for (const [k, text] of Object.entries(texts) as [keyof typeof sums, string][]) {
        const ids = tok.encode(text);
        assert.equal(tok.decode(ids), text, `${s.example.id} ${k}`);
        // One token per piece: no piece of the corpus falls back to bytes.
        const want = pieces(text);
        if (ids.length !== want.length) {
          const got = tok.parserTokens(ids);
          const i = got.findIndex((t, j) => t !== want[j]);
          assert.fail(`${s.example.id} ${k}: piece "${want[i]}" is not one token (got "${got[i]}")`);
        }
        sums[k][0] += ids.length;
        sums[k][1] += byteCount(text);
        checked++;
      }
    }
    for (const s of xs.slice(0, 20)) {
      const chat = tok.renderChat([
        { role: "user", content: s.prompt },
        { role: "assistant", content: s.parallel!.text },
      ]);
      assert.equal(tok.decode(tok.encode(chat)), chat);
      assert.equal(byteCount(chat), bytes.encode(chat).length, "the byte count is the byte tokenizer's length");
    }
    const fmt = (k: keyof typeof sums) => `${k} ${(sums[k][0] / n).toFixed(0)} tokens (bytes ${(sums[k][1] / sums[k][0]).toFixed(2)}x)`;
    console.log(`${task} ${preset}: mean ${fmt("prompt")}, ${fmt("sequential")}, ${fmt("parallel")}`);
    const all = sums.prompt[1] + sums.sequential[1] + sums.parallel[1];
    const ours = sums.prompt[0] + sums.sequential[0] + sums.parallel[0];
    assert.ok(all / ours > 1.6, `${task} ${preset}: only ${(all / ours).toFixed(2)}x shorter than bytes`);
    if (task === "countdown" && preset === "apr") {
      // "A few hundred tokens or less" for the APR preset.
      assert.ok(sums.sequential[0] / n < 200 && sums.parallel[0] / n < 400, "APR traces stay short");
    }
  }
  console.log(`vocabulary ${tok.size} ids; ${checked} texts round-tripped`);
});

test("arbitrary text round-trips through the byte fallback; tags and chat tokens are single ids", () => {
  for (const text of [
    "héllo wörld 12345 1000000 007",
    "tab\there\r\nand  two spaces",
    "emoji 🙂 and 中文",
    "\\boxed{(1+2)*3}",
    "Think<step>x</step>",
  ]) {
    assert.equal(tok.decode(tok.encode(text)), text, text);
  }
  assert.ok(tok.hasTags);
  for (const s of SPECIALS) {
    const ids = tok.encode(s);
    assert.equal(ids.length, 1, s);
    assert.ok(tok.isSpecial(ids[0]!), s);
  }
  assert.equal(tok.specialTokenId("eos_token"), tok.encode("<|im_end|>")[0]);
  assert.deepEqual(tok.parserTokens(tok.encode(" 64+18=82 (28 9 82)\nback")), [
    " ",
    "64",
    "+",
    "18",
    "=",
    "82",
    " (",
    "28",
    " ",
    "9",
    " ",
    "82",
    ")",
    "\n",
    "back",
  ]);
  // A number is one id wherever it stands (prompt list, start of a trace line, after a bracket).
  const id51 = tok.encode("51");
  assert.equal(id51.length, 1);
  for (const ctx of ["from 51 30", "\n51-30", "(51)"]) assert.ok(tok.encode(ctx).includes(id51[0]!), ctx);
  // Ids 0..255 are the bytes in order, as in the byte tokenizer.
  assert.equal(tok.idToToken(65), "A");
  assert.equal(tok.decode([10]), "\n");
  assert.equal(tok.renderChat([{ role: "user", content: "hi" }]), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  assert.throws(() => taskTokenizerFiles({ words: ["two words"], maxNumber: 9 }), /not a run of ASCII letters/);
  assert.throws(() => taskTokenizerFiles({ words: [], maxNumber: 100000 }), /maxNumber must be an integer in 0\.\.9999/);
});

test("saved files load back with the same ids, in the layout transformers reads", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "npr-task-tok-"));
  tok.save(dir);
  const back = NprTokenizer.load(dir);
  const [s] = generateExamples({ task: "countdown", n: 1, seed: 5 });
  const text = s!.prompt + s!.parallel!.text;
  assert.deepEqual(back.encode(text), tok.encode(text));
  assert.equal(back.size, tok.size);
  const json = JSON.parse(readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  assert.deepEqual(
    json.pre_tokenizer.pretokenizers.map((p: { type: string }) => p.type),
    ["Split", "ByteLevel"],
  );
  assert.deepEqual(json.pre_tokenizer.pretokenizers[0], {
    type: "Split",
    pattern: { Regex: TASK_SPLIT_PATTERN },
    behavior: "Isolated",
    invert: false,
  });
  assert.equal(json.model.type, "BPE");
  assert.deepEqual(json.model.merges, []);
  assert.equal(json.decoder.type, "ByteLevel");
  const config = JSON.parse(readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  assert.equal(config.tokenizer_class, "PreTrainedTokenizerFast");
  assert.deepEqual(config.additional_special_tokens, [...NPR_TAGS]);
});

test("the NPR layout builds from the task tokenizer's parser tokens", () => {
  for (const task of ["countdown", "logic-grid"] as const) {
    const [s] = generateExamples({ task, n: 1, seed: 8, forms: ["parallel"] });
    const promptIds = tok.encodeChat([{ role: "user", content: s!.prompt }], { addGenerationPrompt: true });
    const ids = [...promptIds, ...tok.encode(s!.parallel!.text)];
    const r = buildNprLayout(promptIds.length, tok.parserTokens(ids));
    assert.ok(r.ok, r.ok ? "" : r.why);
    assert.equal(
      tok.findTags(ids.slice(promptIds.length)).filter((h) => h.tag === "<step>").length,
      (s!.parallel!.text.match(/<step>/g) ?? []).length,
    );
  }
});
