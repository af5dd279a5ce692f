/**
 * Stage 0, the base model: `npr train pretrain`. A Qwen3 of the recipe's shape, initialized from
 * the seed, trained from scratch with the causal layout on the task corpus (corpus.ts: sequential
 * search traces plus a small share of parallel-form traces as text), with the held-out loss and
 * test-split task accuracy through the engine after the last step, greedy and sampled at
 * temperature 1.0. The engine decodes in parallel mode, so the `*_format_rate` and
 * `*_parallel_rate` metrics measure how often the base model already answers in the NPR format
 * (the sampled ones: the prior Stage 1's rollouts start from).
 * Knows the recipe, the tokenizer choice and the stage's setup; the loop is trainer.ts's.
 */
import { Qwen3Model, makeQwen3Config, paddedVocabSize } from "../model/index.ts";
import type { Qwen3Config } from "../model/index.ts";
import type { Backend } from "../tensor/index.ts";
import { TASK_VOCABULARY } from "../tasks/index.ts";
import { byteTokenizer, taskTokenizer } from "../tokenizer/index.ts";
import type { NprTokenizer } from "../tokenizer/index.ts";
import { ConfigError } from "../util/index.ts";
import { buildCorpus } from "./corpus.ts";
import { evaluateStage } from "./evaluate.ts";
import { encodeAll, ExampleEncoder } from "./examples.ts";
import type { Progress } from "./progress.ts";
import type { Recipe } from "./recipe.ts";
import type { RunFolder } from "./run-folder.ts";
import { runSupervised } from "./trainer.ts";
import type { Evaluation, SupervisedResult } from "./trainer.ts";

/**
 * The recipe's tokenizer: "byte" (npr's byte-level one, 267 ids) or "task" (the compact task
 * tokenizer over the synthetic tasks' vocabulary: a word or number is one token).
 */
export function recipeTokenizer(recipe: Recipe): NprTokenizer {
  return recipe.tokenizer === "byte" ? byteTokenizer() : taskTokenizer(TASK_VOCABULARY);
}

/** The model config of a recipe for a tokenizer: the recipe's shape, vocab_size = tokenizer size padded to 64. */
export function recipeModelConfig(recipe: Recipe, tokenizer: NprTokenizer, eosId: number): Qwen3Config {
  const m = recipe.model;
  const pad = tokenizer.specialTokenId("pad_token");
  return makeQwen3Config({
    vocabSize: paddedVocabSize(tokenizer.size, 64),
    hiddenSize: m.hidden_size,
    intermediateSize: m.intermediate_size,
    numHiddenLayers: m.num_hidden_layers,
    numAttentionHeads: m.num_attention_heads,
    numKeyValueHeads: m.num_key_value_heads,
    headDim: m.head_dim,
    rmsNormEps: m.rms_norm_eps,
    ropeTheta: m.rope_theta,
    tieWordEmbeddings: m.tie_word_embeddings,
    maxPositionEmbeddings: m.max_position_embeddings,
    initializerRange: m.initializer_range,
    eosTokenId: eosId,
    padTokenId: pad,
  });
}

export interface PretrainInputs {
  recipe: Recipe;
  backend: Backend;
  run: RunFolder;
  resume: boolean;
  progress: Progress;
}

export interface PretrainResult extends SupervisedResult {
  trainExamples: number;
  parallelShare: number;
  dropped: number;
}

