/**
 * Public surface of tasks/: answer extraction, normalisation, equivalence and grading (in-process
 * and through the worker pool), ZebraLogic grading, benchmark loaders and the synthetic tasks
 * (generators, search traces, verifiers, train/test splits, the task vocabulary).
 * Other folders import tasks only through this file. Rank 2: imports util only.
 */
export { allBoxed, ALL_FALLBACKS, extractAnswer, lastBoxed, NPR_FALLBACKS, splitListAnswer, type Fallback } from "./extract.ts";
export { normalizeAnswer, type Normalized } from "./normalize.ts";
export { answersEqual, type EquivOptions } from "./equivalence.ts";
export { gradeAnswer, gradeExtracted, type GradeOptions, type GradeResult } from "./grader.ts";
export { GraderPool, MAX_TIME_LIMIT_MS, maxGraderPoolSize, type GraderPoolOptions, type GraderPoolStats } from "./grader-pool.ts";
export {
  extractChoice,
  gradeZebraChoice,
  gradeZebraGrid,
  parseZebraResponse,
  zebraAnswerJson,
  type ZebraGridGrade,
  type ZebraSolution,
} from "./zebra.ts";
export {
  BENCHMARK_NAMES,
  BenchmarkTask,
  loadBenchmark,
  loadBenchmarkFile,
  type BenchmarkExample,
  type BenchmarkName,
} from "./benchmarks.ts";
export {
  readJsonl,
  reward,
  SYNTHETIC_NPR_INSTRUCTION,
  syntheticPrompt,
  withInstruction,
  type Example,
  type Outcome,
  type PromptStyle,
  type Task,
} from "./task.ts";
export {
  COUNTDOWN_LIMITS,
  COUNTDOWN_PRESETS,
  CountdownTask,
  countdownDifficulty,
  evaluateCountdown,
  verifyCountdown,
  type CountdownDifficulty,
  type CountdownExample,
  type CountdownOptions,
} from "./countdown.ts";
export { DEFAULT_COUNTDOWN_SEARCH, VALUE_CAP, type CountdownSearchOptions, type CountdownTrace } from "./countdown-search.ts";
export {
  LOGIC_ATTRIBUTES,
  LOGIC_GRID_LIMITS,
  LOGIC_GRID_PRESETS,
  evaluateLogicGrid,
  LogicGridTask,
  logicGridDifficulty,
  verifyLogicGrid,
  type LogicGridDifficulty,
  type LogicGridExample,
  type LogicGridOptions,
} from "./logic-grid.ts";
export { DEFAULT_LOGIC_SEARCH, type LogicSearchOptions, type LogicTrace } from "./logic-search.ts";
export { MAX_TEST_EXAMPLES, MAX_TRAIN_EXAMPLES, splitOf, SPLITS, TEST_PER_MILLE, TEST_SPLIT_SEED, type Split } from "./splits.ts";
export {
  evaluateSynthetic,
  exampleFromRecord,
  generateExamples,
  streamExamples,
  SYNTHETIC_PRESETS,
  SYNTHETIC_TASKS,
  syntheticTask,
  TASK_VOCABULARY,
  TRACE_FORMS,
  type GenerateOptions,
  type GradableExample,
  type ReferenceTrace,
  type SyntheticDifficulty,
  type SyntheticExample,
  type SyntheticTask,
  type SyntheticTaskName,
  type TraceForm,
} from "./synthetic.ts";
