/**
 * "Engine equals trainer": re-scores a finished trajectory with one masked forward over the
 * trainer's layout (format/ trajectoryLayout; causal in sequential mode) and compares, token by
 * token, the engine's log-probs and its greedy choices (argmax over the ids the structure
 * allowed) with the trainer's. Used by `npr engine verify` and the tests.
 * Knows results, the model's forward and the vocabulary; nothing of scheduling.
 */
import { trajectoryLayout } from "../format/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { noGrad } from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import { applyRepetitionPenalty, logProbOf } from "./sampling/sampler.ts";
import type { EngineVocab } from "./forced-structure.ts";
import type { GenerateParams, GenerationResult } from "./types.ts";

export interface RescoreReport {
  /**
   * Sampled (free) greedy tokens that the trainer's logits rank below another allowed id by more
   * than the model's tie tolerance (verifyTolerances): a real disagreement.
   */
  tokensMismatch: number;
  /** Greedy tokens whose trainer argmax differs only within the tie tolerance (float noise on a tie). */
  nearTies: number;
  /** Response positions whose RoPE position differs from the trainer's layout. */
  positionsMismatch: number;
  maxAbsLogprobDiff: number;
  scored: number;
}

/**
 * Logit gap below which two ids count as tied: a random checkpoint's logits are tiny and nearly
 * flat, so f32 reduction order alone can swap an argmax between engine and trainer.
 */
export const TIE_TOLERANCE = 1e-5;

/**
 * How closely engine and trainer must agree for a model: in f32/f64 the logits differ only by
 * reduction order (ties within TIE_TOLERANCE, log-probs within 1e-4). With bf16 GEMM inputs
 * (mixed precision) a different fp32 summation order before a cast can move an activation by one
 * bf16 ulp (2^-8 relative), which propagates: engine and trainer log-probs then differ by ~2e-3 on
 * the `small` preset (CUDA, fused decode path vs the masked forward), so ties are wider too.
 */
export function verifyTolerances(model: Pick<Qwen3Model, "gemmDtype">): { tie: number; logprob: number } {
  return model.gemmDtype === "bf16" ? { tie: 1e-2, logprob: 1e-2 } : { tie: TIE_TOLERANCE, logprob: 1e-4 };
}

export function rescoreTrajectory(
  model: Qwen3Model,
  vocab: EngineVocab,
  r: GenerationResult,
  mode: GenerateParams["mode"],
  greedy: boolean,
  forced: boolean,
  penalties: { trunk: number; branch: number } = { trunk: 1, branch: 1.02 },
): RescoreReport {
  const P = r.promptIds.length;
  const all = [...r.promptIds, ...r.ids];
  const complete = r.finishReason === "stop" && r.malformed === null;
  // A finished trajectory must lay out whole; a truncated one (length, malformed) up to where it stopped.
  const lay = trajectoryLayout({ promptLen: P, ids: all, tokenOf: (id) => vocab.parserToken(id), mode, allowIncomplete: !complete });
  invariant(lay.ok, () => `the trainer's layout rejected an engine trajectory: ${lay.ok ? "" : lay.why}`);
  const layout = lay.layout;
  let positionsMismatch = 0;
  for (let i = 0; i < r.ids.length; i++) if (layout.positions[P + i] !== r.positions[i]) positionsMismatch++;
  const logits = noGrad(() => model.forward(Int32Array.from(all), layout));
  const host = logits.toArray();
  logits.dispose();
  const V = model.config.vocabSize;
  const tie = verifyTolerances(model).tie;
  // In structure-forcing mode free tokens were drawn with tags and stop ids banned.
  const banned = new Set(forced ? [...vocab.tagIds, ...vocab.stopIds] : []);
  let tokensMismatch = 0;
  let nearTies = 0;
  let maxAbsLogprobDiff = 0;
  let scored = 0;
  for (let i = 0; i < r.ids.length; i++) {
    const lp = r.logprobs[i];
    if (lp === null || lp === undefined) continue;
    const t = P + i;
    const row = host.subarray((t - 1) * V, t * V);
    maxAbsLogprobDiff = Math.max(maxAbsLogprobDiff, Math.abs(logProbOf(row, r.ids[i]!) - lp));
    scored++;
    if (greedy && r.origins[i] === "sampled") {
      // The engine chose after the repetition penalty, scoped as it scopes it: a branch's own
      // tokens from its <step>, or every earlier response token on the trunk.
      const span = r.tree.find((sp) => sp.kind === "branch" && sp.start <= i && i < sp.end);
      const x = Float64Array.from(row);
      applyRepetitionPenalty(x, r.ids.slice(span ? span.start : 0, i), span ? penalties.branch : penalties.trunk);
      let best = -1;
      for (let v = 0; v < V; v++) if (!banned.has(v) && (best < 0 || x[v]! > x[best]!)) best = v;
      if (best !== r.ids[i]) {
        if (x[best]! - x[r.ids[i]!]! > tie) tokensMismatch++;
        else nearTies++;
      }
    }
  }
  return { tokensMismatch, nearTies, positionsMismatch, maxAbsLogprobDiff, scored };
}
