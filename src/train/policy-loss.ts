/**
 * The policy-gradient losses of the RL stages on tensors: DAPO's clipped surrogate (Stage 1,
 * clip-higher and verl's dual clip) and PAPO's on-policy REINFORCE loss (Stage 3), each as one
 * micro-batch's differentiable share of the optimizer step's token mean, with the clip counts for
 * the metrics line. Knows tensors and plain per-token arrays; nothing about models, engines,
 * rollouts, optimizers or files (rewards and advantages live in advantages.ts).
 *
 * Token mean over the whole optimizer step, as losses.ts's tokenMeanShare and verl's token-mean:
 *
 *   L = -(1 / N) * sum over micro-batches m, valid tokens t of m  s_t,   N = valid tokens of the step
 *
 * Each micro-batch returns -(sum of its s_t) / N with N passed in (stepTokenCount), so the losses
 * and gradients of micro-batches of different lengths add up to exactly the step's token mean;
 * dividing by each micro-batch's own count would weight a short micro-batch's tokens more
 * (small-scale.md "Pitfalls"). Tokens of zero-advantage rollouts are valid and count in N.
 */
import { Tensor, clamp, exp, maximum, minimum, mul, mulScalar, noGrad, sub, sum, where } from "../tensor/index.ts";
import { invariant } from "../util/index.ts";

/** The valid-token count of an optimizer step: the 1s of every micro-batch's mask together. */
export function stepTokenCount(masks: readonly ArrayLike<number>[]): number {
  let n = 0;
  for (const m of masks) for (let i = 0; i < m.length; i++) if (m[i] !== 0) n++;
  return n;
}

/** DAPO's clipping knobs, named as verl's recipe names them. */
export interface ClipOptions {
  /** clip_ratio_low: the ratio is clipped below at 1 - clipLow (NPR Stage 1: 0.2). */
  clipLow: number;
  /** clip_ratio_high: clip-higher, clipped above at 1 + clipHigh (NPR Stage 1: 0.28). */
  clipHigh: number;
  /**
   * clip_ratio_c: dual clip for negative advantages, the token's surrogate is at least c * A
   * (verl; NPR: 10). null switches it off.
   */
  dualClip: number | null;
}

/** The defaults of NPR's Stage 1 (npr-zero run.sh). */
export const DAPO_CLIP: ClipOptions = { clipLow: 0.2, clipHigh: 0.28, dualClip: 10 };

/** One micro-batch of per-token inputs, all [T] over the same tokens. */
export interface PolicyTokens {
  /** log pi_theta(token), differentiable, [T] (f32 or f64). */
  logp: Tensor;
  /** The rollout's advantage copied to each of its tokens, [T]. */
  advantages: ArrayLike<number>;
  /**
   * 1 where the token carries loss, 0 elsewhere (prompt, padding, and for NPR the tokens the
   * engine forced: `<step>`, `N:`, `<takeaway>`), [T]. Masked tokens get exactly zero gradient
   * and are not counted in the denominator (stepTokenCount of the same masks).
   */
  mask: ArrayLike<number>;
  /** The step's valid-token count (stepTokenCount over every micro-batch of the step). */
  denominator: number;
}

/** Token counts of one micro-batch (sums over micro-batches give the step's shares). */
export interface ClipCounts {
  /** Valid tokens. */
  tokens: number;
  /** A < 0 and ratio < 1 - clipLow: the clipped branch is strictly the min, gradient 0. */
  clipLow: number;
  /** A > 0 and ratio > 1 + clipHigh: the clipped branch is strictly the min, gradient 0. */
  clipHigh: number;
  /** A < 0 and ratio > c (dual clip active): surrogate c * A, gradient 0. */
  dualClip: number;
  /** Sum over valid tokens of (oldLogp - logp): verl's ppo_kl estimate times `tokens`. */
  klSum: number;
}

export interface PolicyLoss {
  /** Scalar: this micro-batch's share of the step's token-mean loss. */
  loss: Tensor;
  counts: ClipCounts;
}

function hostTensor(values: ArrayLike<number>, like: Tensor): Tensor {
  return Tensor.fromArray(values, like.shape, { dtype: like.dtype, backend: like.backend });
}

function checkTokens(name: string, p: PolicyTokens): number {
  invariant(p.logp.ndim === 1, () => `${name}: logp must be [T], got [${p.logp.shape.join(", ")}]`);
  const T = p.logp.shape[0]!;
  invariant(
    p.advantages.length === T && p.mask.length === T,
    () => `${name}: ${T} tokens, ${p.advantages.length} advantages, ${p.mask.length} mask`,
  );
  invariant(p.denominator > 0, () => `${name}: denominator ${p.denominator}`);
  invariant(p.logp.dtype === "f32" || p.logp.dtype === "f64", () => `${name}: logp is ${p.logp.dtype}`);
  return T;
}

