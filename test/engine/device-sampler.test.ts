/**
 * DeviceSampler without a GPU: the packed layout against hand-built cases (records, row indices,
 * deduplicated penalty scopes, ban lists, forced and greedy rows), the Rng draws (one per sampled
 * row, none for greedy or forced rows: the same stream as sampleToken), and a round trip through a
 * fake backend that unpacks the words and runs sampleToken with the packed u, which must give
 * sampleItems' results on random rows of every parameter mix; deviceSamplerFor finds the op only
 * through the "deviceSampling" capability.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { DeviceSampler, IdDedupe, deviceSamplerFor, packSampleRows } from "../../src/engine/sampling/device-sampler.ts";
import { DEFAULT_SAMPLING, sampleToken } from "../../src/engine/sampling/sampler.ts";
import type { Constraint, SampleInput, SamplingParams } from "../../src/engine/sampling/sampler.ts";
import { SAMPLE_MODE, SAMPLE_REC as REC } from "../../src/tensor/index.ts";
import type { DeviceBuffer, DeviceSampling } from "../../src/tensor/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Rng } from "../../src/util/rng.ts";

function input(
  seed: number,
  params: Partial<SamplingParams>,
  constraint: Constraint = { kind: "free" },
  penaltyScope: number[] = [],
  penalty = 1,
): SampleInput {
  return { params: { ...DEFAULT_SAMPLING, ...params }, rng: new Rng(seed), penaltyScope, penalty, constraint };
}

/** The packed words read back: records, rows, and each row's penalty and ban ids. */
function unpack(words: Int32Array, B: number) {
  const f = new Float64Array(words.buffer, 0, REC * B);
  const base = 2 * REC * B;
  const penOff = base + B;
  const banOff = penOff + B + 1;
  const ids = banOff + B + 1;
  return Array.from({ length: B }, (_, b) => ({
    rec: Array.from(f.subarray(b * REC, (b + 1) * REC)),
    row: words[base + b]!,
    pen: Array.from(words.subarray(ids + words[penOff + b]!, ids + words[penOff + b + 1]!)),
    ban: Array.from(words.subarray(ids + words[banOff + b]!, ids + words[banOff + b + 1]!)),
  }));
}

test("pack: records, rows, CSR ids, modes and draws", () => {
  const a = input(1, { temperature: 0.7, topK: 50, topP: 0.9, minP: 0.05 }, { kind: "free" }, [5, 3, 5, 9, 3], 1.02);
  const g = input(2, { temperature: 0 }, { kind: "ban", ids: new Set([7, 8]) }, [1, 1, 2], 1.5);
  const f = input(3, { temperature: 1 }, { kind: "force", id: 42 }, [4, 5], 1.3);
  const n = input(4, { temperature: 1.2 }, { kind: "free" }, [6, 6], 1); // penalty 1: no ids
  const words = packSampleRows([3, 0, 7, 2], [a, g, f, n]);
  assert.equal(words.length, 2 * REC * 4 + 4 + 2 * 5 + 3 + 2 + 2);
  const u = unpack(words, 4);
  const ua = new Rng(1).next();
  const un = new Rng(4).next();
  assert.deepEqual(u[0], { rec: [0.7, 50, 0.9, 0.05, 1.02, ua, SAMPLE_MODE.sampled, -1], row: 3, pen: [5, 3, 9], ban: [] });
  assert.deepEqual(u[1], { rec: [0, 0, 1, 0, 1.5, 0, SAMPLE_MODE.greedy, -1], row: 0, pen: [1, 2], ban: [7, 8] });
  assert.deepEqual(u[2], { rec: [1, 0, 1, 0, 1.3, 0, SAMPLE_MODE.forced, 42], row: 7, pen: [], ban: [] });
  assert.deepEqual(u[3], { rec: [1.2, 0, 1, 0, 1, un, SAMPLE_MODE.sampled, -1], row: 2, pen: [], ban: [] });
  // Streams: one draw for each sampled row, none for the greedy and forced rows.
  const after = (seed: number, draws: number) => {
    const r = new Rng(seed);
    for (let i = 0; i < draws; i++) r.next();
    return r.next();
  };
  assert.equal(a.rng.next(), after(1, 1));
  assert.equal(g.rng.next(), after(2, 0));
  assert.equal(f.rng.next(), after(3, 0));
  assert.equal(n.rng.next(), after(4, 1));
});

/** A backend op in TypeScript: unpacks the words and runs sampleToken with the packed u. */
class FakeSampleRows implements DeviceSampling {
  readonly host: Float32Array;
  calls = 0;
  constructor(host: Float32Array) {
    this.host = host;
  }
  sampleRows(_logits: DeviceBuffer, packed: Int32Array, p: { batch: number; vocab: number }) {
    this.calls++;
    const rows = unpack(packed, p.batch);
    const ids = new Int32Array(p.batch);
    const logprobs = new Float64Array(p.batch);
    rows.forEach((r, b) => {
      const [temperature, topK, topP, minP, penalty, u, mode, forced] = r.rec;
      const constraint: Constraint =
        mode === SAMPLE_MODE.forced
          ? { kind: "force", id: forced! }
          : r.ban.length
            ? { kind: "ban", ids: new Set(r.ban) }
            : { kind: "free" };
      const rng = { next: () => u! } as unknown as Rng;
      const s: SampleInput = {
        params: { ...DEFAULT_SAMPLING, temperature: temperature!, topK: topK!, topP: topP!, minP: minP! },
        rng,
        penaltyScope: r.pen,
        penalty: penalty!,
        constraint,
      };
      const row = this.host.subarray(r.row * p.vocab, (r.row + 1) * p.vocab);
      const out = sampleToken(row, s);
      ids[b] = out.id;
      logprobs[b] = out.logprob;
    });
    return { ids, logprobs };
  }
}

