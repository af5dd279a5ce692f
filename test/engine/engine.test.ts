/**
 * The engine against its oracles on a tiny random Qwen3 with forced structure (byte tokenizer):
 * - engine equals the naive reference (full forward over the serialized trajectory with the
 *   trainer's layout each step, no cache) token for token at temperature 0 and at temperature 1
 *   with top-p (same derived seeds), several requests batched together, small blocks;
 * - engine equals trainer: one masked forward over the finished trajectory's layout gives the
 *   same greedy choices and log-probs;
 * - scheduler positions equal format/'s trajectoryLayout (and the independent oracle of
 *   test/format/reference-layout.ts) on random parallel trajectories with uneven steps, decoded
 *   through forks and joins by a scripted runner;
 * - sequential mode equals a causal reference; budget and fork rules; the event stream.
 * Max abs log-prob differences are printed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import {
  Engine,
  budgetExhausted,
  engineVocab,
  generateNaive,
  logProbOf,
  mayFork,
  parseForceStructure,
  sampleItems,
} from "../../src/engine/index.ts";
import type { GenerateParams, GenerationResult, StepPlan, StepResult, StepRunner } from "../../src/engine/index.ts";
import { buildNprLayout, trajectoryLayout } from "../../src/format/index.ts";
import { Rng } from "../../src/util/rng.ts";
import { refLayout } from "../format/reference-layout.ts";

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
  { seed: 11, dtype: "f32", std: 0.5, backend: new CpuBackend() },
);
const vocab = engineVocab(tok, model.config.vocabSize);
const prompts = ["What is 2+2?", "Hi", "Count the primes below 30, please."].map((t) => tok.encodeChat([{ role: "user", content: t }]));
const base: Partial<GenerateParams> = { maxNewTokens: 400, minForkBudget: 0, temperature: 0 };

function maxDiff(a: ReadonlyArray<number | null>, b: ReadonlyArray<number | null>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i] === null, b[i] === null, `log-prob ${i}: one side forced, the other sampled`);
    if (a[i] !== null) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  }
  return m;
}

test("engine equals the naive reference (greedy and sampled, batched, forked, joined)", () => {
  const structures = ["3x6,2x4", "1x3", "5x2,1x4,2x3"].map((s) => parseForceStructure(s));
  for (const sampling of [{ temperature: 0 }, { temperature: 1, topP: 0.9, topK: 50, minP: 0.01 }]) {
    const params = structures.map((fs, i) => ({ ...base, ...sampling, forceStructure: fs, seed: 100 + i }));
    const engine = new Engine(model, vocab, { numBlocks: 200, blockSize: 4, maxBatchTokens: 24 });
    const results = engine.generateSync(prompts, params);
    let worst = 0;
    results.forEach((r, i) => {
      const ref = generateNaive(model, vocab, prompts[i]!, params[i]!);
      assert.deepEqual(r.ids, ref.ids, `request ${i} tokens (T=${sampling.temperature})`);
      assert.deepEqual(r.origins, ref.origins);
      worst = Math.max(worst, maxDiff(r.logprobs, ref.logprobs));
      assert.equal(r.finishReason, "stop");
      assert.equal(r.malformed, null, r.malformed ?? "");
      assert.deepEqual(
        r.stats.branchesPerBlock,
        structures[i]!.map((b) => b.branches),
      );
      assert.ok(r.stats.criticalPathTokens < r.stats.serializedTokens || structures[i]!.every((b) => b.branches === 1));
    });
    engine.kv.assertConsistent();
    assert.equal(engine.kv.pool.numFree, 199, "no block leaked");
    console.log(
      `engine vs naive (T=${sampling.temperature}): ${results.map((r) => r.ids.length).join("+")} tokens, max abs log-prob diff ${worst.toExponential(3)}`,
    );
    assert.ok(worst <= 1e-4);
    engine.dispose();
  }
});

test("engine equals trainer: one masked forward re-scores the greedy trajectory", () => {
  const engine = new Engine(model, vocab, { numBlocks: 64, blockSize: 8 });
  const [r] = engine.generateSync([prompts[2]!], { ...base, forceStructure: parseForceStructure("4x9,3x5") }) as [GenerationResult];
  const all = [...r.promptIds, ...r.ids];
  const lay = trajectoryLayout({ promptLen: r.promptIds.length, ids: all, tokenOf: (id) => vocab.parserToken(id), mode: "parallel" });
  assert.ok(lay.ok, lay.ok ? "" : lay.why);
  const layout = lay.layout;
  assert.deepEqual(Array.from(layout.positions.subarray(r.promptIds.length)), r.positions, "engine and trainer positions agree");
  const logits = model.forward(Int32Array.from(all), layout).toArray();
  const V = model.config.vocabSize;
  let worst = 0;
  let mismatches = 0;
  const banned = new Set([...vocab.tagIds, ...vocab.stopIds]);
  for (let i = 0; i < r.ids.length; i++) {
    if (r.logprobs[i] === null) continue;
    const t = r.promptIds.length + i;
    const row = logits.subarray((t - 1) * V, t * V);
    worst = Math.max(worst, Math.abs(logProbOf(row, r.ids[i]!) - r.logprobs[i]!));
    if (r.origins[i] === "sampled") {
      let best = -1;
      for (let v = 0; v < V; v++) if (!banned.has(v) && (best < 0 || row[v]! > row[best]!)) best = v;
      if (best !== r.ids[i]) mismatches++;
    }
  }
  console.log(`engine vs trainer: ${r.ids.length} tokens, ${mismatches} mismatches, max abs log-prob diff ${worst.toExponential(3)}`);
  assert.equal(mismatches, 0);
  assert.ok(worst <= 1e-4);
  engine.dispose();
});

/**
 * A random canonical NPR response in byte-tokenizer ids, ending in a stop id: 1-3 blocks of 1-5
 * plans, steps of 0-9 free tokens after their `N:` (so the longest step decides the takeaway's
 * position), text before, between and after blocks. No digits in free text (plan numbers stay
 * `N:`), no tags or stop ids in it.
 */