/**
 * DAPO's per-token clipped surrogate (verl `compute_policy_loss`, vanilla mode, token-mean):
 *
 *   r_t = exp(logp_t - oldLogp_t)
 *   s_t = min(r_t A_t, clamp(r_t, 1 - clipLow, 1 + clipHigh) A_t)
 *   s_t = max(s_t, c A_t)            where A_t < 0 (dual clip, unless off)
 *   loss = -(1 / denominator) * sum over mask_t = 1 of s_t
 *
 * oldLogp [T] are the rollout policy's log-probs (host numbers, no gradient). A token counts as
 * clipped when the clipped branch is STRICTLY the smaller one (at a tie the unclipped branch wins
 * and the gradient passes, as minimum's tie convention and torch's); that happens exactly for
 * A < 0 with r < 1 - clipLow (clipLow) and A > 0 with r > 1 + clipHigh (clipHigh). A = 0 tokens
 * are never clipped. Dual clip: A < 0 and r > c.
 */
export function dapoTokenLoss(p: PolicyTokens & { oldLogp: ArrayLike<number>; clip: ClipOptions }): PolicyLoss {
  const T = checkTokens("dapoTokenLoss", p);
  invariant(p.oldLogp.length === T, () => `dapoTokenLoss: ${T} tokens, ${p.oldLogp.length} old log-probs`);
  const { clipLow, clipHigh, dualClip } = p.clip;
  invariant(clipLow >= 0 && clipLow < 1 && clipHigh >= 0, () => `dapoTokenLoss: clip ${clipLow}/${clipHigh}`);
  invariant(dualClip === null || dualClip > 1, () => `dapoTokenLoss: dual clip c = ${dualClip} must be > 1`);
  const oldT = hostTensor(p.oldLogp, p.logp);
  const advT = hostTensor(p.advantages, p.logp);
  const maskT = hostTensor(p.mask, p.logp);
  const ratio = exp(sub(p.logp, oldT));
  let s = minimum(mul(ratio, advT), mul(clamp(ratio, 1 - clipLow, 1 + clipHigh), advT));
  if (dualClip !== null) {
    const negative = hostTensor(
      Array.from(p.advantages, (a) => (a < 0 ? 1 : 0)),
      p.logp,
    );
    s = where(negative, maximum(s, mulScalar(advT, dualClip)), s);
  }
  // where, not mul: a masked token's inf or NaN (a padded position) reaches neither value nor gradient.
  const zero = Tensor.zeros([1], { dtype: p.logp.dtype, backend: p.logp.backend });
  const loss = mulScalar(sum(where(maskT, s, zero)), -1 / p.denominator);
  // The counts read logp back to the host (one sync per micro-batch; the trainer logs them anyway).
  const lp = noGrad(() => p.logp.toArray());
  const counts: ClipCounts = { tokens: 0, clipLow: 0, clipHigh: 0, dualClip: 0, klSum: 0 };
  for (let t = 0; t < T; t++) {
    if (p.mask[t] === 0) continue;
    const a = p.advantages[t]!;
    const r = Math.exp(lp[t]! - p.oldLogp[t]!);
    counts.tokens++;
    counts.klSum += p.oldLogp[t]! - lp[t]!;
    if (a < 0 && r < 1 - clipLow) counts.clipLow++;
    if (a > 0 && r > 1 + clipHigh) counts.clipHigh++;
    if (dualClip !== null && a < 0 && r > dualClip) counts.dualClip++;
  }
  return { loss, counts };
}

/**
 * PAPO's loss (Stage 3, NPR's `dp_actor.py` with on_policy = True):
 *
 *   loss = -(1 / denominator) * sum over mask_t = 1 of A_t * exp(logp_t - sg(logp_t))
 *
 * The ratio is identically 1, so the value is -(sum of A_t over valid tokens) / denominator, and
 * its gradient is -(A_t / denominator) * grad logp_t: REINFORCE with the group-mean baseline and
 * batch-std scaling of papoAdvantages. No clipping can act, so no token (special tags included)
 * loses its gradient to it; tokens the engine forced are kept out by the mask instead.
 */
export function papoTokenLoss(p: PolicyTokens): PolicyLoss {
  const T = checkTokens("papoTokenLoss", p);
  const advT = hostTensor(p.advantages, p.logp);
  const maskT = hostTensor(p.mask, p.logp);
  const ratio = exp(sub(p.logp, p.logp.detach()));
  const zero = Tensor.zeros([1], { dtype: p.logp.dtype, backend: p.logp.backend });
  const loss = mulScalar(sum(where(maskT, mul(ratio, advT), zero)), -1 / p.denominator);
  let tokens = 0;
  for (let t = 0; t < T; t++) if (p.mask[t] !== 0) tokens++;
  return { loss, counts: { tokens, clipLow: 0, clipHigh: 0, dualClip: 0, klSum: 0 } };
}
