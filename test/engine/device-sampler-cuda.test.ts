/**
 * On-device sampling on CUDA (kernels/sample.cu through DeviceSampler) against the host sampler:
 * thousands of random rows at V = 151,936 and at small V (logits with ties, -inf entries, huge
 * spreads, flat rows), every parameter mix (greedy, temperature, top-k incl. k >= V, top-p incl.
 * tiny p, min-p, penalties with scopes, forced, banned), rows picked from a larger buffer. Each
 * id must equal sampleToken's with a clone of the stream's Rng in >= 99.99% of rows (mismatches
 * are printed with u's distance to the nearest cumulative boundary), log-probs within 1e-9
 * relative, and the Rng streams must end where the host's do; every path of sample.cu (greedy /
 * forced in sample_part, full-row draw, complete-set filters, the one-block fallback) must have
 * run. Prints the rows per path, the time per call for B = 1, 8, 16 at V = 151,936 (with the path
 * taken) and the packing time alone. Skipped without a GPU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { sampleProfile } from "../../src/tensor/backend/cuda/sampling.ts";
import { deviceSamplerFor, packSampleRows } from "../../src/engine/sampling/device-sampler.ts";
import {
  DEFAULT_SAMPLING,
  applyConstraint,
  applyRepetitionPenalty,
  applyTopK,
  applyTopPMinP,
  sampleToken,
  softmax,
} from "../../src/engine/sampling/sampler.ts";
import type { Constraint, SampleInput, SamplingParams } from "../../src/engine/sampling/sampler.ts";
import { Rng } from "../../src/util/rng.ts";

const why = cudaUnavailable();
const QWEN_V = 151936;

/** A row of logits of one of several shapes. */
function makeRow(rng: Rng, V: number, kind: number): Float32Array {
  const row = new Float32Array(V);
  const scale = [0.5, 2, 5][rng.int(3)]!;
  for (let i = 0; i < V; i++) {
    const z = rng.normal();
    switch (kind) {
      case 0:
        row[i] = z * scale;
        break; // plain
      case 1:
        row[i] = Math.round(z * 2) / 2;
        break; // many ties
      case 2:
        row[i] = rng.next() < 0.3 ? -Infinity : z * scale;
        break; // -inf entries
      case 3:
        row[i] = z * 300 + (rng.next() < 0.01 ? 1e4 : 0);
        break; // huge spread: underflowing probabilities
      case 4:
        row[i] = 1.5;
        break; // flat
      default:
        row[i] = i % 97 === 0 ? 20 + rng.int(3) : z; // a few peaks, some tied
    }
  }
  if (kind === 2) row[rng.int(V)] = 1; // at least one finite logit
  return row;
}

function makeInput(
  rng: Rng,
  V: number,
): { params: SamplingParams; constraint: Constraint; scope: number[]; penalty: number; seed: number } {
  const kind = rng.int(10);
  const pick = <X>(xs: X[]) => xs[rng.int(xs.length)]!;
  const params: SamplingParams = {
    ...DEFAULT_SAMPLING,
    temperature: kind === 0 ? 0 : pick([0.3, 0.7, 1, 1.3, 2.5]),
    topK: rng.next() < 0.45 ? pick([1, 2, 5, 50, 1000, 5000, V - 1, V, V + 7]) : 0,
    topP: rng.next() < 0.45 ? pick([1e-6, 0.1, 0.5, 0.9, 0.95, 0.999, 1 - 1e-12]) : 1,
    minP: rng.next() < 0.25 ? pick([0.001, 0.05, 0.2, 0.9]) : 0,
  };
  const constraint: Constraint =
    kind === 1
      ? { kind: "force", id: rng.int(V) }
      : kind === 2 || kind === 3
        ? { kind: "ban", ids: new Set(Array.from({ length: 1 + rng.int(Math.min(V, 40)) }, () => rng.int(V))) }
        : { kind: "free" };
  const scope = Array.from({ length: rng.int(Math.min(3 * V, 600)) }, () => rng.int(V));
  const penalty = rng.next() < 0.5 ? 1 : pick([1.02, 1.3, 0.8, 3]);
  return { params, constraint, scope, penalty, seed: rng.int(2 ** 31) };
}

