/**
 * The RL losses and their host-side numbers (src/train/policy-loss.ts, advantages.ts) against
 * independent float64 computations written here with plain loops: DAPO's clipped surrogate on
 * ratios both sides of both clip edges and past the dual clip; the step token mean over two
 * micro-batches of different lengths; PAPO's batch-std advantage; PAPO's gradient w.r.t. logits
 * through the library's log-softmax/gather path against the analytic advantage-weighted
 * log-likelihood gradient; forced tokens with exactly zero gradient; the dynamic-sampling filter
 * on binary accuracy; the overlong penalty at its edges; the stage rewards.
 * Each check is a function of the implementation under test, also run against deliberately wrong
 * variants (a wrong denominator, clip bounds, advantage normalization, filter, mask), which must
 * fail: one line is printed per mutant caught.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import * as F from "../../src/tensor/ops.ts";
import { Rng } from "../../src/util/rng.ts";
import { dynamicSamplingFilter, grpoAdvantages, overlongPenalty, papoAdvantages, rolloutReward } from "../../src/train/advantages.ts";
import {
  DAPO_CLIP,
  dapoTokenLoss,
  papoTokenLoss,
  stepTokenCount,
  type ClipCounts,
  type ClipOptions,
  type PolicyLoss,
  type PolicyTokens,
} from "../../src/train/policy-loss.ts";
import { checkClose, formatStats } from "../util/check-close.ts";

const backend = new CpuBackend({ useBlas: false, threads: 1 });
const TOL = { atol: 1e-14, rtol: 1e-12 };

function f64(values: ArrayLike<number>, shape: readonly number[], requiresGrad = true): Tensor {
  return Tensor.fromArray(Float64Array.from(values), shape, { dtype: "f64", backend, requiresGrad });
}

/** Runs `check` against `mutant` and asserts it throws; prints one line per mutant caught. */
function expectCaught<I>(what: string, check: (impl: I) => void, mutant: I): void {
  let caught: unknown = null;
  try {
    check(mutant);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught, `mutant NOT caught: ${what}`);
  const msg = String((caught as Error).message);
  const diff = /max abs diff [^,]+/.exec(msg)?.[0] ?? msg.split("\n")[0]!.slice(0, 60);
  console.log(`  mutant caught: ${what} (${diff})`);
}

// ---- DAPO

type DapoInput = PolicyTokens & { oldLogp: ArrayLike<number>; clip: ClipOptions };
type DapoImpl = (p: DapoInput) => PolicyLoss;

interface HostBatch {
  logp: number[];
  old: number[];
  adv: number[];
  mask: number[];
}

/** The DAPO loss, its gradient w.r.t. logp and the clip counts, in float64 with plain loops. */
function refDapo(b: HostBatch, denominator: number, clip: ClipOptions): { loss: number; grad: number[]; counts: ClipCounts } {
  let loss = 0;
  const grad = b.logp.map(() => 0);
  const counts: ClipCounts = { tokens: 0, clipLow: 0, clipHigh: 0, dualClip: 0, klSum: 0 };
  for (let t = 0; t < b.logp.length; t++) {
    if (b.mask[t] === 0) continue;
    const a = b.adv[t]!;
    const r = Math.exp(b.logp[t]! - b.old[t]!);
    const rc = Math.min(Math.max(r, 1 - clip.clipLow), 1 + clip.clipHigh);
    let s = r * a;
    let ds = r * a; // d s / d logp
    if (rc * a < r * a) {
      s = rc * a;
      ds = 0;
    }
    if (clip.dualClip !== null && a < 0 && clip.dualClip * a > s) {
      s = clip.dualClip * a;
      ds = 0;
      counts.dualClip++;
    }
    loss -= s / denominator;
    grad[t] = -ds / denominator;
    counts.tokens++;
    counts.klSum += b.old[t]! - b.logp[t]!;
    if (a < 0 && r < 1 - clip.clipLow) counts.clipLow++;
    if (a > 0 && r > 1 + clip.clipHigh) counts.clipHigh++;
  }
  return { loss, grad, counts };
}

