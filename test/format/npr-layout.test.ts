/**
 * The NPR layout (src/format/npr-layout.ts) against the independent oracle of
 * reference-layout.ts: the worked example of reference/npr.md §4.3 exactly, random canonical
 * trajectories (prompts with tag strings) position by position and range by range, branch
 * isolation, every malformed mutation rejected, incomplete layouts, token canonicalization;
 * trajectoryLayout (strings or ids + tokenOf, parallel or sequential) and the exported position rule.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  buildNprLayout,
  canonicalizeTokens,
  layoutToJson,
  nextPosition,
  stepStartPosition,
  takeawayPosition,
  trajectoryLayout,
} from "../../src/format/index.ts";
import { causalLayout } from "../../src/util/layout.ts";
import { Rng } from "../../src/util/rng.ts";
import { MUTATIONS, mutate, randomTrajectory, refLayout } from "./reference-layout.ts";

const EXAMPLE = [
  "P",
  "<|im_end|>",
  "A",
  "<guideline>",
  "<plan>",
  "1:a",
  "</plan>",
  "<plan>",
  "2:b",
  "</plan>",
  "</guideline>",
  "<step>",
  "1:",
  "x",
  "</step>",
  "<step>",
  "2:",
  "y",
  "z",
  "</step>",
  "<takeaway>",
  "t",
  "</takeaway>",
  "ans",
  "<|im_end|>",
];

test("worked example of reference/npr.md §4.3", () => {
  const r = buildNprLayout(3, EXAMPLE);
  assert.ok(r.ok);
  const j = layoutToJson(r.layout);
  assert.deepEqual(j.positions, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
  for (let i = 0; i <= 14; i++) assert.deepEqual(j.visible[i], [[0, i + 1]], `token ${i}`);
  for (let i = 15; i <= 19; i++)
    assert.deepEqual(
      j.visible[i],
      [
        [0, 11],
        [15, i + 1],
      ],
      `token ${i}`,
    );
  for (let i = 20; i < EXAMPLE.length; i++) assert.deepEqual(j.visible[i], [[0, i + 1]], `token ${i}`);
});

test("random canonical trajectories match the oracle exactly (500 seeded cases)", () => {
  const rng = new Rng(20251209);
  let tokens = 0;
  for (let n = 0; n < 500; n++) {
    const t = randomTrajectory(rng);
    const want = refLayout(t.promptLen, t.tokens);
    assert.ok(want, `oracle rejected a canonical trajectory: ${JSON.stringify(t)}`);
    const got = buildNprLayout(t.promptLen, t.tokens);
    assert.ok(got.ok, `rejected: ${!got.ok && got.why} ${JSON.stringify(t)}`);
    assert.deepEqual(layoutToJson(got.layout), want, JSON.stringify(t));
    tokens += t.tokens.length;
  }
  console.log(`500 trajectories, ${tokens} tokens: positions and visible ranges identical`);
});

test("branch isolation: no step sees a sibling; takeaway and later see every step", () => {
  const rng = new Rng(7);
  for (let n = 0; n < 100; n++) {
    const t = randomTrajectory(rng, { maxBlocks: 2 });
    const r = buildNprLayout(t.promptLen, t.tokens);
    assert.ok(r.ok);
    const { visible, positions } = layoutToJson(r.layout);
    const sees = (i: number, j: number) => visible[i]!.some(([a, b]) => a <= j && j < b);
    // Re-derive step spans from the response tokens.
    let open = -1;
    let spans: Array<[number, number]> = [];
    for (let i = t.promptLen; i < t.tokens.length; i++) {
      const tok = t.tokens[i];
      if (tok === "<guideline>") spans = [];
      if (tok === "<step>") open = i;
      if (tok === "</step>") spans.push([open, i]);
      if (tok === "<takeaway>") {
        for (const [s1, e1] of spans)
          for (const [s2, e2] of spans) {
            if (s1 === s2) continue;
            for (let a = s1; a <= e1; a++) for (let b = s2; b <= e2; b++) assert.ok(!sees(a, b), `step token ${a} sees sibling token ${b}`);
          }
        for (const [s, e] of spans) for (let b = s; b <= e; b++) assert.ok(sees(i, b), `takeaway ${i} misses step token ${b}`);
        // One past the largest position any step used.
        const maxPos = Math.max(...spans.map(([, e]) => positions[e]!));
        assert.equal(positions[i], maxPos + 1);
        // Every step restarts at the same position.
        assert.equal(new Set(spans.map(([s]) => positions[s])).size, 1);
      }
    }
  }
});

test("every malformed mutation is rejected, with a reason naming a token", () => {
  const rng = new Rng(99);
  const counts: Record<string, number> = {};
  for (let n = 0; n < 600; n++) {
    const kind = MUTATIONS[n % MUTATIONS.length]!;
    const t = mutate(rng, randomTrajectory(rng), kind);
    assert.equal(refLayout(t.promptLen, t.tokens), null, `oracle accepted mutation "${kind}": ${JSON.stringify(t)}`);
    const r = buildNprLayout(t.promptLen, t.tokens);
    assert.ok(!r.ok, `accepted mutation "${kind}": ${JSON.stringify(t)}`);
    assert.match(r.why, /^token \d+: /);
    counts[kind] = (counts[kind] ?? 0) + 1;
  }
  console.log("rejected per mutation:", JSON.stringify(counts));
});

test("specific malformed structures carry their reason", () => {
  const P = ["q", "<step>"]; // prompt tags are opaque
  const cases: Array<[string[], RegExp]> = [
    [["<guideline>", "</guideline>"], /has no plan/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "\n", "<step>"], /text "\\n" after <\/guideline>/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "<step>", "<guideline>"], /nested <guideline> inside step 1/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "<takeaway>"], /0 step\(s\) for 1 plan/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "<step>", "</step>", "<step>"], /step 2 in block 1, which has 1 plan/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "<step>", "x"], /ends inside step 1/],
    [["</step>"], /<\/step> outside a block/],
    [["text"], /no <guideline> block/],
  ];
  for (const [resp, re] of cases) {
    const r = buildNprLayout(P.length, [...P, ...resp]);
    assert.ok(!r.ok, JSON.stringify(resp));
    assert.match(r.why, re);
  }
});

test("allowIncomplete lays out a prefix exactly as the full layout's first tokens", () => {
  const rng = new Rng(3);
  for (let n = 0; n < 50; n++) {
    const t = randomTrajectory(rng);
    const full = layoutToJson((buildNprLayout(t.promptLen, t.tokens) as { ok: true; layout: never }).layout);
    const cut = t.promptLen + rng.int(t.tokens.length - t.promptLen + 1);
    const part = buildNprLayout(t.promptLen, t.tokens.slice(0, cut), { allowIncomplete: true });
    assert.ok(part.ok);
    const j = layoutToJson(part.layout);
    assert.deepEqual(j.positions, full.positions.slice(0, cut));
    assert.deepEqual(j.visible, full.visible.slice(0, cut));
  }
});

test("canonicalizeTokens drops whitespace only where the canonical form has none (round trip)", () => {
  const rng = new Rng(11);
  for (let n = 0; n < 100; n++) {
    const t = randomTrajectory(rng);
    // Insert whitespace after </guideline> and after every </step>, as NPR's engine writes.
    const noisy: string[] = [];
    t.tokens.forEach((tok, i) => {
      noisy.push(tok);
      if (i >= t.promptLen && (tok === "</guideline>" || tok === "</step>")) noisy.push(rng.next() < 0.5 ? "\n" : " \n ");
    });
    assert.ok(!buildNprLayout(t.promptLen, noisy).ok);
    const c = canonicalizeTokens(t.promptLen, noisy);
    assert.deepEqual(c.tokens, t.tokens);
    assert.deepEqual(
      c.kept.map((k) => noisy[k]),
      t.tokens,
    );
  }
});

test("the position rule on the worked example: steps restart at g + 1, the takeaway follows the longest step", () => {
  const g = 10; // </guideline> of EXAMPLE
  assert.equal(stepStartPosition(g), 11);
  assert.equal(takeawayPosition(g, 5), 16); // step 2 is <step> 2: y z </step>, 5 tokens
  assert.equal(nextPosition(16), 17);
  const r = buildNprLayout(3, EXAMPLE);
  assert.ok(r.ok);
  assert.equal(r.layout.positions[11], stepStartPosition(g));
  assert.equal(r.layout.positions[15], stepStartPosition(g));
  assert.equal(r.layout.positions[20], takeawayPosition(g, 5));
});

test("trajectoryLayout: ids + tokenOf equals token strings; sequential is causal whatever the text", () => {
  const rng = new Rng(5);
  for (let n = 0; n < 100; n++) {
    const t = randomTrajectory(rng);
    const vocab = [...new Set(t.tokens)];
    const ids = t.tokens.map((x) => vocab.indexOf(x));
    const byIds = trajectoryLayout({ promptLen: t.promptLen, ids: Int32Array.from(ids), tokenOf: (id) => vocab[id]!, mode: "parallel" });
    const byTokens = trajectoryLayout({ promptLen: t.promptLen, tokens: t.tokens, mode: "parallel" });
    assert.ok(byIds.ok && byTokens.ok);
    const want = refLayout(t.promptLen, t.tokens);
    assert.deepEqual(layoutToJson(byIds.layout), want);
    assert.deepEqual(layoutToJson(byTokens.layout), want);
    // A prefix cut inside the last block lays out only with allowIncomplete, as buildNprLayout's.
    const cut = t.tokens.lastIndexOf("</takeaway>");
    assert.equal(trajectoryLayout({ promptLen: t.promptLen, tokens: t.tokens.slice(0, cut), mode: "parallel" }).ok, false);
    const part = trajectoryLayout({ promptLen: t.promptLen, tokens: t.tokens.slice(0, cut), mode: "parallel", allowIncomplete: true });
    assert.ok(part.ok);
    assert.deepEqual(layoutToJson(part.layout).positions, want!.positions.slice(0, cut));
  }
  // Sequential mode: the baseline decodes plain text (or a structure it does not lay out in parallel).
  const text = ["q", "<|im_end|>", "</step>", "x", "<takeaway>", "y"];
  const seq = trajectoryLayout({ promptLen: 2, tokens: text, mode: "sequential" });
  assert.ok(seq.ok);
  assert.deepEqual(layoutToJson(seq.layout), layoutToJson(causalLayout(text.length)));
  const par = trajectoryLayout({ promptLen: 2, tokens: text, mode: "parallel" });
  assert.ok(!par.ok);
  assert.equal(par.at, 2);
  assert.match(par.why, /^token 2: /);
});