/** Runs (or resumes) Stage 0 of `recipe` in `run`. */
export function runPretrain(inp: PretrainInputs): PretrainResult {
  const { recipe, progress } = inp;
  const hp = recipe.pretrain!;
  const tokenizer = recipeTokenizer(recipe);
  // Causal layout for every trace: a base model reads the parallel form as plain text, as an
  // instruct model read its instructions; the NPR layout is Stage 2's.
  const encoder = new ExampleEncoder(tokenizer, { mode: "sequential" });
  const t0 = performance.now();
  const corpus = buildCorpus(recipe, hp, recipe.seed);
  const train = encodeAll(encoder, corpus.train, hp.tokens_per_micro_batch);
  const held = encodeAll(encoder, corpus.heldOut, hp.tokens_per_micro_batch);
  const val = encodeAll(encoder, corpus.validation, hp.tokens_per_micro_batch);
  if (train.examples.length === 0) {
    throw new ConfigError(`recipe ${recipe.name}: no training trace fits pretrain.tokens_per_micro_batch = ${hp.tokens_per_micro_batch}`, {
      code: "no_data",
      param: "pretrain.tokens_per_micro_batch",
      hint: train.dropped[0] ? `first dropped: ${train.dropped[0].why}` : "raise corpus.examples",
    });
  }
  let tokens = 0;
  for (const ex of train.examples) tokens += ex.ids.length;
  progress.log(
    `pretrain corpus: ${train.examples.length} traces (${Object.entries(corpus.perTask)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}), ` +
      `${corpus.parallelCount} in parallel form (${(100 * corpus.parallelShare).toFixed(1)}%), ${tokens} tokens, ` +
      `${train.dropped.length} dropped as longer than ${hp.tokens_per_micro_batch} tokens; ${val.examples.length} validation and ${held.examples.length} test traces, ` +
      `${corpus.problems.length} eval problems (${((performance.now() - t0) / 1000).toFixed(1)} s)`,
  );
  // The CPU GEMM path decides the stage's speed (OpenBLAS runs tiny-cpu's budget, the TypeScript
  // kernel is 40-100x slower), so the log says which one ran.
  const be = inp.backend as Backend & { gemmPath?: string; whyNoBlas?: string | null };
  if (be.gemmPath) progress.log(`pretrain backend: ${be.name}, GEMM path ${be.gemmPath}${be.whyNoBlas ? ` (${be.whyNoBlas})` : ""}`);
  const config = recipeModelConfig(recipe, tokenizer, encoder.eosId);
  const computeDtype = recipe.dtype === "bf16" ? ("bf16" as const) : undefined;
  const evalOpts = {
    maxNewTokens: hp.eval.max_new_tokens,
    samples: hp.eval.samples,
    mode: "parallel" as const,
    budget: hp.tokens_per_micro_batch,
    sampledPerProblem: hp.eval.sampled_per_problem,
  };
  // During training the curve comes from the validation slice (training-split problems outside
  // the corpus): loss and greedy accuracy at every evaluation, keys prefixed `val_`. The test
  // split is read once, after the last step: held-out loss, greedy and sampled generations.
  const evaluate = (model: Qwen3Model, step: number): Evaluation => {
    const v = evaluateStage(model, encoder, val.examples, corpus.validationProblems, { ...evalOpts, sampledPerProblem: 0 });
    const metrics: Record<string, number> = {};
    for (const [k, x] of Object.entries(v.metrics)) metrics[`val_${k}`] = x;
    if (step !== hp.steps) return { metrics, samples: v.samples.map((x) => ({ ...x, split: "validation" })) };
    const t = evaluateStage(model, encoder, held.examples, corpus.problems, evalOpts);
    return {
      metrics: { ...metrics, ...t.metrics },
      samples: [...v.samples.map((x) => ({ ...x, split: "validation" })), ...t.samples.map((x) => ({ ...x, split: "test" }))],
    };
  };
  const res = runSupervised({
    stage: "pretrain",
    hp,
    run: inp.run,
    backend: inp.backend,
    dtype: "f32",
    modelOptions: computeDtype ? { computeDtype } : {},
    tokenizer,
    train: train.examples,
    seed: recipe.seed,
    initModel: () =>
      Qwen3Model.random(config, {
        seed: recipe.seed,
        backend: inp.backend,
        dtype: "f32",
        computeDtype,
        std: recipe.model.initializer_range,
      }),
    evaluate: held.examples.length > 0 || corpus.problems.length > 0 || val.examples.length > 0 ? evaluate : undefined,
    resume: inp.resume,
    progress,
  });
  return { ...res, trainExamples: train.examples.length, parallelShare: corpus.parallelShare, dropped: train.dropped.length };
}
