/**
 * The model consumes the NPR layout: one masked forward over a multi-branch trajectory (prefix,
 * three parallel steps, takeaway, conclusion; byte tokenizer, tiny random Qwen3 in float64) equals
 * (1) separate forwards of prefix + each branch alone at the same positions, and (2) the engine's
 * way: prefix into a KV cache, each branch decoded against the prefix only, the join continuing
 * over the concatenated cache at one past the longest branch. Max differences are printed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { buildNprLayout } from "../../src/format/npr-layout.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { CountdownTask } from "../../src/tasks/index.ts";
import { causalLayout, segmentLayout } from "../../src/util/layout.ts";
import type { Layout } from "../../src/util/layout.ts";
import { diffStats } from "../util/check-close.ts";
import { cpu } from "./helpers.ts";

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
  { seed: 17, dtype: "f64", std: 0.3, backend: cpu },
);

// A real multi-branch trajectory: the chat prompt (which itself mentions tags) + a Countdown NPR solution.
const task = new CountdownTask(4, 11);
const ex = task.get(2);
const promptIds = tok.encodeChat([{ role: "user", content: `${ex.problem} Use <guideline> and <step> tags.` }]);
const responseIds = tok.encode(task.parallelSolution(ex, 5));
const ids = [...promptIds, ...responseIds];
const strs = tok.parserTokens(ids);
const P = promptIds.length;

/** Index spans of the response's structure. */
const gIdx = strs.indexOf("</guideline>", P);
const steps: Array<[number, number]> = [];
for (let i = gIdx + 1; strs[i] === "<step>"; ) {
  const e = strs.indexOf("</step>", i);
  steps.push([i, e + 1]);
  i = e + 1;
}
const tIdx = steps[steps.length - 1]![1];

const V = 320;
const rowsOf = (flat: ArrayLike<number>, from: number, to: number) => Array.prototype.slice.call(flat, from * V, to * V) as number[];

test("one masked forward equals separate forwards of prefix + each branch at the same positions", () => {
  assert.ok(steps.length >= 2, "the trajectory needs several branches");
  assert.equal(strs[tIdx], "<takeaway>");
  const r = buildNprLayout(P, strs);
  assert.ok(r.ok, !r.ok ? r.why : "");
  const full = model.forward(ids, r.layout).toArray(); // [T, V]
  const pos = r.layout.positions;
  let worst = 0;
  for (const [s, e] of steps) {
    // Prefix (prompt .. </guideline>) then this branch alone, causal, positions from the NPR layout.
    const idx = [...Array.from({ length: gIdx + 1 }, (_, i) => i), ...Array.from({ length: e - s }, (_, k) => s + k)];
    const sepPos = idx.map((i) => pos[i]!);
    const lay = segmentLayout(
      sepPos,
      sepPos.map((_, i) => [[0, i + 1] as [number, number]]),
    );
    const sep = model
      .forward(
        idx.map((i) => ids[i]!),
        lay,
      )
      .toArray();
    const d = diffStats(rowsOf(sep, gIdx + 1, idx.length), rowsOf(full, s, e));
    const dPrefix = diffStats(rowsOf(sep, 0, gIdx + 1), rowsOf(full, 0, gIdx + 1));
    console.log(
      `branch ${s}..${e} (${e - s} tokens): max abs diff ${d.max.toExponential(2)}, mean ${d.mean.toExponential(2)}; prefix max ${dPrefix.max.toExponential(2)}`,
    );
    worst = Math.max(worst, d.max, dPrefix.max);
  }
  assert.ok(worst < 1e-9, `max diff ${worst}`);
  // The check can fail: a causal (unmasked) forward differs on the second branch.
  const causal = model
    .forward(
      ids,
      segmentLayout(
        pos,
        Array.from(pos, (_, i) => [[0, i + 1] as [number, number]]),
      ),
    )
    .toArray();
  const leak = diffStats(rowsOf(causal, steps[1]![0], steps[1]![1]), rowsOf(full, steps[1]![0], steps[1]![1]));
  console.log(`causal mask instead (sibling leak): max abs diff ${leak.max.toExponential(2)}`);
  assert.ok(leak.max > 1e-3);
});

test("the engine's cached fork/join gives the same logits as the one masked forward", () => {
  const r = buildNprLayout(P, strs);
  assert.ok(r.ok);
  const full = model.forward(ids, r.layout).toArray();
  const pos = r.layout.positions;
  const kv = model.newKVCache(ids.length);
  const parts: number[][] = [];
  // Prefix: prompt through </guideline>.
  parts.push(Array.from(model.forward(ids.slice(0, gIdx + 1), causalLayout(gIdx + 1), kv).toArray()));
  // Each branch sees the prefix keys and its own, never the earlier branches already in the cache.
  for (const [s, e] of steps) {
    const past = kv.length;
    const T = e - s;
    const lay: Layout = segmentLayout(
      Array.from({ length: T }, (_, k) => pos[gIdx]! + 1 + k),
      Array.from(
        { length: T },
        (_, k) =>
          [
            [0, gIdx + 1],
            [past, past + k + 1],
          ] as Array<[number, number]>,
      ),
      past + T,
    );
    parts.push(Array.from(model.forward(ids.slice(s, e), lay, kv).toArray()));
  }
  // Join: <takeaway> onwards over the concatenated cache, one past the longest branch.
  const longest = Math.max(...steps.map(([s, e]) => e - s));
  const rest = ids.length - tIdx;
  parts.push(Array.from(model.forward(ids.slice(tIdx), causalLayout(rest, kv.length, pos[gIdx]! + 1 + longest), kv).toArray()));
  const d = diffStats(parts.flat(), full);
  console.log(
    `cached fork/join over ${ids.length} tokens, ${steps.length} branches: max abs diff ${d.max.toExponential(2)}, mean ${d.mean.toExponential(2)}`,
  );
  assert.ok(d.max < 1e-9);
});