/** Runs an implementation on a host batch: the loss value, d loss / d logp and the counts. */
function runDapo(
  impl: DapoImpl,
  b: HostBatch,
  denominator: number,
  clip: ClipOptions,
): { loss: number; grad: number[]; counts: ClipCounts } {
  const logp = f64(b.logp, [b.logp.length]);
  const out = impl({ logp, oldLogp: b.old, advantages: b.adv, mask: b.mask, denominator, clip });
  out.loss.backward();
  return { loss: out.loss.item(), grad: Array.from(logp.grad!.toArray()), counts: out.counts };
}

/**
 * A hand-made batch: log-ratios both sides of log(1 - 0.2), log(1 + 0.28) and log(10), for a
 * positive, a negative and a zero advantage; plus two masked tokens whose ratio is huge (as a
 * padded position may be).
 */
function handBatch(): HostBatch {
  const ratios = [0.5, 0.79, 0.81, 1, 1.27, 1.29, 2, 9.9, 12];
  const b: HostBatch = { logp: [], old: [], adv: [], mask: [] };
  for (const a of [1.5, -0.8, 0]) {
    ratios.forEach((r, i) => {
      const old = -0.3 - 0.1 * i;
      b.old.push(old);
      b.logp.push(old + Math.log(r));
      b.adv.push(a);
      b.mask.push(1);
    });
  }
  b.old.push(-50, -1);
  b.logp.push(-1, -60);
  b.adv.push(-1.1, 2);
  b.mask.push(0, 0);
  return b;
}

function checkDapoHand(impl: DapoImpl): void {
  const b = handBatch();
  const N = stepTokenCount([b.mask]);
  for (const clip of [DAPO_CLIP, { ...DAPO_CLIP, dualClip: null }]) {
    const got = runDapo(impl, b, N, clip);
    const want = refDapo(b, N, clip);
    const v = checkClose("dapo loss value", [got.loss], [want.loss], TOL);
    const g = checkClose("dapo d loss / d logp", got.grad, want.grad, TOL);
    assert.deepEqual({ ...got.counts, klSum: 0 }, { ...want.counts, klSum: 0 }, "clip counts");
    checkClose("dapo kl sum", [got.counts.klSum], [want.counts.klSum], TOL);
    // The masked tokens (the last two) get exactly zero gradient; so do the clipped ones.
    assert.ok(Object.is(Math.abs(got.grad.at(-1)!), 0) && Object.is(Math.abs(got.grad.at(-2)!), 0), "masked tokens' gradient");
    for (let t = 0; t < want.grad.length; t++) if (want.grad[t] === 0) assert.equal(Math.abs(got.grad[t]!), 0, `token ${t} gradient`);
    if (impl === dapoTokenLoss) {
      console.log(`  dual clip ${clip.dualClip}: counts ${JSON.stringify(want.counts, (k, x) => (k === "klSum" ? undefined : x))}`);
      console.log(`  ${formatStats("value", v)}; ${formatStats("gradient", g)}`);
    }
  }
}

test("DAPO surrogate: ratios both sides of both clip edges and the dual clip, vs float64 loops", () => {
  checkDapoHand(dapoTokenLoss);
  const want = refDapo(handBatch(), 27, DAPO_CLIP).counts;
  // By construction: A < 0 with r in {0.5, 0.79}; A > 0 with r in {1.29, 2, 9.9, 12}; A < 0, r = 12.
  assert.deepEqual([want.clipLow, want.clipHigh, want.dualClip, want.tokens], [2, 4, 1, 27]);
  expectCaught("clip bounds swapped (0.28 low / 0.2 high)", checkDapoHand, (p) =>
    dapoTokenLoss({ ...p, clip: { ...p.clip, clipLow: p.clip.clipHigh, clipHigh: p.clip.clipLow } }),
  );
  expectCaught("symmetric clip 0.2 / 0.2 (no clip-higher)", checkDapoHand, (p) =>
    dapoTokenLoss({ ...p, clip: { ...p.clip, clipHigh: p.clip.clipLow } }),
  );
  expectCaught("dual clip ignored", checkDapoHand, (p) => dapoTokenLoss({ ...p, clip: { ...p.clip, dualClip: null } }));
  expectCaught("mask ignored (padded tokens in the loss)", checkDapoHand, (p) =>
    dapoTokenLoss({ ...p, mask: Array.from(p.mask, () => 1) }),
  );
});

