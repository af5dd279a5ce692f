/**
 * The graph decode path on a GPU: two engines over the same random model on the CUDA backend
 * decode the same forced 4-branch structure greedily, one through the generic paged forward and
 * one through captured, replayed CUDA graphs (buckets 1 and 4, with padding rows in bucket 4);
 * tokens must agree and log-probs within tolerance, in f32 and in mixed precision (bf16 weights).
 * Also proves the graphs were captured and replayed. Skipped without a GPU (CI covers the same
 * body eagerly on the CPU in graph-decode.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { Engine, ModelRunner, engineVocab, parseForceStructure } from "../../src/engine/index.ts";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";

const why = cudaUnavailable();

if (why) {
  test("graph decode on cuda", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();
  const tok = byteTokenizer();
  const cfg = makeQwen3Config({ vocabSize: 384, hiddenSize: 128, intermediateSize: 256, numHiddenLayers: 3, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 32, ropeTheta: 10000, tieWordEmbeddings: true });
  const vocab = engineVocab(tok, 384);
  const prompt = tok.encodeChat([{ role: "user", content: "What is 6 times 7, twice?" }]);
  const structure = parseForceStructure("3x20");

  for (const [dtype, tol] of [["f32", 1e-4], ["bf16", 2e-2]] as const) {
    test(`graph decode == generic decode on cuda (${dtype})`, (t) => {
      const model = Qwen3Model.random(cfg, { seed: 3, backend: be, dtype, std: 0.2 });
      const gen = (fast: boolean) => {
        const runner = new ModelRunner(model, 256, 16, { graphDecode: fast });
        const engine = new Engine(runner, vocab, { numBlocks: 256, blockSize: 16 });
        const g0 = be.counters()["cuda.graph"] ?? 0;
        const [r] = engine.generateSync([prompt], { mode: "parallel", temperature: 0, maxNewTokens: 400, minForkBudget: 0, forceStructure: structure });
        const stats = { steps: runner.decoder?.steps ?? 0, captures: runner.decoder?.captures ?? 0, replays: runner.decoder?.replays ?? 0, graphLaunches: (be.counters()["cuda.graph"] ?? 0) - g0 };
        engine.dispose();
        return { r: r!, stats };
      };
      const slow = gen(false);
      const fast = gen(true);
      t.diagnostic(`fast path: ${JSON.stringify(fast.stats)}`);
      assert.ok(fast.stats.captures >= 2 && fast.stats.replays > 30, JSON.stringify(fast.stats));
      assert.equal(fast.stats.graphLaunches, fast.stats.replays);
      // Compare up to the first token where the paths chose differently (bf16 near-ties may flip).
      let same = 0;
      while (same < slow.r.ids.length && slow.r.ids[same] === fast.r.ids[same]) same++;
      let max = 0;
      let sum = 0;
      let n = 0;
      for (let i = 0; i < same; i++) {
        const x = slow.r.logprobs[i];
        const y = fast.r.logprobs[i];
        if (x === null || x === undefined || y === null || y === undefined) continue;
        max = Math.max(max, Math.abs(x - y));
        sum += Math.abs(x - y);
        n++;
      }
      t.diagnostic(`${dtype}: ${same} of ${slow.r.ids.length} tokens agree before any divergence; ${n} log-probs, max abs diff ${max.toExponential(2)}, mean ${(sum / Math.max(1, n)).toExponential(2)}`);
      if (dtype === "f32") assert.equal(same, slow.r.ids.length, "f32: every token agrees");
      else assert.ok(same >= 40, `bf16: ${same} tokens agree`);
      assert.ok(n > 20 && max < tol, `max |logprob diff| ${max} over ${n}`);
    });
  }
}
