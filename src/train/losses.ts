/**
 * The supervised losses of a packed row: the differentiable token-mean share of one micro-batch
 * (its summed negative log-likelihood over the step's response-token count), and, on the host,
 * per-token log-probabilities and per-example mean losses for evaluation and the packing test.
 * Knows tensors, the model's forward and packed rows; nothing about optimizers, runs or files.
 *
 * Token mean, as verl's `token-mean` over a whole optimizer step:
 *
 *   L = -(1 / N) * sum over micro-batches m, response tokens t of m  log p(target_t)
 *   N = response tokens of the step (every micro-batch together)
 *
 * Each micro-batch contributes -(sum of its log-probs) / N, so the gradients that backward sums
 * over the micro-batches are exactly the gradient of L (not a mean of per-micro-batch means).
 */
import type { Qwen3Model } from "../model/index.ts";
import { Tensor, logprobs, mulScalar, noGrad, sum, tidy } from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import { IGNORE } from "./examples.ts";
import type { PackedBatch, PackedSpan } from "./packing.ts";

/**
 * -(sum of log p(target) over the non-ignored targets) / denominator: a scalar tensor whose
 * gradient is this micro-batch's share of the step's token-mean loss. logits [T, V], targets i32 [T].
 */
export function tokenMeanShare(logits: Tensor, targets: Tensor, denominator: number): Tensor {
  invariant(denominator > 0, () => `tokenMeanShare: denominator ${denominator}`);
  return mulScalar(sum(logprobs(logits, targets, IGNORE)), -1 / denominator);
}

/** The targets of a packed row as an i32 tensor on `model`'s backend. */
export function targetsTensor(model: Qwen3Model, row: PackedBatch): Tensor {
  return Tensor.fromArray(row.targets, [row.targets.length], { dtype: "i32", backend: model.backend });
}

/**
 * [T] log p(target) of every token of a packed row, 0 where the target is IGNORE, read back to
 * the host in float64 (no gradient, activations freed).
 */
export function rowLogprobs(model: Qwen3Model, row: PackedBatch): Float64Array {
  return tidy(() =>
    noGrad(() => {
      const logits = model.forward(row.ids, row.layout); // [T, V]
      const lp = logprobs(logits, targetsTensor(model, row), IGNORE); // [T]
      return Float64Array.from(lp.toArray());
    }),
  );
}

/**
 * Mean negative log-likelihood of each example in a row (over its own response tokens), in
 * span order. `lp` and `targets` are the row's [T] log-probs and targets.
 */
export function perExampleLoss(lp: ArrayLike<number>, targets: Int32Array, spans: readonly PackedSpan[]): number[] {
  return spans.map((s) => {
    let total = 0;
    let n = 0;
    for (let i = s.start; i < s.start + s.length; i++) {
      if (targets[i] === IGNORE) continue;
      total -= lp[i]!;
      n++;
    }
    return n === 0 ? 0 : total / n;
  });
}

/** Summed NLL and token count of a row (the parts of a token mean over many rows). */
export function rowNll(model: Qwen3Model, row: PackedBatch): { nll: number; tokens: number } {
  const lp = rowLogprobs(model, row);
  let nll = 0;
  for (let i = 0; i < lp.length; i++) if (row.targets[i] !== IGNORE) nll -= lp[i]!;
  return { nll, tokens: row.numLossTokens };
}
