/**
 * Public surface of train/: the supervised trainer (examples -> packed batches -> token-mean loss
 * -> AdamW), run folders with checkpoints that survive kill -9, recipes, and the two supervised
 * stages (pretrain: Stage 0 from scratch on task traces; sft: Stage 2, parallel or sequential).
 * Other folders (cli/) import train/ only through this file. Rank 6: imports engine, model,
 * tokenizer, tasks, format, tensor and util; never eval/ or serve/.
 */
export {
  ExampleEncoder,
  IGNORE,
  encodeAll,
  trajectoryLayout,
  type EncodeResult,
  type EncodedExample,
  type EncodedSet,
  type EncoderOptions,
  type LayoutMode,
  type TextExample,
} from "./examples.ts";
export { concatLayouts, fillRow, packExamples, type PackedBatch, type PackedSpan } from "./packing.ts";
export { DataOrder, datasetFingerprint, nextStepBatch, type DataCursor, type DataOrderOptions, type StepBatch } from "./batches.ts";
export { perExampleLoss, rowLogprobs, rowNll, targetsTensor, tokenMeanShare } from "./losses.ts";

export { MetricsLog, type EvalLine, type MetricsLine, type TrainLine } from "./metrics.ts";
export {
  MANIFEST,
  OPTIMIZER_FILE,
  STATE_FILE,
  loadTrainingCheckpoint,
  saveTrainingCheckpoint,
  sha256File,
  verifyFolder,
  writeFolderAtomically,
  writeModelFiles,
  type LoadedCheckpoint,
  type TrainerState,
} from "./checkpoint-io.ts";
export { RunFolder, configText, firstDifference, type CheckpointRef } from "./run-folder.ts";
export { etaSeconds, formatDuration, makeProgress, type Progress, type ProgressOptions, type ProgressUpdate } from "./progress.ts";
export {
  RecipeSchema,
  describePresets,
  loadRecipe,
  parseRecipe,
  recipePresets,
  resolveRecipeFile,
  withOverrides,
  type EvalHyper,
  type PretrainHyper,
  type Recipe,
  type RecipeModel,
  type SftHyper,
  type StageOverrides,
  type SupervisedStage,
} from "./recipe.ts";
export {
  learningRate,
  makeOptimizer,
  optimizerStep,
  runSupervised,
  type Evaluation,
  type LoopHyper,
  type OptimizerHyper,
  type StepResult,
  type SupervisedResult,
  type SupervisedRun,
} from "./trainer.ts";
export { evaluateStage, greedyEval, heldOutLoss, type EvalProblem, type GreedyEval, type GreedyEvalOptions } from "./evaluate.ts";
export { buildCorpus, evalProblems, isParallelSlot, splitByWeight, type Corpus } from "./corpus.ts";
export { recipeModelConfig, recipeTokenizer, runPretrain, type PretrainInputs, type PretrainResult } from "./pretrain.ts";
export { loadSftModel, readTrajectories, runSft, sftTokenizer, type SftInputs, type SftResult } from "./sft.ts";
export {
  ADVANTAGE_EPS,
  dynamicSamplingFilter,
  grpoAdvantages,
  overlongPenalty,
  papoAdvantages,
  rolloutReward,
  unbiasedStd,
  type GroupFilter,
  type OverlongOptions,
  type RewardOptions,
} from "./advantages.ts";
export {
  DAPO_CLIP,
  dapoTokenLoss,
  papoTokenLoss,
  stepTokenCount,
  type ClipCounts,
  type ClipOptions,
  type PolicyLoss,
  type PolicyTokens,
} from "./policy-loss.ts";
export {
  ROLLOUT_SAMPLING,
  collectRollouts,
  logprobDiff,
  rolloutExample,
  rolloutSeed,
  trainerLogprobs,
  type CollectOptions,
  type LogprobDiff,
  type Rollout,
  type RolloutBatch,
  type RolloutBatchStats,
  type RolloutLayout,
  type RolloutProblem,
  type RolloutStats,
} from "./rollouts.ts";
export {
  distill,
  distillJsonl,
  distillProblems,
  distillSeed,
  statsPathOf,
  writeFileAtomic,
  MAX_TRIES,
  type DistillLine,
  type DistillOptions,
  type DistillProblem,
  type DistillResult,
  type DistillStats,
  type RoundReport,
  type YieldStats,
} from "./distill.ts";