/** Random micro-batch of T tokens: log-ratios in about [-0.6, 0.6], a few masked tokens. */
function randomBatch(rng: Rng, T: number): HostBatch {
  const b: HostBatch = { logp: [], old: [], adv: [], mask: [] };
  for (let t = 0; t < T; t++) {
    const old = -1 - Math.abs(rng.normal());
    b.old.push(old);
    b.logp.push(old + 0.3 * rng.normal());
    b.adv.push(rng.normal());
    b.mask.push(rng.uniform(0, 1) < 0.2 ? 0 : 1);
  }
  return b;
}

/** A step of micro-batches (each loss with the denominator the implementation is handed). */
type StepImpl = (micro: HostBatch[]) => { loss: number; grads: number[][] };

function stepOf(impl: DapoImpl, denominatorOf: (micro: HostBatch[], m: number) => number): StepImpl {
  return (micro) => {
    let loss = 0;
    const grads = micro.map((b, m) => {
      const out = runDapo(impl, b, denominatorOf(micro, m), DAPO_CLIP);
      loss += out.loss;
      return out.grad;
    });
    return { loss, grads };
  };
}

function checkTokenMean(step: StepImpl): void {
  const rng = new Rng(7);
  const micro = [randomBatch(rng, 6), randomBatch(rng, 23)];
  const got = step(micro);
  // The one-batch reference: every token of the step together, one token mean.
  const whole: HostBatch = { logp: [], old: [], adv: [], mask: [] };
  for (const b of micro) for (const k of ["logp", "old", "adv", "mask"] as const) whole[k].push(...b[k]);
  const N = whole.mask.filter((m) => m !== 0).length;
  const want = refDapo(whole, N, DAPO_CLIP);
  const v = checkClose("token mean over micro-batches vs one batch: value", [got.loss], [want.loss], TOL);
  const g = checkClose("token mean over micro-batches vs one batch: gradient", got.grads.flat(), want.grad, TOL);
  if (got.grads.length === 2 && step === realStep)
    console.log(`  micro-batches of 6 and 23 tokens, N = ${N}: ${formatStats("value", v)}; ${formatStats("gradient", g)}`);
}

const realStep = stepOf(dapoTokenLoss, (micro) => stepTokenCount(micro.map((b) => b.mask)));

test("token mean: two micro-batches of different lengths sum to the one-batch token mean", () => {
  checkTokenMean(realStep);
  // Also through the library directly: one call on the concatenated batch.
  checkTokenMean((micro) => {
    const whole: HostBatch = { logp: [], old: [], adv: [], mask: [] };
    for (const b of micro) for (const k of ["logp", "old", "adv", "mask"] as const) whole[k].push(...b[k]);
    const out = runDapo(dapoTokenLoss, whole, stepTokenCount([whole.mask]), DAPO_CLIP);
    return { loss: out.loss, grads: [out.grad] };
  });
  expectCaught(
    "per-micro-batch denominator",
    checkTokenMean,
    stepOf(dapoTokenLoss, (micro, m) => stepTokenCount([micro[m]!.mask])),
  );
  expectCaught(
    "denominator counts masked tokens",
    checkTokenMean,
    stepOf(dapoTokenLoss, (micro) => micro.reduce((n, b) => n + b.mask.length, 0)),
  );
  expectCaught(
    "mean of micro-batch means (denominator = own count x micro-batches)",
    checkTokenMean,
    stepOf(dapoTokenLoss, (micro, m) => stepTokenCount([micro[m]!.mask]) * micro.length),
  );
});

