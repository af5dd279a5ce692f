/**
 * Engine benchmark on the CPU backend: a random tiny Qwen3 (the "tiny" preset shape, byte
 * tokenizer) decodes one forced structure of B branches x L tokens, in parallel mode (branches
 * share the prefix KV and decode in one batch per step) and in sequential mode (the same
 * serialized tokens, one per step), B = 1, 2, 4, 5. Prints a markdown table of tokens/s and the speed-up.
 * Usage: node bench/engine-cpu.ts [L=64] [repeats=2]
 */
import { Qwen3Model, makeQwen3Config } from "../src/model/index.ts";
import { byteTokenizer } from "../src/tokenizer/index.ts";
import { Engine, engineVocab, parseForceStructure } from "../src/engine/index.ts";
import type { GenerateParams } from "../src/engine/index.ts";

const L = Number(process.argv[2] ?? 64);
const repeats = Number(process.argv[3] ?? 2);
const tok = byteTokenizer();
const model = Qwen3Model.random(
  makeQwen3Config({ vocabSize: 320, hiddenSize: 128, intermediateSize: 384, numHiddenLayers: 4, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 32, ropeTheta: 10000, tieWordEmbeddings: true }),
  { seed: 0 },
);
const vocab = engineVocab(tok, 320);
const prompt = tok.encodeChat([{ role: "user", content: "Benchmark prompt: add the numbers 1 to 10." }]);

function run(B: number, mode: GenerateParams["mode"]): { tokens: number; s: number; steps: number } {
  let best = Infinity;
  let tokens = 0;
  let steps = 0;
  for (let r = 0; r < repeats; r++) {
    const engine = new Engine(model, vocab, { numBlocks: 2048, blockSize: 16, maxBatchTokens: 512 });
    const t0 = performance.now();
    const [res] = engine.generateSync([prompt], { mode, temperature: 0, maxNewTokens: 100_000, minForkBudget: 0, forceStructure: parseForceStructure(`${B}x${L}`) });
    const s = (performance.now() - t0) / 1000;
    tokens = res!.stats.serializedTokens;
    steps = (engine.runner as { steps?: number }).steps ?? 0;
    best = Math.min(best, s);
    engine.dispose();
  }
  return { tokens, s: best, steps };
}

run(2, "parallel"); // warm-up
console.log(`| B | L | serialized tokens | sequential tok/s (steps) | parallel tok/s (steps) | speed-up |`);
console.log(`|---|---|---|---|---|---|`);
// NOTE(engine): B = 8 is not a valid NPR block (the parser accepts 1-5 plans, format/npr-tags.ts MAX_PLANS).
for (const B of [1, 2, 4, 5]) {
  const seq = run(B, "sequential");
  const par = run(B, "parallel");
  const ts = seq.tokens / seq.s;
  const tp = par.tokens / par.s;
  console.log(`| ${B} | ${L} | ${par.tokens} | ${ts.toFixed(0)} (${seq.steps}) | ${tp.toFixed(0)} (${par.steps}) | ${(tp / ts).toFixed(2)}x |`);
}
