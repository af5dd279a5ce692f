/**
 * generateNaive: the engine's test oracle (STYLE.md habit 15). One request, no cache, no
 * scheduler, no block tables: every step reruns the full forward over the serialized trajectory
 * with the trainer's layout (format/ trajectoryLayout: NPR's, causal in sequential mode), and
 * applies the same NPR policy serially: at </guideline> it writes branch 0's forced `<step>`
 * `N:`, at each </step> the next branch's, after the last one the forced `<takeaway>`. Streams
 * draw from the same derived seeds and scripts as the engine, so paged, forked, joined generation
 * must give the same tokens and log-probs. Budgets are not modelled (give it room).
 * Slow on purpose (quadratic); for tests and `npr engine verify` only.
 */
import { NprParser, trajectoryLayout } from "../format/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { noGrad } from "../tensor/index.ts";
import { invariant } from "../util/index.ts";
import { Rng } from "../util/index.ts";
import { sampleToken, streamSeed } from "./sampling/sampler.ts";
import type { Constraint } from "./sampling/sampler.ts";
import { branchScript, joinScript, rootScript, sequentialScript } from "./forced-structure.ts";
import type { EngineVocab, ScriptItem } from "./forced-structure.ts";
import { resolveParams } from "./types.ts";
import type { GenerateParams, TokenOrigin } from "./types.ts";

export interface NaiveResult {
  ids: number[];
  logprobs: Array<number | null>;
  origins: TokenOrigin[];
}

export function generateNaive(model: Qwen3Model, vocab: EngineVocab, prompt: readonly number[], raw: Partial<GenerateParams>): NaiveResult {
  const p = resolveParams(raw);
  const P = prompt.length;
  const tokens = [...prompt];
  const out: NaiveResult = { ids: [], logprobs: [], origins: [] };
  const parser = new NprParser({ maxPlans: p.maxPlans });
  const banned = new Set([...vocab.tagIds, ...vocab.stopIds]);
  const fs = p.forceStructure;
  let stream = {
    kind: "trunk" as "trunk" | "branch",
    rng: new Rng(streamSeed(p.seed, -1, 0)),
    penalty: p.repetitionPenalty,
    script: (fs ? (p.mode === "sequential" ? sequentialScript(vocab, fs) : rootScript(vocab, fs)) : null) as ScriptItem[] | null,
    pos: 0,
    ownStart: P,
  };
  let block = -1;
  let plans: string[] = [];
  let branch = 0;
  const push = (id: number, lp: number | null, origin: TokenOrigin) => {
    tokens.push(id);
    out.ids.push(id);
    out.logprobs.push(lp);
    out.origins.push(origin);
  };
  const forced = (ids: number[]) => {
    for (const id of ids) {
      push(id, null, "engine");
      parser.push(vocab.parserToken(id));
    }
  };
  const openBranch = (i: number) => {
    branch = i;
    stream = {
      kind: "branch",
      rng: new Rng(streamSeed(p.seed, block, i)),
      penalty: p.branchRepetitionPenalty,
      script: fs ? branchScript(vocab, fs, block) : null,
      pos: 0,
      ownStart: tokens.length,
    };
    forced([vocab.tag("<step>"), ...vocab.numberIds(plans[i]!)]);
  };

  while (out.ids.length < p.maxNewTokens) {
    // The generator stops at the first malformed token, so its prefix always lays out.
    const lay = trajectoryLayout({
      promptLen: P,
      ids: tokens,
      tokenOf: (id) => vocab.parserToken(id),
      mode: p.mode,
      allowIncomplete: true,
    });
    invariant(lay.ok, () => `the trainer's layout rejected the naive trajectory: ${lay.ok ? "" : lay.why}`);
    const layout = lay.layout;
    const logits = noGrad(() => model.forward(Int32Array.from(tokens), layout));
    const V = model.config.vocabSize;
    const row = logits.toArray().subarray((tokens.length - 1) * V, tokens.length * V);
    logits.dispose();
    let constraint: Constraint = { kind: "free" };
    if (stream.script) {
      const item = stream.script[stream.pos] ?? "free";
      constraint = item === "free" ? { kind: "ban", ids: banned } : { kind: "force", id: item };
    }
    const scope = stream.penalty === 1 ? [] : tokens.slice(stream.kind === "branch" ? stream.ownStart : P);
    const s = sampleToken(row, { params: p, rng: stream.rng, penaltyScope: scope, penalty: stream.penalty, constraint });
    push(s.id, s.logprob, constraint.kind === "force" ? "script" : "sampled");
    stream.pos++;
    if (vocab.stopIds.has(s.id)) break;
    const ev = parser.push(vocab.parserToken(s.id));
    if (ev.kind === "malformed") break;
    if (p.mode !== "parallel") continue;
    if (ev.kind === "fork") {
      block++;
      plans = ev.plans;
      openBranch(0);
    } else if (ev.kind === "branch-end" && stream.kind === "branch") {
      if (branch + 1 < plans.length) openBranch(branch + 1);
      else {
        stream = {
          kind: "trunk",
          rng: new Rng(streamSeed(p.seed, block, -1)),
          penalty: p.repetitionPenalty,
          script: fs ? joinScript(vocab, fs, block) : null,
          pos: 0,
          ownStart: P,
        };
        forced([vocab.tag("<takeaway>")]);
      }
    }
  }
  return out;
}