// ---- advantages

/** Plain-loop mean and unbiased std (torch.std). */
function refMean(xs: number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}
function refStd(xs: number[]): number {
  const m = refMean(xs);
  let ss = 0;
  for (const x of xs) ss += (x - m) ** 2;
  return Math.sqrt(ss / (xs.length - 1));
}

type AdvImpl = (groups: number[][]) => number[][];

/** A PAPO step: groups of 4 after some rollouts were dropped (sizes differ), one zero-spread group. */
function rewardGroups(): number[][] {
  return [
    [1, -1, -1, 1],
    [1, 1, -1],
    [-1, -1, -1, -1],
    [1, -1],
    [-1, 1, 1, 1],
  ];
}

function checkPapoAdvantages(impl: AdvImpl): void {
  const groups = rewardGroups();
  const all = groups.flat();
  const s = refStd(all);
  const want = groups.map((g) => g.map((r) => (r - refMean(g)) / (s + 1e-6)));
  const got = impl(groups);
  const st = checkClose("PAPO advantages", got.flat(), want.flat(), TOL);
  assert.deepEqual(got[2], [0, 0, 0, 0], "a zero-spread group gets A = 0");
  if (impl === papoAdvantages) console.log(`  batch std ${s.toFixed(6)} over ${all.length} rewards; ${formatStats("PAPO advantages", st)}`);
}

/** The released NPR loop: scores[i] overwritten in place, torch.std(scores) recomputed each time. */
function releasedInPlace(groups: number[][]): number[][] {
  const scores = groups.flat();
  const means = groups.flatMap((g) => g.map(() => refMean(g)));
  for (let i = 0; i < scores.length; i++) scores[i] = (scores[i]! - means[i]!) / (refStd(scores) + 1e-6);
  let k = 0;
  return groups.map((g) => g.map(() => scores[k++]!));
}

test("PAPO advantages: group mean over one batch std computed once, vs float64 loops", () => {
  checkPapoAdvantages(papoAdvantages);
  expectCaught("group std instead of batch std (GRPO)", checkPapoAdvantages, (g) => grpoAdvantages(g));
  expectCaught("the released in-place std loop", checkPapoAdvantages, releasedInPlace);
  expectCaught("std without Bessel's correction", checkPapoAdvantages, (g) => {
    const n = g.flat().length;
    return papoAdvantages(g).map((row) => row.map((a) => a * Math.sqrt(n / (n - 1))));
  });
  expectCaught("batch mean as the baseline", checkPapoAdvantages, (g) => {
    const all = g.flat();
    return g.map((row) => row.map((r) => (r - refMean(all)) / (refStd(all) + 1e-6)));
  });
});

test("GRPO advantages: group mean and group std, zero-spread groups 0, a group of one as verl", () => {
  const groups = [[1, -1, -1, 1, 1], [-0.4, 1, -1.5], [1, 1, 1], [0.7]];
  const got = grpoAdvantages(groups);
  const want = groups.map((g) => (g.length === 1 ? g.map((r) => r / (1 + 1e-6)) : g.map((r) => (r - refMean(g)) / (refStd(g) + 1e-6))));
  const st = checkClose("GRPO advantages", got.flat(), want.flat(), TOL);
  console.log(`  ${formatStats("GRPO advantages", st)}`);
  assert.deepEqual(got[2], [0, 0, 0]);
});

// ---- filter, overlong, rewards

interface ScoredGroup {
  correct: boolean[];
  score: number[];
}
type FilterImpl = (groups: ScoredGroup[]) => number[];

