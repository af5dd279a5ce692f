/**
 * The host-side numbers of the RL stages, per rollout, before any tensor: the reward of one
 * rollout (accuracy, NPR's format score, DAPO's overlong shaping), DAPO's dynamic-sampling filter
 * and the two group advantages (GRPO for Stage 1 DAPO, NPR's batch-std variant for Stage 3 PAPO).
 * Pure functions of plain numbers (float64); nothing about tensors, engines, rollouts or files.
 * Formulas and the released code's deviations: reference/npr.md §6, small-scale.md "Pitfalls".
 *
 * Rewards arrive grouped by prompt: `groups[g][i]` is the reward of rollout i of prompt g.
 */
import { invariant } from "../util/index.ts";

/** Added to the std before dividing, as verl's `compute_grpo_outcome_advantage` (epsilon 1e-6). */
export const ADVANTAGE_EPS = 1e-6;

/** Mean of xs (0 for none). */
function meanOf(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return xs.length === 0 ? 0 : s / xs.length;
}

/**
 * Unbiased (Bessel, n - 1) standard deviation, as torch.std, which verl calls. One value has no
 * spread: 0 here (torch gives NaN; verl special-cases groups of one, see grpoAdvantages).
 */
export function unbiasedStd(xs: readonly number[]): number {
  if (xs.length < 2) return 0;
  const m = meanOf(xs);
  let ss = 0;
  for (const x of xs) ss += (x - m) * (x - m);
  return Math.sqrt(ss / (xs.length - 1));
}

/**
 * GRPO advantages (Stage 1, DAPO): A_gi = (R_gi - mean_g R) / (std_g R + eps), std unbiased.
 * A group of one rollout gets mean 0 and std 1 (verl's convention), so A = R / (1 + eps). A group
 * whose rewards are all equal gets A = 0 for every rollout; its tokens still count in the step's
 * token-mean denominator (verl's token-mean averages over every response token of the batch),
 * which is what makes a batch of many zero-spread groups take a proportionally smaller step.
 */
export function grpoAdvantages(groups: readonly (readonly number[])[], eps = ADVANTAGE_EPS): number[][] {
  return groups.map((g) => {
    invariant(g.length > 0, "grpoAdvantages: an empty group");
    const [m, s] = g.length === 1 ? [0, 1] : [meanOf(g), unbiasedStd(g)];
    return g.map((r) => (r - m) / (s + eps));
  });
}

/**
 * PAPO advantages (Stage 3): A_gi = (R_gi - mean_g R) / (std_batch R + eps), the group mean as the
 * baseline and ONE unbiased std over every reward of the step (all groups flattened: the rollouts
 * left after dropping broken or overlong ones). The std is computed once, before any advantage:
 * the released `compute_grpo_outcome_advantage` patch overwrites scores[i] in place and recomputes
 * torch.std(scores) inside the loop, so later rollouts are divided by the std of a partially
 * normalized vector (reference/npr.md §6.3); that is a bug, not reproduced here. A group of one
 * rollout gets mean 0 (verl's convention), so A = R / (std_batch + eps). Equal-reward groups get
 * A = 0 and, as in GRPO, still count in the token-mean denominator.
 */
export function papoAdvantages(groups: readonly (readonly number[])[], eps = ADVANTAGE_EPS): number[][] {
  const all = groups.flat();
  invariant(all.length > 0, "papoAdvantages: no rewards");
  const s = unbiasedStd(all);
  return groups.map((g) => {
    invariant(g.length > 0, "papoAdvantages: an empty group");
    const m = g.length === 1 ? 0 : meanOf(g);
    return g.map((r) => (r - m) / (s + eps));
  });
}

/** What DAPO's dynamic sampling kept, with the counts for the metrics line. */
export interface GroupFilter {
  /** Indices of the groups kept, ascending. */
  kept: number[];
  /** Groups dropped: allCorrect + allWrong. */
  groupsDropped: number;
  /** Dropped groups where every rollout was correct. */
  allCorrect: number;
  /** Dropped groups where every rollout was wrong. */
  allWrong: number;
}

