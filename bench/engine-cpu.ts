/**
 * Engine benchmark on the CPU backend: a random tiny Qwen3 (4 layers, hidden 128, byte tokenizer)
 * decodes one forced structure of B branches x L tokens, in parallel mode (branches share the
 * prefix KV and decode in one batch per step) and in sequential mode (the same serialized tokens,
 * one per step), B = 1, 2, 4, 8 by default. B = 8 is wider than NPR's 1-5 plan rule, so the run
 * raises the parser's limit (maxPlans) for the forced structure only.
 * The machine may be shared and noisy: the two modes alternate and each keeps its best of
 * `repeats` runs. Prints a markdown table of tokens/s, steps and the speed-up.
 * Usage: node bench/engine-cpu.ts [L=64] [repeats=3] [Bs=1,2,4,8]
 */
import os from "node:os";
import { Qwen3Model, makeQwen3Config } from "../src/model/index.ts";
import { CpuBackend } from "../src/tensor/backend/cpu/index.ts";
import { byteTokenizer } from "../src/tokenizer/index.ts";
import { Engine, ModelRunner, engineVocab, forcedMaxPlans, parseForceStructure } from "../src/engine/index.ts";
import type { GenerateParams } from "../src/engine/index.ts";

const L = Number(process.argv[2] ?? 64);
const repeats = Number(process.argv[3] ?? 3);
const Bs = (process.argv[4] ?? "1,2,4,8").split(",").map(Number);
const tok = byteTokenizer();
const model = Qwen3Model.random(
  makeQwen3Config({
    vocabSize: 320,
    hiddenSize: 128,
    intermediateSize: 384,
    numHiddenLayers: 4,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 32,
    ropeTheta: 10000,
    tieWordEmbeddings: true,
  }),
  { seed: 0, backend: new CpuBackend() },
);
const vocab = engineVocab(tok, 320);
const prompt = tok.encodeChat([{ role: "user", content: "Benchmark prompt: add the numbers 1 to 10." }]);

interface Run {
  tokens: number;
  criticalPath: number;
  s: number;
  steps: number;
}

function once(B: number, mode: GenerateParams["mode"]): Run {
  const engine = new Engine(model, vocab, { numBlocks: 2048, blockSize: 16, maxBatchTokens: 512 });
  const forceStructure = parseForceStructure(`${B}x${L}`);
  const t0 = performance.now();
  const [res] = engine.generateSync([prompt], {
    mode,
    temperature: 0,
    maxNewTokens: 100_000,
    minForkBudget: 0,
    forceStructure,
    maxPlans: forcedMaxPlans(forceStructure),
  });
  const s = (performance.now() - t0) / 1000;
  const steps = engine.runner instanceof ModelRunner ? engine.runner.steps : 0;
  engine.dispose();
  if (res!.finishReason !== "stop" || res!.malformed !== null) throw new Error(`B=${B} ${mode}: ${res!.finishReason} ${res!.malformed}`);
  return { tokens: res!.stats.serializedTokens, criticalPath: res!.stats.criticalPathTokens, s, steps };
}

const best = (a: Run | null, b: Run): Run => (a === null || b.s < a.s ? b : a);

once(2, "parallel"); // warm-up (JIT, buffer pools)
once(2, "sequential");
console.log(
  `machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? "?"}, Node ${process.version}; L = ${L}, best of ${repeats}, modes alternating`,
);
console.log(`| B | L | serialized tokens | critical path | sequential tok/s (steps) | parallel tok/s (steps) | speed-up |`);
console.log(`|---|---|---|---|---|---|---|`);
for (const B of Bs) {
  let seq: Run | null = null;
  let par: Run | null = null;
  for (let r = 0; r < repeats; r++) {
    // Alternate the order too, so neither mode always runs on a warmer (or busier) machine.
    if (r % 2 === 0) {
      seq = best(seq, once(B, "sequential"));
      par = best(par, once(B, "parallel"));
    } else {
      par = best(par, once(B, "parallel"));
      seq = best(seq, once(B, "sequential"));
    }
  }
  if (seq!.tokens !== par!.tokens) throw new Error(`B=${B}: sequential serialized ${seq!.tokens} tokens, parallel ${par!.tokens}`);
  const ts = seq!.tokens / seq!.s;
  const tp = par!.tokens / par!.s;
  console.log(
    `| ${B} | ${L} | ${par!.tokens} | ${par!.criticalPath} | ${ts.toFixed(0)} (${seq!.steps}) | ${tp.toFixed(0)} (${par!.steps}) | ${(tp / ts).toFixed(2)}x |`,
  );
}