function checkFilter(impl: FilterImpl): void {
  // Group 0: all wrong, shaped scores differ (format penalties): binary accuracy has no spread.
  // Group 1: mixed. Group 2: all correct, scores differ by overlong shaping. Group 3: mixed.
  const groups: ScoredGroup[] = [
    { correct: [false, false, false, false], score: [-1, -1.4, -2, -1] },
    { correct: [true, false, false, true], score: [1, -1, -1, 0.9] },
    { correct: [true, true, true], score: [1, 0.7, 1] },
    { correct: [false, true], score: [-1.2, 1] },
    { correct: [false, false], score: [-1, -1] },
  ];
  assert.deepEqual(impl(groups), [1, 3]);
}

test("dynamic-sampling filter: keeps groups whose binary accuracy has spread, not the shaped score", () => {
  const real: FilterImpl = (gs) => dynamicSamplingFilter(gs.map((g) => g.correct)).kept;
  checkFilter(real);
  const f = dynamicSamplingFilter([
    [false, false],
    [true, false],
    [true, true, true],
    [false, true, true],
  ]);
  assert.deepEqual(f, { kept: [1, 3], groupsDropped: 2, allCorrect: 1, allWrong: 1 });
  console.log(`  ${JSON.stringify(f)}`);
  expectCaught("filter on the shaped score's spread", checkFilter, (gs) =>
    gs.flatMap((g, i) => (Math.max(...g.score) > Math.min(...g.score) ? [i] : [])),
  );
  expectCaught("filter keeps all-correct groups", checkFilter, (gs) => gs.flatMap((g, i) => (g.correct.some((c) => c) ? [i] : [])));
});

test("overlong penalty: 0 up to maxLen - buffer, linear to -factor at maxLen", () => {
  const opts = { maxLen: 30, buffer: 10, factor: 1 };
  const ref = (len: number, o: typeof opts) => (len <= o.maxLen - o.buffer ? 0 : -o.factor * ((len - (o.maxLen - o.buffer)) / o.buffer));
  const lens = [0, 1, 19, 20, 21, 25, 29, 30];
  for (const o of [opts, { maxLen: 30, buffer: 10, factor: 0.5 }, { maxLen: 8, buffer: 8, factor: 2 }]) {
    const got = lens.filter((l) => l <= o.maxLen).map((l) => overlongPenalty(l, o));
    const want = lens.filter((l) => l <= o.maxLen).map((l) => ref(l, o));
    const st = checkClose("overlong penalty", got, want, TOL);
    console.log(`  ${JSON.stringify(o)}: ${got.map((x) => x.toFixed(2)).join(" ")} (${formatStats("vs formula", st)})`);
  }
  // The edges exactly: nothing at maxLen - buffer, one step of factor / buffer after, -factor at maxLen.
  assert.equal(overlongPenalty(20, opts), 0);
  assert.equal(overlongPenalty(21, opts), -0.1);
  assert.equal(overlongPenalty(30, opts), -1);
  assert.throws(() => overlongPenalty(31, opts), /outside/);
});

test("rewards: +-1 accuracy; the paper's format rule and the released accuracy-only switch", () => {
  const paper = { format: "paper" as const };
  const released = { format: "accuracy-only" as const };
  assert.equal(rolloutReward(true, 0, paper), 1);
  assert.equal(rolloutReward(false, 0, paper), -1);
  assert.equal(rolloutReward(true, -0.4, paper), -0.4); // accuracy counts only when the format passes
  assert.equal(rolloutReward(false, -1.5, paper), -1.5);
  assert.equal(rolloutReward(true, -0.4, released), 1);
  assert.equal(rolloutReward(false, -1.5, released), -1);
  assert.throws(() => rolloutReward(true, 0.5, paper), /format score/);
});

// ---- PAPO

/**
 * A small [T, V] logits path: three rollouts of lengths 4, 6 and 5 with advantages, their
 * forced tokens (mask 0) at a few places.
 */