function randomResponse(rng: Rng): number[] {
  const free = tok.encode("abc xyz+-=\n");
  const words = (lo: number, hi: number) => Array.from({ length: lo + rng.int(hi - lo + 1) }, () => free[rng.int(free.length)]!);
  const t = (name: Parameters<typeof vocab.tag>[0]) => vocab.tag(name);
  const out: number[] = [];
  if (rng.next() < 0.3) out.push(...words(1, 3));
  const numBlocks = 1 + rng.int(3);
  for (let b = 0; b < numBlocks; b++) {
    if (b > 0 && rng.next() < 0.4) out.push(...words(1, 3));
    const n = 1 + rng.int(5);
    out.push(t("<guideline>"));
    for (let k = 1; k <= n; k++) out.push(t("<plan>"), ...vocab.numberIds(String(k)), ...words(0, 3), t("</plan>"));
    out.push(t("</guideline>"));
    for (let k = 1; k <= n; k++) out.push(t("<step>"), ...vocab.numberIds(String(k)), ...words(0, 9), t("</step>"));
    out.push(t("<takeaway>"), ...words(0, 3), t("</takeaway>"));
  }
  out.push(...words(0, 3), [...vocab.stopIds][0]!);
  return out;
}

/**
 * Plays one request's scripted trajectory `full` (prompt + response): each sequence's computed ids
 * are checked against the script, and every sampled token is the script's next one. A branch's
 * first item starts at its `<step>`, a join's at its `<takeaway>`: each new sequence takes the
 * next unclaimed one in serialized order (forks and joins happen in that order).
 */
class ScriptedRunner implements StepRunner {
  private readonly full: readonly number[];
  private readonly cursor = new Map<number, number>();
  private readonly starts: Map<number, number[]>;

