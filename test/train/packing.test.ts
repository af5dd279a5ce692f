/**
 * Packing is exact: several examples (sequential and NPR-parallel) in one row give each example
 * the same log-probs, to ~1e-12 in float64, as a forward over that example alone; no example
 * sees another's tokens; targets stop at each example's end. Also the encoder's targets (loss on
 * the response only) and the parallel layout (steps restart, blind to each other).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { ExampleEncoder, IGNORE, encodeAll } from "../../src/train/examples.ts";
import type { EncodedExample } from "../../src/train/examples.ts";
import { concatLayouts, fillRow, packExamples } from "../../src/train/packing.ts";
import { perExampleLoss, rowLogprobs } from "../../src/train/losses.ts";
import { checkLayout, segmentLayout, visibleRanges } from "../../src/util/layout.ts";
import { diffStats } from "../util/check-close.ts";
import { PARALLEL, SEQUENTIAL, tinyModel } from "./helpers.ts";

const tok = byteTokenizer();
const seq = new ExampleEncoder(tok, { mode: "sequential" });
const par = new ExampleEncoder(tok, { mode: "parallel" });

function enc(e: ExampleEncoder, i: number, list = e === par ? PARALLEL : SEQUENTIAL): EncodedExample {
  const r = e.encode(list[i]!);
  assert.ok(r.ok, r.ok ? "" : r.why);
  return r.example;
}

test("targets: the response only, next token, nothing past the example's end", () => {
  const ex = enc(seq, 0);
  const P = ex.promptLen;
  const L = ex.ids.length;
  assert.equal(ex.numLossTokens, L - P);
  for (let i = 0; i < L; i++) {
    const want = i >= P - 1 && i < L - 1 ? ex.ids[i + 1] : IGNORE;
    assert.equal(ex.targets[i], want, `target ${i}`);
  }
  // The response ends with the end-of-turn token, the prompt with the assistant header.
  assert.equal(ex.ids[L - 1], seq.eosId);
  assert.ok(tok.decode(Array.from(ex.ids.subarray(0, P))).endsWith("<|im_start|>assistant\n"));
});

test("parallel encoding: same tokens as sequential, steps restart their positions and do not see each other", () => {
  const p = enc(par, 0);
  const s = enc(seq, 0, PARALLEL);
  assert.deepEqual(Array.from(p.ids), Array.from(s.ids), "only the layout differs");
  assert.deepEqual(
    Array.from(s.layout.positions),
    Array.from({ length: s.ids.length }, (_, i) => i),
  );
  const step = tok.tagId("<step>");
  const starts = [...p.ids.keys()].filter((i) => i >= p.promptLen && p.ids[i] === step);
  assert.equal(starts.length, 2);
  assert.equal(p.layout.positions[starts[0]!], p.layout.positions[starts[1]!], "both steps start at g + 1");
  // The second step's first token sees the prefix up to </guideline> and itself, not step 1.
  const ranges = visibleRanges(p.layout, starts[1]!);
  assert.deepEqual(ranges, [
    [0, starts[0]!],
    [starts[1]!, starts[1]! + 1],
  ]);
  assert.equal(checkLayout(p.layout), null);
});

test("a malformed parallel trajectory is dropped with the parser's reason; over-budget examples too", () => {
  const bad = { prompt: "x", response: "<guideline><plan>1: a</plan></guideline><step>1: b</step>no takeaway" };
  const r = par.encode(bad);
  assert.equal(r.ok, false);
  const set = encodeAll(par, [PARALLEL[0]!, bad, PARALLEL[1]!], 10_000);
  assert.deepEqual(set.kept, [0, 2]);
  assert.equal(set.dropped[0]!.index, 1);
  const tight = encodeAll(seq, SEQUENTIAL, enc(seq, 0).ids.length);
  assert.ok(tight.kept.includes(0) && tight.dropped.length >= 1 && /micro-batch budget/.test(tight.dropped[0]!.why));
});

test("concatLayouts shifts key ranges by each sequence's offset and keeps positions", () => {
  const a = enc(seq, 1);
  const b = enc(par, 0);
  const l = concatLayouts([a.layout, b.layout]);
  assert.equal(checkLayout(l), null);
  const off = a.ids.length;
  for (let i = 0; i < b.ids.length; i++) {
    assert.equal(l.positions[off + i], b.layout.positions[i]);
    assert.deepEqual(
      visibleRanges(l, off + i),
      visibleRanges(b.layout, i).map(([s, e]) => [s + off, e + off]),
    );
  }
});

test("packed per-example losses equal separate forwards (f64, mixed sequential and parallel rows)", () => {
  const model = tinyModel("f64");
  const examples = [enc(seq, 0), enc(par, 0), enc(seq, 2), enc(par, 1), enc(seq, 1)];
  const row = packExamples(examples, [10, 11, 12, 13, 14]);
  assert.deepEqual(
    row.spans.map((s) => s.index),
    [10, 11, 12, 13, 14],
  );
  assert.equal(
    row.numLossTokens,
    examples.reduce((n, e) => n + e.numLossTokens, 0),
  );
  // Each example's last token predicts nothing: no loss crosses into the next example.
  for (const s of row.spans) assert.equal(row.targets[s.start + s.length - 1], IGNORE);
  const packedLp = rowLogprobs(model, row);
  const packed = perExampleLoss(packedLp, row.targets, row.spans);
  const alone: number[] = [];
  const aloneLp = new Float64Array(packedLp.length);
  examples.forEach((ex, k) => {
    const single = packExamples([ex]);
    const lp = rowLogprobs(model, single);
    aloneLp.set(lp, row.spans[k]!.start);
    alone.push(perExampleLoss(lp, single.targets, single.spans)[0]!);
  });
  const lossDiff = diffStats(packed, alone);
  const tokenDiff = diffStats(packedLp, aloneLp);
  console.log(
    `packed vs separate: per-example loss max |d| ${lossDiff.max.toExponential(2)} mean ${lossDiff.mean.toExponential(2)}; ` +
      `per-token log-prob max |d| ${tokenDiff.max.toExponential(2)} mean ${tokenDiff.mean.toExponential(2)} (${row.ids.length} tokens, losses ${packed.map((x) => x.toFixed(4)).join(" ")})`,
  );
  assert.ok(lossDiff.max < 1e-12, `per-example loss differs by ${lossDiff.max}`);
  assert.ok(tokenDiff.max < 1e-12, `per-token log-prob differs by ${tokenDiff.max}`);
  // The check can fail: the same positions with causal visibility over the whole row leak.
  const leakyRow = {
    ...row,
    layout: segmentLayout(
      row.layout.positions,
      Array.from({ length: row.ids.length }, (_, i) => [[0, i + 1] as const]),
    ),
  };
  const leakyLoss = perExampleLoss(rowLogprobs(model, leakyRow), row.targets, row.spans);
  assert.ok(diffStats(leakyLoss, alone).max > 1e-6, "a leaking layout must change later examples' losses");
});

test("fillRow takes examples in stream order while they fit, never splits one", () => {
  const lengths = [5, 4, 6, 3, 9, 1];
  let at = 0; // an endless stream over the six examples, as DataOrder is
  const next = () => at++ % lengths.length;
  const peek = () => at % lengths.length;
  const rows = Array.from({ length: 4 }, () => fillRow(next, peek, (i) => lengths[i]!, 10));
  assert.deepEqual(rows, [
    [0, 1],
    [2, 3],
    [4, 5],
    [0, 1],
  ]);
});