function papoCase(): { logits: number[]; targets: number[]; adv: number[]; mask: number[]; T: number; V: number } {
  const rng = new Rng(21);
  const V = 7;
  const lens = [4, 6, 5];
  const rolloutAdv = [0.9, -1.3, 0];
  const adv: number[] = [];
  const mask: number[] = [];
  lens.forEach((n, r) => {
    for (let i = 0; i < n; i++) {
      adv.push(rolloutAdv[r]!);
      mask.push(i === 0 || (r === 1 && i === 3) ? 0 : 1); // forced: each rollout's first token and one more
    }
  });
  const T = adv.length;
  const logits = Array.from({ length: T * V }, () => 2 * rng.normal());
  const targets = Array.from({ length: T }, () => Math.floor(rng.uniform(0, 1) * V));
  return { logits, targets, adv, mask, T, V };
}

type PapoImpl = (p: PolicyTokens) => PolicyLoss;

function checkPapo(impl: PapoImpl): void {
  const c = papoCase();
  const N = stepTokenCount([c.mask]);
  const logits = f64(c.logits, [c.T, c.V]);
  const targets = Tensor.fromArray(Int32Array.from(c.targets), [c.T], { dtype: "i32", backend });
  const out = impl({ logp: F.logprobs(logits, targets), advantages: c.adv, mask: c.mask, denominator: N });
  out.loss.backward();
  const got = Array.from(logits.grad!.toArray());
  // Analytic, plain loops: d/dz_tv of -(1/N) sum_t A_t m_t log softmax(z_t)[y_t]
  //   = -(A_t m_t / N) (1[v = y_t] - softmax(z_t)_v).
  const want: number[] = [];
  let value = 0;
  for (let t = 0; t < c.T; t++) {
    const row = c.logits.slice(t * c.V, (t + 1) * c.V);
    const mx = Math.max(...row);
    let z = 0;
    for (const x of row) z += Math.exp(x - mx);
    const w = c.mask[t] === 0 ? 0 : -c.adv[t]! / N;
    if (c.mask[t] !== 0) value -= c.adv[t]! / N;
    for (let v = 0; v < c.V; v++) want.push(w === 0 ? 0 : w * ((v === c.targets[t] ? 1 : 0) - Math.exp(row[v]! - mx) / z));
  }
  const vs = checkClose("PAPO value (ratio 1)", [out.loss.item()], [value], TOL);
  const gs = checkClose("PAPO d loss / d logits vs advantage-weighted log-likelihood", got, want, TOL);
  // Forced tokens: their whole logits row gets exactly zero gradient.
  for (let t = 0; t < c.T; t++) {
    if (c.mask[t] !== 0) continue;
    for (let v = 0; v < c.V; v++) assert.equal(Math.abs(got[t * c.V + v]!), 0, `forced token ${t}, logit ${v}`);
  }
  assert.equal(out.counts.tokens, N);
  if (impl === papoTokenLoss)
    console.log(`  T=${c.T} V=${c.V} N=${N}: ${formatStats("value", vs)}; ${formatStats("gradient w.r.t. logits", gs)}`);
}

test("PAPO loss: ratio 1, gradient w.r.t. logits = the advantage-weighted log-likelihood gradient; forced tokens 0", () => {
  checkPapo(papoTokenLoss);
  // The same gradient through the library's own ops: -(1/N) sum A m logp.
  const c = papoCase();
  const N = stepTokenCount([c.mask]);
  const grads = [0, 1].map((k) => {
    const logits = f64(c.logits, [c.T, c.V]);
    const lp = F.logprobs(logits, Tensor.fromArray(Int32Array.from(c.targets), [c.T], { dtype: "i32", backend }));
    const w = f64(
      c.adv.map((a, t) => a * c.mask[t]!),
      [c.T],
      false,
    );
    const loss =
      k === 0
        ? papoTokenLoss({ logp: lp, advantages: c.adv, mask: c.mask, denominator: N }).loss
        : F.mulScalar(F.sum(F.mul(lp, w)), -1 / N);
    loss.backward();
    return Array.from(logits.grad!.toArray());
  });
  console.log(
    `  ${formatStats("PAPO vs -(1/N) sum A m logp through the ops", checkClose("papo vs weighted nll", grads[0]!, grads[1]!, TOL))}`,
  );
  expectCaught("PAPO mask ignored (forced tokens carry loss)", checkPapo, (p) =>
    papoTokenLoss({ ...p, mask: Array.from(p.mask, () => 1) }),
  );
  expectCaught("PAPO denominator counts forced tokens", checkPapo, (p) => papoTokenLoss({ ...p, denominator: p.mask.length }));
  expectCaught("PAPO advantages not applied (sign flipped)", checkPapo, (p) =>
    papoTokenLoss({ ...p, advantages: Array.from(p.advantages, (a) => -a) }),
  );
});

