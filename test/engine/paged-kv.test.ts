/**
 * Paged KV storage + block tables against the trainer: a trajectory (prompt, guideline with 3
 * plans, 3 steps of different lengths, takeaway, conclusion) is computed the engine's way on
 * 4-slot blocks (chunked prefill of the prefix, fork, the three branches decoded in one batch
 * each step with copy-on-write of the partial tail, join with partially filled blocks in the
 * middle of the table, then the takeaway), and every token's logits are compared with one masked
 * forward of the serialized trajectory laid out by buildNprLayout. Prints max/mean abs diff.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config, PagedKVStorage, pagedForward } from "../../src/model/index.ts";
import type { PagedSeqInput } from "../../src/model/index.ts";
import { KVManager } from "../../src/kv/index.ts";
import type { BlockTable, SlotCopy } from "../../src/kv/index.ts";
import { buildNprLayout } from "../../src/format/npr-layout.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { diffStats } from "../util/check-close.ts";

const tok = byteTokenizer();
const model = Qwen3Model.random(
  makeQwen3Config({
    vocabSize: 320,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 8,
    ropeTheta: 10000,
  }),
  { seed: 5, dtype: "f64", std: 0.3, backend: new CpuBackend() },
);

test("paged forward over fork/join equals the masked forward of the serialized trajectory", () => {
  const prompt = tok.encodeChat([{ role: "user", content: "2+3*4?" }]);
  const prefix = tok.encode("<guideline><plan>1: add</plan><plan>2: mul</plan><plan>3: x</plan></guideline>");
  const steps = ["<step>1: 2+3=5</step>", "<step>2: 3*4=12, 2+12</step>", "<step>3: ok</step>"].map((s) => tok.encode(s));
  const tail = tok.encode("<takeaway>14</takeaway>so \\boxed{14}<|im_end|>");
  const serialized = [...prompt, ...prefix, ...steps.flat(), ...tail];
  const lay = buildNprLayout(prompt.length, tok.parserTokens(serialized));
  assert.ok(lay.ok);
  const want = model.forward(Int32Array.from(serialized), lay.layout).toArray();
  const V = model.config.vocabSize;

  const kv = new KVManager(64, 4);
  const pages = new PagedKVStorage(model, 64, 4);
  const got = new Float64Array(serialized.length * V);
  let copiesSeen = 0;
  // Runs one batched step: each item appends `ids` at `positions` to its table; rows land at `at`.
  const step = (items: Array<{ table: BlockTable; ids: number[]; positions: number[]; at: number }>) => {
    const inputs: PagedSeqInput[] = [];
    const copies: SlotCopy[] = [];
    for (const it of items) {
      const visible = { blocks: [...it.table.blocks], starts: [...it.table.starts], ends: [...it.table.ends] };
      const r = kv.appendSlots(it.table, it.ids.length);
      assert.ok(r.ok);
      copies.push(...r.copies);
      // A copy-on-write moved this table's own tail rows: it must see them where they are now.
      for (const c of r.copies) {
        const e = visible.blocks.length - 1;
        assert.equal(visible.blocks[e], c.srcBlock);
        visible.blocks[e] = c.dstBlock;
        visible.starts[e] = c.dstStart;
        visible.ends[e] = c.dstStart + c.count;
      }
      inputs.push({ ids: it.ids, positions: it.positions, writeSlots: r.slots, visible });
    }
    copiesSeen += copies.length;
    pages.applyCopies(copies);
    const logits = pagedForward(model, pages, inputs).toArray();
    let row = 0;
    for (const it of items) {
      got.set(logits.subarray(row * V, (row + it.ids.length) * V), it.at * V);
      row += it.ids.length;
    }
    kv.assertConsistent();
  };

  // Prefix: chunked prefill of 7 tokens at a time (ends on a partial block on purpose).
  const root = kv.newTable();
  const pre = [...prompt, ...prefix];
  for (let i = 0; i < pre.length; i += 7) {
    const ids = pre.slice(i, i + 7);
    step([{ table: root, ids, positions: ids.map((_, j) => i + j), at: i }]);
  }
  const g = pre.length - 1; // position of </guideline>
  const kids = kv.fork(root, 3);
  kv.release(root);
  // Branches: the first 3 tokens (forced <step> N:) as one chunk, then one token per step.
  const starts: number[] = [];
  let at = pre.length;
  for (const s of steps) {
    starts.push(at);
    at += s.length;
  }
  const done = steps.map(() => 0);
  while (done.some((d, i) => d < steps[i]!.length)) {
    const items = [];
    for (let b = 0; b < 3; b++) {
      const n = done[b] === 0 ? 3 : 1;
      const ids = steps[b]!.slice(done[b], done[b]! + n);
      if (ids.length === 0) continue;
      items.push({ table: kids[b]!, ids, positions: ids.map((_, j) => g + 1 + done[b]! + j), at: starts[b]! + done[b]! });
      done[b]! += ids.length;
    }
    step(items);
  }
  const joined = kv.join(kids, pre.length);
  for (const k of kids) kv.release(k);
  assert.equal(joined.numTokens, pre.length + steps.flat().length);
  const partialInMiddle = joined.ends.slice(0, -1).some((e, i) => e - joined.starts[i]! < 4);
  assert.ok(partialInMiddle, "the joined table has a partially filled block before its tail");
  const longest = Math.max(...steps.map((s) => s.length));
  step([{ table: joined, ids: tail, positions: tail.map((_, j) => g + 1 + longest + j), at }]);
  kv.release(joined);
  kv.assertConsistent();
  assert.equal(kv.pool.numFree, 63, "every block back in the pool");
  assert.ok(copiesSeen > 0, "a copy-on-write happened");

  const { max, mean } = diffStats(got, want);
  console.log(
    `paged vs masked forward (f64, ${serialized.length} tokens, ${copiesSeen} CoW copies): max abs diff ${max.toExponential(3)}, mean ${mean.toExponential(3)}`,
  );
  assert.ok(max < 1e-10, `max abs diff ${max}`);
  pages.dispose();
});
