/**
 * The graph decode path on a GPU: two engines over the same random model on the CUDA backend
 * decode the same forced 4-branch structure greedily, one through the generic paged forward and
 * one through captured, replayed CUDA graphs (buckets 1 and 4, with padding rows in bucket 4);
 * tokens must agree and log-probs within tolerance, in f32 and in mixed precision (bf16 weights).
 * Also proves the graphs were captured and replayed. In mixed precision the graphs run the fused
 * decode ops (cuda/decode.ts: norm + cast, q/k/v in one GEMV, q/k norm + RoPE + KV write, SwiGLU
 * and residual epilogues; the counters prove it), also over 10 branches (bucket 16: the GEMV's two
 * 8-row tiles) and against the unfused graph body. Skipped without a GPU (CI covers the generic
 * body eagerly on the CPU in graph-decode.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { Engine, ModelRunner, engineVocab, forcedMaxPlans, parseForceStructure } from "../../src/engine/index.ts";
import type { GraphDecoderOptions } from "../../src/engine/graph-decode.ts";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";

const why = cudaUnavailable();

if (why) {
  test("graph decode on cuda", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();
  const tok = byteTokenizer();
  const cfg = makeQwen3Config({
    vocabSize: 384,
    hiddenSize: 128,
    intermediateSize: 256,
    numHiddenLayers: 3,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 32,
    ropeTheta: 10000,
    tieWordEmbeddings: true,
  });
  const vocab = engineVocab(tok, 384);
  const prompt = tok.encodeChat([{ role: "user", content: "What is 6 times 7, twice?" }]);
  const cases = [
    ["f32", 1e-4, "3x20", "generic"],
    ["bf16", 2e-2, "3x20", "generic"],
    ["bf16", 2e-2, "10x12", "generic"],
    ["bf16", 2e-2, "3x20", "unfused graphs"],
  ] as const;

  for (const [dtype, tol, spec, baseline] of cases) {
    test(`graph decode == ${baseline} decode on cuda (${dtype}, ${spec})`, (t) => {
      const structure = parseForceStructure(spec);
      const model = Qwen3Model.random(cfg, { seed: 3, backend: be, dtype, std: 0.2 });
      const gen = (graphDecode: boolean | GraphDecoderOptions) => {
        const runner = new ModelRunner(model, 256, 16, { graphDecode });
        const engine = new Engine(runner, vocab, { numBlocks: 256, blockSize: 16 });
        const c0 = be.counters();
        const [r] = engine.generateSync([prompt], {
          mode: "parallel",
          temperature: 0,
          maxNewTokens: 400,
          minForkBudget: 0,
          forceStructure: structure,
          maxPlans: forcedMaxPlans(structure),
        });
        const c1 = be.counters();
        const delta = (key: string) => (c1[key] ?? 0) - (c0[key] ?? 0);
        const stats = {
          steps: runner.decoder?.steps ?? 0,
          captures: runner.decoder?.captures ?? 0,
          replays: runner.decoder?.replays ?? 0,
          graphLaunches: delta("cuda.graph"),
          fused: runner.decoder?.fused ?? false,
          fusedGemvs: delta("decodeGemv"),
          fusedRopes: delta("decodeQkNormRope"),
        };
        engine.dispose();
        return { r: r!, stats };
      };
      const slow = gen(baseline === "generic" ? false : { fused: false });
      const fast = gen(true);
      t.diagnostic(`fast path: ${JSON.stringify(fast.stats)}; baseline (${baseline}): ${JSON.stringify(slow.stats)}`);
      assert.ok(fast.stats.captures >= 2 && fast.stats.replays > 30, JSON.stringify(fast.stats));
      assert.equal(fast.stats.graphLaunches, fast.stats.replays);
      // Mixed precision runs the fused ops (captured once per bucket: the eager step and the capture).
      const L = cfg.numHiddenLayers;
      assert.equal(fast.stats.fused, dtype === "bf16");
      if (dtype === "bf16") assert.equal(fast.stats.fusedGemvs, 2 * fast.stats.captures * (4 * L + 1), JSON.stringify(fast.stats));
      else assert.equal(fast.stats.fusedGemvs, 0);
      assert.equal(slow.stats.fusedGemvs, 0);
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
      t.diagnostic(
        `${dtype}: ${same} of ${slow.r.ids.length} tokens agree before any divergence; ${n} log-probs, max abs diff ${max.toExponential(2)}, mean ${(sum / Math.max(1, n)).toExponential(2)}`,
      );
      if (dtype === "f32") assert.equal(same, slow.r.ids.length, "f32: every token agrees");
      else assert.ok(same >= 40, `bf16: ${same} tokens agree`);
      assert.ok(n > 20 && max < tol, `max |logprob diff| ${max} over ${n}`);
    });
  }
}