test("DAPO and PAPO in f32: the same numbers as f64 within f32 rounding", () => {
  const b = handBatch();
  const N = stepTokenCount([b.mask]);
  const want = refDapo(b, N, DAPO_CLIP);
  const logp = Tensor.fromArray(Float32Array.from(b.logp), [b.logp.length], { dtype: "f32", backend, requiresGrad: true });
  const out = dapoTokenLoss({ logp, oldLogp: b.old, advantages: b.adv, mask: b.mask, denominator: N, clip: DAPO_CLIP });
  out.loss.backward();
  const tol = { atol: 1e-5, rtol: 1e-5 };
  const v = checkClose("f32 DAPO value", [out.loss.item()], [want.loss], tol);
  const g = checkClose("f32 DAPO gradient", logp.grad!.toArray(), want.grad, tol);
  const p = papoTokenLoss({ logp, advantages: b.adv, mask: b.mask, denominator: N }).loss.item();
  const pv = checkClose("f32 PAPO value", [p], [-b.adv.reduce((s, a, t) => s + a * b.mask[t]!, 0) / N], tol);
  console.log(`  ${formatStats("f32 DAPO value", v)}; ${formatStats("gradient", g)}; ${formatStats("PAPO value", pv)}`);
});

test("DAPO through logits: forced tokens get exactly zero gradient, the rest match the surrogate", () => {
  const c = papoCase();
  const N = stepTokenCount([c.mask]);
  const logits = f64(c.logits, [c.T, c.V]);
  const lp = F.logprobs(logits, Tensor.fromArray(Int32Array.from(c.targets), [c.T], { dtype: "i32", backend }));
  const lpHost = Array.from(lp.toArray());
  // Old log-probs shifted so some tokens clip: every third token's ratio is 1.5.
  const old = lpHost.map((x, t) => (t % 3 === 0 ? x - Math.log(1.5) : x + 0.05));
  const out = dapoTokenLoss({ logp: lp, oldLogp: old, advantages: c.adv, mask: c.mask, denominator: N, clip: DAPO_CLIP });
  out.loss.backward();
  const got = Array.from(logits.grad!.toArray());
  const ref = refDapo({ logp: lpHost, old, adv: c.adv, mask: c.mask }, N, DAPO_CLIP);
  const want: number[] = [];
  for (let t = 0; t < c.T; t++) {
    const row = c.logits.slice(t * c.V, (t + 1) * c.V);
    const mx = Math.max(...row);
    let z = 0;
    for (const x of row) z += Math.exp(x - mx);
    for (let v = 0; v < c.V; v++) want.push(ref.grad[t]! * ((v === c.targets[t] ? 1 : 0) - Math.exp(row[v]! - mx) / z));
  }
  const st = checkClose("DAPO d loss / d logits", got, want, TOL);
  console.log(`  clipHigh ${out.counts.clipHigh} of ${out.counts.tokens}; ${formatStats("DAPO gradient w.r.t. logits", st)}`);
  assert.ok(out.counts.clipHigh > 0);
  for (let t = 0; t < c.T; t++) {
    if (c.mask[t] !== 0) continue;
    for (let v = 0; v < c.V; v++) assert.equal(Math.abs(got[t * c.V + v]!), 0, `forced token ${t}`);
  }
});