/**
 * DAPO's dynamic sampling: keep a group only when its BINARY accuracy has spread (at least one
 * correct and one wrong rollout). It takes booleans, not scores, on purpose: filtering on a
 * shaped score (format or overlong penalties mixed in) lets all-wrong groups whose penalties
 * differ survive, and their advantages then teach format alone; that collapsed a policy within
 * 40 steps (verl-recipe PR #125; small-scale.md "Pitfalls"). NPR's run.sh filters on `score`,
 * which equals accuracy only while the reward is accuracy-only.
 */
export function dynamicSamplingFilter(correct: readonly (readonly boolean[])[]): GroupFilter {
  const out: GroupFilter = { kept: [], groupsDropped: 0, allCorrect: 0, allWrong: 0 };
  correct.forEach((g, i) => {
    const right = g.filter((c) => c).length;
    if (right > 0 && right < g.length) out.kept.push(i);
    else if (g.length > 0 && right === g.length) out.allCorrect++;
    else out.allWrong++;
  });
  out.groupsDropped = out.allCorrect + out.allWrong;
  return out;
}

/** DAPO's overlong reward shaping (verl `overlong_buffer`: len, penalty_factor). */
export interface OverlongOptions {
  /** The response budget in tokens (max_response_length). */
  maxLen: number;
  /** The last `buffer` tokens of the budget where the penalty ramps (NPR Stage 1: 10). */
  buffer: number;
  /** The penalty at exactly maxLen tokens (penalty_factor, NPR Stage 1: 1.0). */
  factor: number;
}

/**
 * The overlong penalty of a response of `length` tokens, <= 0: 0 up to maxLen - buffer tokens,
 * then falling linearly to -factor at maxLen: -factor * (length - (maxLen - buffer)) / buffer,
 * verl's DAPO `min(-exceed_len / overlong_buffer_len * overlong_penalty_factor, 0)`. Added to the
 * reward (the shaped score), never to the binary accuracy the filter reads.
 */
export function overlongPenalty(length: number, opts: OverlongOptions): number {
  const { maxLen, buffer, factor } = opts;
  invariant(buffer > 0 && buffer <= maxLen, () => `overlongPenalty: buffer ${buffer} for maxLen ${maxLen}`);
  invariant(length >= 0 && length <= maxLen, () => `overlongPenalty: length ${length} outside [0, ${maxLen}]`);
  const exceed = length - (maxLen - buffer);
  return exceed <= 0 ? 0 : (-factor * exceed) / buffer;
}

/** How the format score enters the reward. */
export interface RewardOptions {
  /**
   * "paper" (the default): the format score counts and the +-1 accuracy term applies only when the
   * format passes (score 0); a broken format earns its (negative) format score alone.
   * "accuracy-only": the released NPR code (`get_format_reward` commented out): +-1 whatever the
   * format. Stage 3 (PAPO) uses "accuracy-only": its broken rollouts are dropped before the reward.
   */
  format: "paper" | "accuracy-only";
}

/**
 * The reward of one rollout: +1 correct, -1 wrong; with format "paper", a response whose NPR
 * format score is below 0 (src/format formatScore, variant "stage1") gets that score instead
 * (about [-2, 0) in the paper's words; sums of penalties may go lower). `formatScore` must be <= 0.
 * Overlong shaping is added by the caller (overlongPenalty), as verl adds it to the score.
 */
export function rolloutReward(correct: boolean, formatScore: number, opts: RewardOptions): number {
  invariant(formatScore <= 0, () => `rolloutReward: format score ${formatScore} > 0`);
  const accuracy = correct ? 1 : -1;
  if (opts.format === "accuracy-only") return accuracy;
  return formatScore === 0 ? accuracy : formatScore;
}
