/**
 * Shared pieces of the trainer tests: a tiny Qwen3 for the byte tokenizer (vocab 320), hand-made
 * examples in the sequential and the NPR parallel form (well-formed, canonical), and a tiny
 * recipe object. Test helper only.
 */
import { makeQwen3Config, Qwen3Model } from "../../src/model/index.ts";
import type { Qwen3Config } from "../../src/model/index.ts";
import type { Backend } from "../../src/tensor/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import type { TextExample } from "../../src/train/examples.ts";

/** The CPU backend the trainer tests run on (one thread: timings aside, results are the same). */
export const cpu: Backend = new CpuBackend({ threads: 1 });

/** A 2-layer Qwen3 for the byte tokenizer (267 ids, padded to 320 rows). */
export function tinyConfig(patch: Partial<Qwen3Config> = {}): Qwen3Config {
  return makeQwen3Config({
    vocabSize: 320,
    hiddenSize: 32,
    intermediateSize: 48,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 8,
    tieWordEmbeddings: true,
    ropeTheta: 10000,
    ...patch,
  });
}

export function tinyModel(dtype: "f32" | "f64", seed = 1, backend: Backend = cpu): Qwen3Model {
  return Qwen3Model.random(tinyConfig(), { seed, backend, dtype, std: 0.2 });
}

/** Sequential traces (plain text answers). */
export const SEQUENTIAL: TextExample[] = [
  { prompt: "Make 10 from 2 5.", response: "2*5=10 (10)\n\\boxed{2*5}" },
  { prompt: "Make 7 from 3 4 1.", response: "4+3=7 (1 7)\n\\boxed{4+3}" },
  { prompt: "Make 12 from 6 2 9.", response: "9+6=15 (2 15)\nback (6 2 9)\n6*2=12 (9 12)\n\\boxed{6*2}" },
];

/** Parallel traces: one or two NPR blocks, steps of unequal lengths, canonical (no inter-tag gaps). */
export const PARALLEL: TextExample[] = [
  {
    prompt: "Make 9 from 3 3.",
    response:
      "<guideline><plan>1: add</plan><plan>2: multiply</plan></guideline>" +
      "<step>1: 3+3=6 miss</step><step>2: 3*3=9 hit</step>" +
      "<takeaway>plan 2 reaches 9</takeaway>So \\boxed{3*3}",
  },
  {
    prompt: "Make 5 from 2 3 4.",
    response:
      "<guideline><plan>1: 2+3</plan><plan>2: 4+2</plan><plan>3: 4-3</plan></guideline>" +
      "<step>1: 2+3=5 hit</step><step>2: 6</step><step>3: 4-3=1 then 1*... no</step>" +
      "<takeaway>step 1 works</takeaway>" +
      "<guideline><plan>1: check</plan></guideline><step>1: 2+3=5 ok</step><takeaway>confirmed</takeaway>\\boxed{2+3}",
  },
];