  constructor(full: readonly number[], promptLen: number) {
    this.full = full;
    const starts = (tag: number) => full.flatMap((id, i) => (i >= promptLen && id === tag ? [i] : []));
    this.starts = new Map([vocab.tag("<step>"), vocab.tag("<takeaway>")].map((tag) => [tag, starts(tag)]));
  }

  run(plan: StepPlan): StepResult {
    // Every item moves its sequence's cursor (prefill chunks and forced tokens sample nothing).
    const next = plan.items.map((it) => {
      let at = this.cursor.get(it.seqId);
      if (at === undefined) at = this.cursor.size === 0 ? 0 : this.starts.get(it.ids[0]!)!.shift()!;
      assert.deepEqual(it.ids, this.full.slice(at, at + it.ids.length), `sequence ${it.seqId} computes the scripted ids from ${at}`);
      this.cursor.set(it.seqId, at + it.ids.length);
      return this.full[at + it.ids.length]!;
    });
    return sampleItems(plan, (i) => {
      const row = new Float64Array(vocab.size);
      row[next[i]!] = 50;
      return row;
    });
  }

  dispose(): void {}
}

test("scheduler positions equal format/'s trajectoryLayout and the oracle (random parallel trajectories)", () => {
  const rng = new Rng(20250611);
  let tokens = 0;
  let blocks = 0;
  let branches = 0;
  let uneven = 0;
  for (let n = 0; n < 60; n++) {
    const prompt = tok.encodeChat([{ role: "user", content: `q${n} <step> 1: not a tag` }]);
    const response = randomResponse(rng);
    const full = [...prompt, ...response];
    // Small blocks and batches: prefill chunks, partial tails and joins at odd offsets.
    const engine = new Engine(new ScriptedRunner(full, prompt.length), vocab, {
      numBlocks: 256,
      blockSize: 1 + rng.int(6),
      maxBatchTokens: 3 + rng.int(30),
    });
    const [r] = engine.generateSync([prompt], { temperature: 0, maxNewTokens: 4000, minForkBudget: 0 }) as [GenerationResult];
    assert.equal(r.finishReason, "stop", r.malformed ?? "");
    assert.deepEqual(r.ids, response, "the engine serialized the scripted trajectory");
    const lay = trajectoryLayout({ promptLen: prompt.length, ids: full, tokenOf: (id) => vocab.parserToken(id), mode: "parallel" });
    assert.ok(lay.ok, lay.ok ? "" : lay.why);
    assert.deepEqual(
      r.positions,
      Array.from(lay.layout.positions.subarray(prompt.length)),
      `trajectory ${n}: scheduler vs trajectoryLayout`,
    );
    const oracle = refLayout(
      prompt.length,
      full.map((id) => vocab.parserToken(id)),
    );
    assert.ok(oracle, "the oracle accepts the trajectory");
    assert.deepEqual(r.positions, oracle.positions.slice(prompt.length), `trajectory ${n}: scheduler vs oracle`);
    // Blocks whose steps differ in length: there only the longest step places the takeaway.
    const lengths = new Map<number, Set<number>>();
    for (const sp of r.tree) if (sp.kind === "branch") lengths.set(sp.block, (lengths.get(sp.block) ?? new Set()).add(sp.end - sp.start));
    uneven += [...lengths.values()].filter((l) => l.size > 1).length;
    tokens += r.ids.length;
    blocks += r.stats.blocks;
    branches += r.stats.branchesPerBlock.reduce((a, b) => a + b, 0);
    engine.kv.assertConsistent();
    assert.equal(engine.kv.pool.numFree, 255, "no block leaked");
    engine.dispose();
  }
  console.log(
    `scheduler vs trajectoryLayout vs oracle: 60 trajectories, ${tokens} tokens, ${blocks} blocks ` +
      `(${uneven} with uneven steps), ${branches} branches: positions identical`,
  );
  assert.ok(uneven > 20, "uneven blocks are exercised");
});

