/**
 * The engine's plain data: generation parameters, per-request results and statistics, the
 * events of the async stream, and the StepPlan / StepResult that pass between scheduler and
 * runner (STYLE.md habit 10). No behaviour beyond defaults and one validation.
 */
import { UsageError } from "../util/index.ts";
import { MAX_PLANS } from "../format/index.ts";
import type { Constraint, SamplingParams } from "./sampling/sampler.ts";
import { DEFAULT_SAMPLING, checkSamplingParams } from "./sampling/sampler.ts";
import type { ForcedBlock } from "./forced-structure.ts";
import type { PageCopy, SlotRanges } from "../model/index.ts";
import type { Rng } from "../util/index.ts";

export interface GenerateParams extends SamplingParams {
  /** parallel: fork at </guideline>; sequential: the same model, plain autoregressive (baseline). */
  mode: "parallel" | "sequential";
  /** Bound on both the critical path and the serialized response length (NPR §5.2 item 9). */
  maxNewTokens: number;
  /** No fork when fewer tokens than this remain of the budget (NPR: 1024). */
  minForkBudget: number;
  /** No fork at or beyond this depth (NPR: 5; no nesting makes 1 the deepest in practice). */
  maxDepth: number;
  /** Structure-forcing mode for random-weight models (null: the model decides everything). */
  forceStructure: ForcedBlock[] | null;
  /**
   * Most plans a guideline may hold (NPR: 5; more make the request malformed). Raise it only for
   * forced structures of more branches (benchmarks at B = 8; `--force-structure` does it for you).
   */
  maxPlans: number;
}

export const DEFAULT_GENERATE: GenerateParams = {
  ...DEFAULT_SAMPLING,
  mode: "parallel",
  maxNewTokens: 256,
  minForkBudget: 1024,
  maxDepth: 5,
  forceStructure: null,
  maxPlans: MAX_PLANS,
};

export function resolveParams(p: Partial<GenerateParams>): GenerateParams {
  const out = { ...DEFAULT_GENERATE, ...p };
  checkSamplingParams(out);
  if (!(Number.isInteger(out.maxNewTokens) && out.maxNewTokens >= 1)) {
    throw new UsageError(`max_new_tokens must be a positive integer, got ${out.maxNewTokens}`, {
      code: "bad_budget",
      param: "max_new_tokens",
    });
  }
  if (!(Number.isInteger(out.maxPlans) && out.maxPlans >= 1)) {
    throw new UsageError(`max_plans must be a positive integer, got ${out.maxPlans}`, { code: "bad_max_plans", param: "max_plans" });
  }
  const widest = Math.max(0, ...(out.forceStructure ?? []).map((b) => b.branches));
  if (widest > out.maxPlans) {
    throw new UsageError(`the forced structure has a block of ${widest} branches, more than max_plans = ${out.maxPlans}`, {
      code: "bad_structure",
      param: "max_plans",
      hint: `pass maxPlans: ${widest} (forcedMaxPlans(structure)); NPR's own rule is 1-${MAX_PLANS} plans`,
    });
  }
  if (out.mode !== "parallel" && out.mode !== "sequential") {
    throw new UsageError(`mode must be parallel or sequential, got ${out.mode}`, { code: "bad_mode", param: "mode" });
  }
  return out;
}

/**
 * stop: a stop id outside any step; length: the budget ran out; malformed: the structure broke
 * (a parser error, a stop id inside a step) and the request was terminated; abort: the caller
 * aborted it; no_kv: the request alone does not fit in the KV pool.
 */
export type FinishReason = "stop" | "length" | "malformed" | "abort" | "no_kv";

export interface RequestStats {
  /** Response tokens, every branch counted (what the trainer sees). */
  serializedTokens: number;
  /** Largest position reached minus the prompt length: the decode steps a user waits for. */
  criticalPathTokens: number;
  /** Blocks that forked. */
  blocks: number;
  branchesPerBlock: number[];
  /** Deepest fork nesting reached (0 = never forked). */
  depth: number;
  /** Forks declined by the budget or depth rule (decoding went on sequentially). */
  forksDeclined: number;
  /** Times the request was preempted and recomputed. */
  preemptions: number;
  wallMs: number;
}

/** Where each response token came from. */
export type TokenOrigin = "sampled" | "script" | "engine";

/** One span of the serialized response: trunk text or one branch of a block. */
export interface TreeSpan {
  kind: "trunk" | "branch";
  block: number;
  branch: number;
  /** [start, end) in response token indices. */
  start: number;
  end: number;
}

export interface GenerationResult {
  requestId: number;
  promptIds: number[];
  /** Serialized response: trunk, branches in order, takeaway, ... */
  ids: number[];
  /** [ids.length] the model's log-prob of each sampled token; null for forced ones. */
  logprobs: Array<number | null>;
  origins: TokenOrigin[];
  /** [ids.length] RoPE position of each response token (the trainer's layout must agree). */
  positions: number[];
  text: string;
  finishReason: FinishReason;
  /** Why the structure is not a complete NPR response (null when it is). */
  malformed: string | null;
  tree: TreeSpan[];
  stats: RequestStats;
}

export type EngineEvent =
  | { type: "branch-opened"; requestId: number; seqId: number; block: number; branch: number }
  | { type: "token"; requestId: number; seqId: number; id: number }
  | { type: "branch-closed"; requestId: number; seqId: number; block: number; branch: number; tokens: number }
  | { type: "joined"; requestId: number; seqId: number; block: number }
  | { type: "preempted"; requestId: number }
  | { type: "finished"; result: GenerationResult };

/** One sequence's share of a step: tokens [start, start + n) of its known tokens. */
export interface PlanItem {
  seqId: number;
  ids: number[];
  positions: number[];
  writeSlots: Int32Array;
  visible: SlotRanges;
  /** Sample a token from the last row's logits (the sequence's known tokens end here). */
  sample: null | { params: SamplingParams; rng: Rng; penaltyScope: number[]; penalty: number; constraint: Constraint };
}

export interface StepPlan {
  items: PlanItem[];
  copies: PageCopy[];
  numTokens: number;
}

export interface StepResult {
  /** Per plan item, in order: the sampled id and its log-prob, or null when not sampled. */
  sampled: Array<{ id: number; logprob: number } | null>;
}
