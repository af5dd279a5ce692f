/**
 * The maxPlans option: NPR's 1-5 plan rule stays the default (parser, engine params), and a
 * forced structure wider than 5 runs only when maxPlans is raised explicitly. An 8-branch block
 * decoded in parallel is checked against an independent oracle: each branch re-scored by one
 * causal forward over prompt + trunk + that branch alone (its positions continue from the
 * guideline, so a causal layout is its exact context); greedy choices and log-probs must agree.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Engine, engineVocab, forcedMaxPlans, logProbOf, parseForceStructure, resolveParams } from "../../src/engine/index.ts";
import type { GenerateParams } from "../../src/engine/index.ts";
import { NprParser } from "../../src/format/npr-parser.ts";
import { noGrad } from "../../src/tensor/index.ts";
import { UsageError } from "../../src/util/errors.ts";
import { causalLayout } from "../../src/util/layout.ts";

function guideline(n: number): string[] {
  const out = ["<guideline>"];
  for (let i = 1; i <= n; i++) out.push("<plan>", `${i}: do part ${i}`, "</plan>");
  out.push("</guideline>");
  return out;
}

function lastEvent(p: NprParser, tokens: string[]): ReturnType<NprParser["push"]> {
  let ev: ReturnType<NprParser["push"]> = { kind: "token", region: "free" };
  for (const t of tokens) ev = p.push(t);
  return ev;
}

test("parser: 1-5 plans by default; maxPlans raises the limit and survives clone and branch", () => {
  assert.equal(lastEvent(new NprParser(), guideline(5)).kind, "fork");
  const six = lastEvent(new NprParser(), guideline(6));
  assert.equal(six.kind, "malformed");
  assert.match(six.kind === "malformed" ? six.reason : "", /6 plans; at most 5/);

  const p8 = new NprParser({ maxPlans: 8 });
  const ev = lastEvent(p8, guideline(8));
  assert.deepEqual(ev, { kind: "fork", plans: ["1", "2", "3", "4", "5", "6", "7", "8"] });
  // Branch 7's parser expects its <step>, and a clone keeps the raised limit for later blocks.
  const b7 = p8.branch(7);
  assert.equal(lastEvent(b7, ["<step>", "8: x", "</step>"]).kind, "branch-end");
  assert.equal(lastEvent(b7, ["<takeaway>", "t", "</takeaway>"]).kind, "token");
  assert.equal(lastEvent(b7.clone(), guideline(8)).kind, "fork");
  assert.equal(lastEvent(b7.clone(), guideline(9)).kind, "malformed");
  assert.throws(() => new NprParser({ maxPlans: 0 }), RangeError);
});

test("engine params: a forced block wider than maxPlans is a usage error; forcedMaxPlans fits it", () => {
  const s = parseForceStructure("8x4,2x3");
  assert.equal(forcedMaxPlans(s), 8);
  assert.equal(forcedMaxPlans(parseForceStructure("3x4")), 5);
  assert.equal(forcedMaxPlans(null), 5);
  assert.equal(resolveParams({}).maxPlans, 5);
  assert.throws(
    () => resolveParams({ forceStructure: s }),
    (e: unknown) => e instanceof UsageError && /8 branches, more than max_plans = 5/.test(e.message),
  );
  assert.equal(resolveParams({ forceStructure: s, maxPlans: 8 }).maxPlans, 8);
  assert.throws(() => parseForceStructure("65x1"), UsageError);
  assert.throws(() => parseForceStructure("6x1", "--force-structure", 5), UsageError);
});

test("an 8-branch forced block decodes in parallel; each branch equals a causal forward over its own context", () => {
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
    { seed: 23, dtype: "f32", std: 0.5, backend: new CpuBackend() },
  );
  const vocab = engineVocab(tok, 320);
  const prompt = tok.encodeChat([{ role: "user", content: "eight ways at once" }]);
  const forceStructure = parseForceStructure("8x5");
  // No repetition penalty, so a branch's greedy choice is the plain argmax over allowed ids.
  const params: Partial<GenerateParams> = {
    temperature: 0,
    maxNewTokens: 1000,
    minForkBudget: 0,
    forceStructure,
    maxPlans: forcedMaxPlans(forceStructure),
    repetitionPenalty: 1,
    branchRepetitionPenalty: 1,
    seed: 4,
  };
  const engine = new Engine(model, vocab, { numBlocks: 64, blockSize: 4, maxBatchTokens: 64 });
  const [r] = engine.generateSync([prompt], params);
  engine.dispose();
  assert.equal(r!.finishReason, "stop");
  assert.equal(r!.malformed, null);
  assert.deepEqual(r!.stats.branchesPerBlock, [8]);
  const branches = r!.tree.filter((s) => s.kind === "branch");
  assert.equal(branches.length, 8);
  const trunkEnd = branches[0]!.start;
  const banned = new Set([...vocab.tagIds, ...vocab.stopIds]);
  const V = model.config.vocabSize;
  let worst = 0;
  let scored = 0;
  for (const sp of branches) {
    const ctx = [...prompt, ...r!.ids.slice(0, trunkEnd), ...r!.ids.slice(sp.start, sp.end)];
    const logits = noGrad(() => model.forward(Int32Array.from(ctx), causalLayout(ctx.length)));
    const host = logits.toArray();
    logits.dispose();
    for (let i = sp.start; i < sp.end; i++) {
      const lp = r!.logprobs[i];
      if (lp === null || r!.origins[i] !== "sampled") continue;
      const t = prompt.length + trunkEnd + (i - sp.start); // index of token i in ctx
      assert.equal(r!.positions[i], t, `branch ${sp.branch} token ${i}: position`);
      const row = host.subarray((t - 1) * V, t * V);
      worst = Math.max(worst, Math.abs(logProbOf(row, r!.ids[i]!) - lp));
      let best = -1;
      for (let v = 0; v < V; v++) if (!banned.has(v) && (best < 0 || row[v]! > row[best]!)) best = v;
      assert.ok(
        best === r!.ids[i] || row[best]! - row[r!.ids[i]!]! < 1e-5,
        `branch ${sp.branch} token ${i}: greedy ${r!.ids[i]} vs ${best}`,
      );
      scored++;
    }
  }
  console.log(`8 branches: ${scored} sampled branch tokens re-scored, max abs log-prob diff ${worst.toExponential(2)}`);
  assert.equal(scored, 8 * 5);
  assert.ok(worst <= 1e-4, `log-prob diff ${worst}`);

  // Sequential mode serializes the same structure, one token per step.
  const seqEngine = new Engine(model, vocab, { numBlocks: 64, blockSize: 4, maxBatchTokens: 64 });
  const [s] = seqEngine.generateSync([prompt], { ...params, mode: "sequential" });
  seqEngine.dispose();
  assert.equal(s!.finishReason, "stop");
  assert.equal(s!.ids.length, r!.ids.length);
  assert.equal(s!.stats.criticalPathTokens, s!.ids.length);
  assert.ok(r!.stats.criticalPathTokens < s!.stats.criticalPathTokens - 30, `critical path ${r!.stats.criticalPathTokens}`);
});
