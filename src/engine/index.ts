/**
 * Public surface of engine/: the Engine (generate, stream), the scheduler and runners, sampling,
 * structure forcing, budget rules and the naive reference generator. Other folders import
 * engine/ only through this file. Rank 4: imports model, kv, tokenizer, tensor, format, util.
 */
export { Engine, type EngineOptions, type ParamsArg } from "./engine.ts";
export { Scheduler, rangesBefore, type SchedulerOptions } from "./scheduler.ts";
export { ModelRunner, sampleItems, type StepRunner } from "./runner.ts";
export { budgetUsed, budgetExhausted, mayFork, type BudgetState } from "./budget.ts";
export {
  engineVocab,
  parseForceStructure,
  forcedMaxPlans,
  MAX_FORCED_BRANCHES,
  randomStructure,
  rootScript,
  branchScript,
  joinScript,
  sequentialScript,
  type EngineVocab,
  type ForcedBlock,
  type ScriptItem,
} from "./forced-structure.ts";
export {
  DEFAULT_SAMPLING,
  checkSamplingParams,
  sampleToken,
  streamSeed,
  logProbOf,
  type SamplingParams,
  type Constraint,
} from "./sampling/sampler.ts";
export { generateNaive, type NaiveResult } from "./reference.ts";
export { DEFAULT_GENERATE, resolveParams } from "./types.ts";
export type {
  GenerateParams,
  GenerationResult,
  EngineEvent,
  FinishReason,
  RequestStats,
  TokenOrigin,
  TreeSpan,
  StepPlan,
  StepResult,
  PlanItem,
} from "./types.ts";
export { TIE_TOLERANCE, rescoreTrajectory, verifyTolerances, type RescoreReport } from "./verify.ts";
export { runFuzz, FUZZ_FAULTS, type FuzzReport, type FuzzOptions, type FuzzFault } from "./fuzz.ts";