test("sequential mode equals a causal reference and serializes the same structure", () => {
  const fs = parseForceStructure("2x5");
  const params = { ...base, mode: "sequential" as const, forceStructure: fs };
  const engine = new Engine(model, vocab, { numBlocks: 64, blockSize: 4, maxBatchTokens: 7 });
  const [r] = engine.generateSync([prompts[0]!], params) as [GenerationResult];
  const ref = generateNaive(model, vocab, prompts[0]!, params);
  assert.deepEqual(r.ids, ref.ids);
  const d = maxDiff(
    r.logprobs.map((x, i) => (r.origins[i] === "engine" ? null : x)),
    ref.logprobs,
  );
  console.log(`sequential vs naive: max abs log-prob diff ${d.toExponential(3)}`);
  assert.ok(d <= 1e-4);
  assert.equal(r.stats.blocks, 0);
  assert.equal(r.stats.criticalPathTokens, r.stats.serializedTokens);
  assert.ok(buildNprLayout(r.promptIds.length, tok.parserTokens([...r.promptIds, ...r.ids])).ok, "a complete NPR response");
  engine.dispose();
});

test("budget rules: branch serialized estimate, critical path, fork declined, truncation", () => {
  assert.equal(budgetExhausted({ serializedBefore: 10, own: 5, degree: 3, criticalPath: 12 }, 25), true);
  assert.equal(budgetExhausted({ serializedBefore: 10, own: 4, degree: 3, criticalPath: 12 }, 25), false);
  assert.equal(budgetExhausted({ serializedBefore: 0, own: 0, degree: 1, criticalPath: 25 }, 25), true);
  assert.equal(mayFork({ serializedBefore: 100, own: 0, degree: 1, criticalPath: 100 }, 1124, 1024, 0, 5), true);
  assert.equal(mayFork({ serializedBefore: 101, own: 0, degree: 1, criticalPath: 101 }, 1124, 1024, 0, 5), false);
  assert.equal(mayFork({ serializedBefore: 0, own: 0, degree: 1, criticalPath: 0 }, 1124, 0, 5, 5), false);

  const engine = new Engine(model, vocab, { numBlocks: 64, blockSize: 4 });
  const fs = parseForceStructure("3x20");
  // Default minForkBudget 1024 > maxNewTokens: the fork is declined, decoding goes on, malformed.
  const [declined, truncated] = engine.generateSync(
    [prompts[0]!, prompts[1]!],
    [
      { temperature: 0, maxNewTokens: 200, forceStructure: fs },
      { temperature: 0, maxNewTokens: 40, minForkBudget: 0, forceStructure: fs },
    ],
  ) as [GenerationResult, GenerationResult];
  assert.equal(declined.stats.forksDeclined, 1);
  assert.equal(declined.stats.blocks, 0);
  assert.equal(declined.finishReason, "malformed");
  // 3 branches: the serialized estimate hits 40 well before any branch ends.
  assert.equal(truncated.finishReason, "length");
  assert.match(truncated.malformed ?? "", /budget exhausted inside step/);
  assert.ok(truncated.stats.serializedTokens <= 40 + 3);
  engine.kv.assertConsistent();
  assert.equal(engine.kv.pool.numFree, 63);
  engine.dispose();
});

test("event stream: branches open, close and join; one finished event per request", async () => {
  const engine = new Engine(model, vocab, { numBlocks: 64, blockSize: 4 });
  const counts: Record<string, number> = {};
  let tokens = 0;
  for await (const ev of engine.stream([prompts[0]!], { ...base, forceStructure: parseForceStructure("2x3,3x2") })) {
    counts[ev.type] = (counts[ev.type] ?? 0) + 1;
    if (ev.type === "finished") tokens = ev.result.ids.length;
  }
  assert.deepEqual(counts, { "branch-opened": 5, "branch-closed": 5, joined: 2, finished: 1, token: counts["token"] });
  assert.ok(counts["token"]! > 0 && counts["token"]! < tokens, "engine-forced tokens are not sampled");
  engine.dispose();
});