/** u's distance to the nearest cumulative boundary of the host's final distribution. */
function boundaryDistance(row: Float32Array, s: SampleInput, u: number): number {
  const x = Float64Array.from(row);
  applyRepetitionPenalty(x, s.penaltyScope, s.penalty);
  applyConstraint(x, s.constraint);
  for (let i = 0; i < x.length; i++) x[i]! /= s.params.temperature;
  applyTopK(x, s.params.topK);
  applyTopPMinP(x, s.params.topP, s.params.minP);
  const p = softmax(x);
  let cum = 0;
  let d = Infinity;
  for (const v of p) {
    if (v === 0) continue;
    cum += v;
    d = Math.min(d, Math.abs(u - cum));
  }
  return d;
}

if (why) {
  test("device sampling on cuda", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();
  const sampler = deviceSamplerFor(be)!;

  /** Rows finished by each path of sample.cu so far (counters "sampleRows.path.<name>"). */
  const pathCounts = (): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(be.counters())) if (k.startsWith("sampleRows.path.")) out[k.slice(16)] = v;
    return out;
  };

  test("sampleRows equals sampleToken on random rows and parameter mixes", () => {
    assert.ok(sampler, "CudaBackend has sampleRows");
    const rng = new Rng(2024);
    const plan: Array<[V: number, batches: number]> = [
      [1, 40],
      [2, 60],
      [5, 150],
      [37, 250],
      [1000, 250],
      [4099, 120],
      [9000, 60],
      [QWEN_V, 40],
    ];
    let rows = 0;
    let mismatches = 0;
    let lpMaxRel = 0;
    let lpMaxAbs = 0;
    let lpBad = 0;
    let lpSumRel = 0;
    let lpCount = 0;
    const report: string[] = [];
    const before = be.counters()["sampleRows"] ?? 0;
    const pathsBefore = pathCounts();
    const t0 = performance.now();
    for (const [V, batches] of plan) {
      for (let bi = 0; bi < batches; bi++) {
        const B = 1 + rng.int(16);
        const R = B + 3;
        const host = new Float32Array(R * V);
        for (let r = 0; r < R; r++) host.set(makeRow(rng, V, rng.int(6)), r * V);
        const buf = be.alloc("f32", R * V);
        be.write(buf, host);
        const rowOf: number[] = [];
        const dev: Array<SampleInput | null> = [];
        const ref: Array<SampleInput | null> = [];
        const us: number[] = [];
        for (let i = 0; i < B; i++) {
          rowOf.push(rng.int(R));
          if (rng.next() < 0.1) {
            dev.push(null), ref.push(null), us.push(NaN);
            continue;
          }
          const m = makeInput(rng, V);
          const mk = (): SampleInput => ({
            params: m.params,
            rng: new Rng(m.seed),
            penaltyScope: m.scope,
            penalty: m.penalty,
            constraint: m.constraint,
          });
          dev.push(mk()), ref.push(mk()), us.push(new Rng(m.seed).next());
        }
        const got = sampler.sample(buf, V, rowOf, dev);
        be.free(buf);
        for (let i = 0; i < B; i++) {
          const r = ref[i];
          if (!r) {
            assert.equal(got[i], null);
            continue;
          }
          const row = host.subarray(rowOf[i]! * V, (rowOf[i]! + 1) * V);
          const want = sampleToken(row, r);
          const g = got[i]!;
          rows++;
          assert.equal(dev[i]!.rng.next(), r.rng.next(), "the device path's Rng advanced as the host's");
          if (g.id !== want.id) {
            mismatches++;
            const sampled = r.params.temperature > 0 && r.constraint.kind !== "force";
            const d = sampled ? boundaryDistance(row, r, us[i]!) : NaN;
            report.push(
              `V=${V} T=${r.params.temperature} k=${r.params.topK} p=${r.params.topP} minP=${r.params.minP} pen=${r.penalty} ${r.constraint.kind}: device ${g.id} host ${want.id}, u=${us[i]} boundary distance ${d.toExponential(2)}`,
            );
            continue;
          }
          if (Object.is(g.logprob, want.logprob) || (Number.isNaN(g.logprob) && Number.isNaN(want.logprob))) {
            lpCount++;
            continue;
          }
          // Relative 1e-9, or 1e-13 absolute: a log-prob near 0 is -log(sum) with sum ~ 1, whose
          // last bits depend on the summation order (the host's is sequential).
          const abs = Math.abs(g.logprob - want.logprob);
          const rel = abs / Math.max(Math.abs(want.logprob), 1e-300);
          if (!(rel <= 1e-9) && !(abs <= 1e-13)) {
            lpBad++;
            report.push(`V=${V} id ${g.id}: logprob ${g.logprob} host ${want.logprob} (rel ${rel})`);
          }
          lpMaxRel = Math.max(lpMaxRel, Number.isFinite(rel) ? rel : Infinity);
          lpMaxAbs = Math.max(lpMaxAbs, Number.isFinite(abs) ? abs : Infinity);
          lpSumRel += Number.isFinite(rel) ? rel : 0;
          lpCount++;
        }
      }
    }
    const ms = performance.now() - t0;
    console.log(
      `# ${rows} rows, ${mismatches} id mismatches (${((1 - mismatches / rows) * 100).toFixed(4)}% equal); logprob rel diff max ${lpMaxRel.toExponential(2)} (abs max ${lpMaxAbs.toExponential(2)}) mean ${(lpSumRel / Math.max(1, lpCount)).toExponential(2)}; ${ms.toFixed(0)} ms`,
    );
    for (const line of report.slice(0, 40)) console.log(`#   ${line}`);
    const paths = pathCounts();
    for (const k of Object.keys(paths)) paths[k]! -= pathsBefore[k] ?? 0;
    console.log(`# rows by path: ${JSON.stringify(paths)}`);
    assert.ok((be.counters()["sampleRows"] ?? 0) > before, "the CUDA op ran");
    // Every path must have run, so a fast path that always fell back would not pass unseen.
    for (const k of ["part", "full", "cand", "slow"]) assert.ok((paths[k] ?? 0) > 0, `no row took path ${k}`);
    assert.ok(rows >= 5000, `rows compared: ${rows}`);
    assert.ok(mismatches / rows <= 1e-4, `${mismatches} mismatches in ${rows} rows`);
    assert.equal(lpBad, 0, "log-probs beyond 1e-9 relative and 1e-13 absolute");
  });

  test("time per call at V = 151,936 (B = 1, 8, 16)", () => {
    const V = QWEN_V;
    const rng = new Rng(7);
    const R = 16;
    const host = new Float32Array(R * V);
    for (let i = 0; i < host.length; i++) host[i] = rng.normal() * 3;
    const buf = be.alloc("f32", R * V);
    be.write(buf, host);
    const configs: Array<[string, Partial<SamplingParams>]> = [
      ["greedy", { temperature: 0 }],
      ["temperature 0.8", { temperature: 0.8 }],
      ["top-p 0.95 + top-k 50", { temperature: 0.8, topP: 0.95, topK: 50 }],
      ["top-p 0.95 alone (no top-k)", { temperature: 0.8, topP: 0.95 }],
      ["top-k 50 + penalty 1.02 over 1000 ids", { temperature: 0.8, topK: 50 }],
    ];
    const lines: string[] = [];
    for (const [name, params] of configs) {
      for (const B of [1, 8, 16]) {
        const pen = name.includes("penalty");
        const items = () =>
          Array.from(
            { length: B },
            (_, i): SampleInput => ({
              params: { ...DEFAULT_SAMPLING, ...params },
              rng: new Rng(i),
              constraint: { kind: "free" },
              penaltyScope: pen ? Array.from({ length: 1000 }, (_, j) => (j * 151) % V) : [],
              penalty: pen ? 1.02 : 1,
            }),
          );
        const rowOf = Array.from({ length: B }, (_, i) => i);
        const its = items();
        for (let w = 0; w < 3; w++) sampler.sample(buf, V, rowOf, its);
        const n = 40;
        const t = performance.now();
        for (let k = 0; k < n; k++) sampler.sample(buf, V, rowOf, its);
        const us = ((performance.now() - t) / n) * 1000;
        const p0 = pathCounts();
        sampler.sample(buf, V, rowOf, its);
        const p1 = pathCounts();
        const took = Object.keys(p1)
          .filter((k) => p1[k] !== (p0[k] ?? 0))
          .join("+");
        // GPU time of the kernels alone (CUDA events), the rest of the call being host work.
        sampleProfile(be, true);
        for (let k = 0; k < 20; k++) sampler.sample(buf, V, rowOf, its);
        const pr = sampleProfile(be, false);
        lines.push(
          `${name.padEnd(40)} B=${String(B).padStart(2)}  ${us.toFixed(1)} us/call  (path ${took}; GPU: part ${pr.partUs.toFixed(1)} us, finish ${pr.finishUs.toFixed(1)} us)`,
        );
      }
    }
    // Packing alone (host), the penalty case at B = 16.
    {
      const its = Array.from(
        { length: 16 },
        (_, i): SampleInput => ({
          params: { ...DEFAULT_SAMPLING, temperature: 0.8, topK: 50 },
          rng: new Rng(i),
          constraint: { kind: "free" },
          penaltyScope: Array.from({ length: 1000 }, (_, j) => (j * 151) % V),
          penalty: 1.02,
        }),
      );
      const rowOf = its.map((_, i) => i);
      for (let w = 0; w < 10; w++) packSampleRows(rowOf, its);
      const t = performance.now();
      for (let k = 0; k < 100; k++) packSampleRows(rowOf, its);
      lines.push(`pack only, B=16 with 1000 penalty ids each: ${(((performance.now() - t) / 100) * 1000).toFixed(1)} us/call`);
    }
    // The fixed host costs of a call: a small synchronous upload and a small read-back (which also
    // reads the kernels' error word).
    {
      const small = be.alloc("i32", 64);
      const words = new Int32Array(40);
      const n = 200;
      let t = performance.now();
      for (let k = 0; k < n; k++) be.write(small, words);
      const wUs = ((performance.now() - t) / n) * 1000;
      t = performance.now();
      for (let k = 0; k < n; k++) be.read(small, 0, 4);
      const rUs = ((performance.now() - t) / n) * 1000;
      be.free(small);
      lines.push(`fixed host costs: write 40 words ${wUs.toFixed(1)} us, read 4 words ${rUs.toFixed(1)} us`);
    }
    // The host path for comparison: one row read back and sampled in TypeScript.
    const t = performance.now();
    const n = 5;
    for (let k = 0; k < n; k++) {
      const row = be.read(buf, 0, V) as Float32Array;
      sampleToken(row, {
        params: { ...DEFAULT_SAMPLING, temperature: 0.8, topP: 0.95, topK: 50 },
        rng: new Rng(k),
        constraint: { kind: "free" },
        penaltyScope: [],
        penalty: 1,
      });
    }
    lines.push(`host: read one row + sampleToken (top-p 0.95 + top-k 50): ${(((performance.now() - t) / n) * 1000).toFixed(0)} us/row`);
    be.free(buf);
    for (const l of lines) console.log(`# ${l}`);
  });
}