test("round trip through a fake backend equals sampleToken on mixed rows, draws included", () => {
  const rng = new Rng(11);
  const V = 37;
  const numRows = 12;
  const host = Float32Array.from({ length: numRows * V }, () => (rng.next() < 0.1 ? -Infinity : rng.normal() * 3));
  const fake = new FakeSampleRows(host);
  const sampler = new DeviceSampler(fake);
  // The runner finds the op through the capability: a plain CPU backend has none; one that
  // declares "deviceSampling" (and has the method) gets a sampler.
  const cpu = new CpuBackend({ threads: 1 });
  assert.equal(deviceSamplerFor(cpu), null);
  Object.assign(cpu, { capabilities: ["deviceSampling"], sampleRows: fake.sampleRows.bind(fake) });
  assert.ok(deviceSamplerFor(cpu) instanceof DeviceSampler);
  let compared = 0;
  for (let step = 0; step < 40; step++) {
    const n = 1 + rng.int(9);
    const made: Array<[SampleInput, SampleInput] | null> = [];
    const rowOf: number[] = [];
    for (let i = 0; i < n; i++) {
      rowOf.push(rng.int(numRows));
      if (rng.next() < 0.2) {
        made.push(null);
        continue;
      }
      const seed = rng.int(1e9);
      const kind = rng.int(4);
      const params: Partial<SamplingParams> = {
        temperature: kind === 0 ? 0 : 0.3 + rng.next() * 1.5,
        topK: rng.next() < 0.5 ? rng.int(V + 5) : 0,
        topP: rng.next() < 0.5 ? 0.05 + rng.next() * 0.95 : 1,
        minP: rng.next() < 0.3 ? rng.next() * 0.5 : 0,
      };
      const c: Constraint =
        kind === 1
          ? { kind: "force", id: rng.int(V) }
          : kind === 2
            ? { kind: "ban", ids: new Set([rng.int(V), rng.int(V)]) }
            : { kind: "free" };
      const scope = Array.from({ length: rng.int(6) }, () => rng.int(V));
      const pen = rng.next() < 0.5 ? 1 : 1.02 + rng.next();
      made.push([input(seed, params, c, scope, pen), input(seed, params, c, scope, pen)]);
    }
    const got = sampler.sample(
      {} as DeviceBuffer,
      V,
      rowOf,
      made.map((m) => m?.[0] ?? null),
    );
    made.forEach((m, i) => {
      if (!m) return assert.equal(got[i], null);
      const want = sampleToken(host.subarray(rowOf[i]! * V, (rowOf[i]! + 1) * V), m[1]);
      assert.deepEqual(got[i], want, `step ${step} item ${i}`);
      // Both streams are at the same place afterwards.
      assert.equal(m[0].rng.next(), m[1].rng.next());
      compared++;
    });
  }
  assert.ok(compared > 100, `compared ${compared}`);
  assert.equal(sampler.rows, compared);
  console.log(`# round trip: ${compared} rows in ${fake.calls} calls, all equal to sampleToken`);
});

test("no sampling item: no backend call", () => {
  const fake = new FakeSampleRows(new Float32Array(4));
  const out = new DeviceSampler(fake).sample({} as DeviceBuffer, 4, [0, 0], [null, null]);
  assert.deepEqual(out, [null, null]);
  assert.equal(fake.calls, 0);
});

test("pack time: 16 rows with 1000-id penalty scopes (printed; the Set per row it replaced cost more)", () => {
  const rng = new Rng(5);
  const scope = Array.from({ length: 1000 }, () => rng.int(151936));
  const inputs = Array.from({ length: 16 }, (_, i) => input(i, { temperature: 0.8, topK: 50 }, { kind: "free" }, scope, 1.02));
  const rows = inputs.map((_, i) => i);
  const setPack = () => inputs.map((s) => [...new Set(s.penaltyScope)].length);
  for (let w = 0; w < 20; w++) packSampleRows(rows, inputs), setPack();
  const n = 200;
  let t = performance.now();
  let words: Int32Array = new Int32Array(0);
  for (let k = 0; k < n; k++) words = packSampleRows(rows, inputs);
  const packUs = ((performance.now() - t) / n) * 1000;
  t = performance.now();
  for (let k = 0; k < n; k++) setPack();
  const setUs = ((performance.now() - t) / n) * 1000;
  const distinct = new Set(scope).size;
  const u = unpack(words, 16);
  for (const r of u) assert.deepEqual(r.pen, [...new Set(scope)]);
  // A dedupe table kept across calls (a DeviceSampler's own) packs what a fresh one does.
  const kept = new IdDedupe();
  const fresh = () => inputs.map((s, i) => input(i, s.params, s.constraint, [...s.penaltyScope], s.penalty));
  for (let k = 0; k < 3; k++) assert.deepEqual(packSampleRows(rows, fresh(), kept), packSampleRows(rows, fresh()));
  console.log(
    `# pack 16 rows x 1000 penalty ids (${distinct} distinct): ${packUs.toFixed(1)} us/call (a Set per row alone: ${setUs.toFixed(1)} us)`,
  );
  // B = 1 without penalties: the common decode step.
  const one = [input(1, { temperature: 0.8, topP: 0.95 })];
  for (let w = 0; w < 50; w++) packSampleRows([0], one);
  t = performance.now();
  for (let k = 0; k < 2000; k++) packSampleRows([0], one);
  console.log(`# pack 1 row, no penalty: ${(((performance.now() - t) / 2000) * 1000).toFixed(2)} us/call`);
});
