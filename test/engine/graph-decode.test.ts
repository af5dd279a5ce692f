/**
 * The graph decode path's host logic and math, without a GPU: bucket choice and the packed input
 * block (decode-plan.ts) against hand-written expectations, and the GraphDecoder's body run
 * eagerly on the CPU backend (f64) inside the engine against the generic paged forward: two
 * engines decode the same forced 3-branch structure with sampling (temperature 0.8, seeded), and
 * every token and log-prob must agree. The same with the paged decode attention op standing in
 * for segment attention (a float64 evaluation of the packed plan, test/tensor/decode-attention-eval.ts,
 * bound to a CPU backend that declares the "decodeAttention" capability): the per-step planning,
 * capacity growth (recapture) and padding rows of the GraphDecoder run in CI. The CUDA graph
 * capture itself is tested on the device (test/engine/graph-decode-cuda.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { Engine, ModelRunner, engineVocab, parseForceStructure } from "../../src/engine/index.ts";
import { bucketFor, inputLayout, isDecodeOnly, packInputs, rangesNeeded, rowRanges } from "../../src/engine/decode-plan.ts";
import { hasDecodeAttention, planLayout } from "../../src/tensor/index.ts";
import type { DecodeAttentionCapacity, DecodeAttentionParams, DeviceBuffer } from "../../src/tensor/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { evalPacked } from "../tensor/decode-attention-eval.ts";

test("decode plan: buckets, ranges merged, the packed input block with padding", () => {
  assert.equal(bucketFor(1), 1);
  assert.equal(bucketFor(3), 4);
  assert.equal(bucketFor(9), 16);
  assert.equal(bucketFor(17), null);
  assert.equal(isDecodeOnly([{ ids: [1] }, { ids: [2] }]), true);
  assert.equal(isDecodeOnly([{ ids: [1] }, { ids: [2, 3] }]), false);
  assert.equal(isDecodeOnly([]), false);
  const bs = 4;
  // Item a: blocks 2 (full) and 3 (rows 0..2) are adjacent slots 8..14, its new slot 14 extends it.
  const a = { ids: [7], positions: [6], writeSlots: Int32Array.from([14]), visible: { blocks: [2, 3], starts: [0, 0], ends: [4, 2] } };
  // Item b: block 2 shared, then block 5 rows 1..3 (after a join), new slot in block 6.
  const b = { ids: [9], positions: [9], writeSlots: Int32Array.from([24]), visible: { blocks: [2, 5], starts: [0, 1], ends: [4, 3] } };
  assert.deepEqual(rowRanges(a, bs), [[8, 15]]);
  assert.deepEqual(rowRanges(b, bs), [
    [8, 12],
    [21, 23],
    [24, 25],
  ]);
  assert.equal(rangesNeeded([a, b], bs), 4);
  // A table in non-slot order (a join put block 1 after block 6) comes out sorted.
  const c = { ids: [1], positions: [3], writeSlots: Int32Array.from([6]), visible: { blocks: [6, 1], starts: [0, 0], ends: [2, 2] } };
  assert.deepEqual(rowRanges(c, bs), [
    [4, 7],
    [24, 26],
  ]);
  const lay = inputLayout(4, 6);
  assert.deepEqual([lay.ids, lay.positions, lay.writeSlots, lay.offsets, lay.starts, lay.ends, lay.length], [0, 4, 8, 12, 17, 23, 29]);
  const out = new Int32Array(lay.length).fill(-99);
  packInputs([a, b], bs, lay, out);
  assert.deepEqual([...out.subarray(0, 4)], [7, 9, 0, 0]);
  assert.deepEqual([...out.subarray(4, 8)], [6, 9, 0, 0]);
  assert.deepEqual([...out.subarray(8, 12)], [14, 24, -1, -1]);
  assert.deepEqual([...out.subarray(12, 17)], [0, 1, 4, 4, 4]);
  assert.deepEqual([...out.subarray(17, 21)], [8, 8, 21, 24]);
  assert.deepEqual([...out.subarray(23, 27)], [15, 12, 23, 25]);
  assert.throws(() => packInputs([a, b], bs, inputLayout(4, 3), out), /more than 3 ranges/);
  assert.throws(() => packInputs([a, b, a], bs, inputLayout(2, 9), new Int32Array(99)), /3 items for a bucket of 2/);
});

test("graph decode body (eager, cpu f64) equals the generic paged forward inside the engine", () => {
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
    { seed: 11, dtype: "f64", std: 0.3, backend: new CpuBackend() },
  );
  const vocab = engineVocab(tok, 320);
  const prompt = tok.encodeChat([{ role: "user", content: "1+2?" }]);
  const structure = parseForceStructure("3x12");
  const gen = (fast: boolean) => {
    const runner = new ModelRunner(model, 128, 4, { graphDecode: fast ? { graphs: false } : false });
    const engine = new Engine(runner, vocab, { numBlocks: 128, blockSize: 4 });
    const [r] = engine.generateSync([prompt, prompt], {
      mode: "parallel",
      temperature: 0.8,
      seed: 5,
      maxNewTokens: 400,
      minForkBudget: 0,
      forceStructure: structure,
    });
    const steps = runner.decoder?.steps ?? 0;
    engine.dispose();
    return { r: r!, steps };
  };
  const slow = gen(false);
  const fast = gen(true);
  assert.ok(fast.steps > 20, `the fast path ran ${fast.steps} steps`);
  assert.equal(slow.steps, 0);
  assert.equal(fast.r.finishReason, slow.r.finishReason);
  assert.deepEqual(fast.r.ids, slow.r.ids);
  let max = 0;
  let sum = 0;
  let n = 0;
  for (let i = 0; i < slow.r.logprobs.length; i++) {
    const x = slow.r.logprobs[i];
    const y = fast.r.logprobs[i];
    assert.equal(x === null, y === null);
    if (x === null || y === null) continue;
    const d = Math.abs(x - y);
    max = Math.max(max, d);
    sum += d;
    n++;
  }
  console.log(
    `graph decode vs generic: ${slow.r.ids.length} tokens, ${n} log-probs, max abs diff ${max.toExponential(2)}, mean ${(sum / n).toExponential(2)}; fast steps ${fast.steps}`,
  );
  assert.ok(n > 30);
  assert.ok(max < 1e-10, `max |logprob diff| ${max}`);
});

test("graph decode with the paged decode attention op (plan evaluated on the cpu) equals the generic paged forward", () => {
  const be = new CpuBackend({ threads: 1 });
  let calls = 0;
  let maxItems = 0;
  // The capability's contract (types.ts PagedDecodeAttention), evaluated on the host from the packed plan.
  assert.equal(hasDecodeAttention(be), false, "a plain CPU backend declares no decode attention");
  Object.assign(be, {
    capabilities: ["decodeAttention"],
    decodeAttentionScratchLength: (cap: DecodeAttentionCapacity, H: number, D: number) => Math.max(1, cap.partials * H * (D + 2)),
    decodeAttention: (
      q: DeviceBuffer,
      k: DeviceBuffer,
      v: DeviceBuffer,
      plan: DeviceBuffer,
      _scratch: DeviceBuffer,
      out: DeviceBuffer,
      lse: DeviceBuffer,
      p: DecodeAttentionParams,
    ) => {
      const lay = planLayout(p.rows, p.capacity);
      const buf = be.read(plan) as Int32Array;
      maxItems = Math.max(maxItems, buf[lay.numItems]!);
      const r = evalPacked(
        buf,
        lay,
        be.read(q) as Float64Array,
        be.read(k) as Float64Array,
        be.read(v) as Float64Array,
        p.heads,
        p.kvHeads,
        p.headDim,
        p.scale,
      );
      be.write(out, r.out);
      be.write(lse, r.lse);
      calls++;
    },
  });
  const tok = byteTokenizer();
  const model = Qwen3Model.random(
    makeQwen3Config({
      vocabSize: 300,
      hiddenSize: 24,
      intermediateSize: 40,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 6,
      ropeTheta: 10000,
    }),
    { seed: 21, dtype: "f64", std: 0.3, backend: be },
  );
  const vocab = engineVocab(tok, 300);
  const prompt = tok.encodeChat([{ role: "user", content: "2+3?" }]);
  const gen = (fast: boolean) => {
    const runner = new ModelRunner(model, 160, 4, { graphDecode: fast ? { graphs: false } : false });
    const engine = new Engine(runner, vocab, { numBlocks: 160, blockSize: 4 });
    // Three requests (two forced 3- and 2-branch structures, one plain) so buckets hold padding rows.
    const [a, b] = engine.generateSync([prompt, prompt], {
      mode: "parallel",
      temperature: 0.8,
      seed: 9,
      maxNewTokens: 300,
      minForkBudget: 0,
      forceStructure: parseForceStructure("3x10"),
    });
    const [c] = engine.generateSync([prompt], {
      mode: "parallel",
      temperature: 0.8,
      seed: 4,
      maxNewTokens: 40,
      minForkBudget: 0,
      forceStructure: parseForceStructure("2x9"),
    });
    const steps = runner.decoder?.steps ?? 0;
    engine.dispose();
    return { rs: [a!, b!, c!], steps };
  };
  const slow = gen(false);
  const c0 = calls;
  const fast = gen(true);
  assert.equal(c0, 0, "the generic path does not call the decode attention op");
  assert.ok(fast.steps > 20 && calls === 2 * fast.steps, `decode attention ran ${calls} times in ${fast.steps} steps`);
  assert.ok(maxItems > 1, `plans of up to ${maxItems} items`);
  let max = 0;
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(fast.rs[i]!.ids, slow.rs[i]!.ids);
    slow.rs[i]!.logprobs.forEach((x, j) => {
      const y = fast.rs[i]!.logprobs[j];
      assert.equal(x === null, y === null);
      if (x !== null && y !== null) max = Math.max(max, Math.abs(x - y));
    });
  }
  console.log(
    `decode attention op (cpu stand-in) vs generic: ${fast.steps} fast steps, ${calls} op calls, plans up to ${maxItems} items, max |logprob diff| ${max.toExponential(2)}`,
  );
  assert.ok(max < 1e-10, `max |logprob diff| ${max}`);
});
