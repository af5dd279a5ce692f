/**
 * NPR's token budget rules (reference/npr.md §5.2 items 3 and 9) in one place: max_new_tokens
 * bounds both the critical path (largest position reached past the prompt) and the serialized
 * response length, which for a branch is counted as NPR counts it: the serialized tokens before
 * the block plus this branch's own length times the number of siblings (so the trainer's
 * serialized sequence fits). A fork is declined when fewer than `minForkBudget` tokens remain.
 * Pure functions of numbers; no sequences, no scheduling.
 */

export interface BudgetState {
  /** Response tokens serialized before the current block's branches (all of them for a trunk). */
  serializedBefore: number;
  /** This branch's own tokens (0 for a trunk stream). */
  own: number;
  /** Siblings in the current block including this branch (1 for a trunk stream). */
  degree: number;
  /** Largest position used + 1 - prompt length. */
  criticalPath: number;
}

/** The budget a stream has used: the larger of the serialized estimate and the critical path. */
export function budgetUsed(s: BudgetState): number {
  return Math.max(s.serializedBefore + s.own * s.degree, s.criticalPath);
}

/** True when the stream must stop with finish reason "length". */
export function budgetExhausted(s: BudgetState, maxNewTokens: number): boolean {
  return budgetUsed(s) >= maxNewTokens;
}

/**
 * Fork or continue, decided before anything is released (§5.3): fork only when at least
 * `minForkBudget` tokens of budget remain and the depth limit allows another level.
 */
export function mayFork(s: BudgetState, maxNewTokens: number, minForkBudget: number, depth: number, maxDepth: number): boolean {
  return maxNewTokens - budgetUsed(s) >= minForkBudget && depth < maxDepth;
}
