/**
 * The decode attention planner (src/tensor/backend/decode-attention-plan.ts) on random row sets shaped like the
 * engine's: siblings sharing a fragmented prefix with copy-on-write tails, nested forks, single
 * long rows, independent rows and padding rows. Checks that each row's keys are covered exactly
 * once, that every key lies in exactly one item (shared keys are read once), the item limits, and
 * that a float64 evaluation of the packed plan (partials per item, then the combine) equals direct
 * softmax attention within 1e-12; plus the capacity helpers and the packed layout's offsets (the
 * CUDA kernels compute the same ones). No GPU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  MAX_CHUNK,
  MAX_RANGES_PER_ITEM,
  PLAN_COUNTERS_PER_ROW,
  autoChunk,
  capacityFits,
  growCapacity,
  packPlan,
  planAttention,
  planCapacityNeeded,
  planLayout,
  slotRanges,
} from "../../src/tensor/backend/decode-attention-plan.ts";
import type { AttentionPlan, PlanLayout } from "../../src/tensor/backend/decode-attention-plan.ts";
import { Rng } from "../../src/util/rng.ts";
import { evalPacked } from "./decode-attention-eval.ts";
import { InvariantError } from "../../src/util/errors.ts";

type Ranges = Array<[number, number]>;

/** A pool of shuffled block ids (fragmented block tables). */
function blockPool(rng: Rng, n: number): () => number {
  const ids = rng.shuffle(Array.from({ length: n }, (_, i) => i));
  return () => {
    const b = ids.pop();
    assert.ok(b !== undefined, "test block pool exhausted");
    return b;
  };
}

/** Slots of `len` tokens laid into fresh blocks of size P. */
function take(next: () => number, P: number, len: number): number[] {
  const out: number[] = [];
  let b = -1;
  for (let i = 0; i < len; i++) {
    if (i % P === 0) b = next();
    out.push(b * P + (i % P));
  }
  return out;
}

/**
 * n sibling branches over a shared prefix of `prefix` tokens: full prefix blocks are shared, the
 * partial last block is copied per branch (copy-on-write) and the branch continues in it.
 */
function siblings(rng: Rng, next: () => number, P: number, base: number[], n: number, own: () => number): number[][] {
  const full = Math.floor(base.length / P) * P;
  const shared = base.slice(0, full);
  const tail = base.length - full;
  return Array.from({ length: n }, () => {
    const mine = take(next, P, tail + own()); // the copied tail, then the branch's own tokens
    void rng;
    return [...shared, ...mine];
  });
}

interface Case {
  name: string;
  rows: Ranges[];
  slots: number;
}

function cases(seed: number): Case[] {
  const rng = new Rng(seed);
  const P = 16;
  const out: Case[] = [];
  {
    const next = blockPool(rng, 400);
    const prefix = take(next, P, 600 + rng.int(P));
    const rows = siblings(rng, next, P, prefix, 8, () => 1 + rng.int(300));
    out.push({ name: "8 siblings, shared fragmented prefix, cow tails", rows: rows.map(slotRanges), slots: 400 * P });
  }
  {
    const next = blockPool(rng, 200);
    const rows = [take(next, P, 1 + rng.int(2500))];
    out.push({ name: "one long row", rows: rows.map(slotRanges), slots: 200 * P });
  }
  {
    // Nested: a root, two forks of 3, one of whose branches forks again into 2; plus padding rows.
    const next = blockPool(rng, 600);
    const root = take(next, P, 100 + rng.int(200));
    const a = siblings(rng, next, P, root, 3, () => 20 + rng.int(100));
    const b = siblings(rng, next, P, a[0], 2, () => 1 + rng.int(50));
    const rows: number[][] = [...a.slice(1), ...b, [], []];
    rng.shuffle(rows);
    out.push({ name: "nested forks + padding rows", rows: rows.map(slotRanges), slots: 600 * P });
  }
  {
    const next = blockPool(rng, 600);
    const rows = Array.from({ length: 16 }, () => take(next, P, 1 + rng.int(400)));
    out.push({ name: "16 independent rows", rows: rows.map(slotRanges), slots: 600 * P });
  }
  {
    // 32 rows (mask bit 31 = the i32 sign bit) over a common prefix.
    const next = blockPool(rng, 400);
    const prefix = take(next, P, 40 + rng.int(40));
    const rows = siblings(rng, next, P, prefix, 32, () => 1 + rng.int(20));
    out.push({ name: "32 siblings", rows: rows.map(slotRanges), slots: 400 * P });
  }
  {
    // Random slot sets: arbitrary overlaps between rows, many 1-slot ranges.
    const rows: Ranges[] = Array.from({ length: 5 }, () => slotRanges(Array.from({ length: 1 + rng.int(300) }, () => rng.int(700))));
    rows.push([]);
    out.push({ name: "random overlapping slot sets", rows, slots: 700 });
  }
  return out;
}

/** Checks coverage, once-only reads and item limits; returns keys read vs keys seen. */
function checkStructure(c: Case, plan: AttentionPlan): { read: number; seen: number } {
  const owner = new Map<number, number>(); // slot -> item
  const perRow = c.rows.map(() => new Map<number, number>()); // slot -> times covered
  plan.items.forEach((it, i) => {
    assert.ok(it.keys >= 1 && it.keys <= plan.chunk, `${c.name}: item ${i} has ${it.keys} keys, chunk ${plan.chunk}`);
    assert.ok(it.ranges.length <= MAX_RANGES_PER_ITEM, `${c.name}: item ${i} has ${it.ranges.length} ranges`);
    let keys = 0;
    let prev = -1;
    for (const [s, e] of it.ranges) {
      assert.ok(s >= prev && e > s, `${c.name}: item ${i} ranges unsorted`);
      prev = e;
      keys += e - s;
      for (let x = s; x < e; x++) {
        assert.ok(!owner.has(x), `${c.name}: slot ${x} in items ${owner.get(x)} and ${i} (read twice)`);
        owner.set(x, i);
        for (let r = 0; r < c.rows.length; r++) if ((it.mask >>> r) & 1) perRow[r].set(x, (perRow[r].get(x) ?? 0) + 1);
      }
    }
    assert.equal(keys, it.keys);
  });
  let seen = 0;
  c.rows.forEach((ranges, r) => {
    const want = new Set<number>();
    for (const [s, e] of ranges) for (let x = s; x < e; x++) want.add(x);
    seen += want.size;
    assert.equal(perRow[r].size, want.size, `${c.name}: row ${r} covered ${perRow[r].size} slots, sees ${want.size}`);
    for (const [x, n] of perRow[r]) {
      assert.ok(want.has(x), `${c.name}: row ${r} covered slot ${x} it does not see`);
      assert.equal(n, 1);
    }
    // Partial slots: one per item holding the row, pbase + rank.
    const expect: number[] = [];
    for (const it of plan.items) {
      if (!((it.mask >>> r) & 1)) continue;
      let rank = 0;
      for (let j = 0; j < r; j++) rank += (it.mask >>> j) & 1;
      expect.push(it.pbase + rank);
    }
    assert.deepEqual(plan.rowSlots[r], expect);
  });
  return { read: owner.size, seen };
}

/** Direct softmax attention in float64: out [B, H, D], lse [B, H]. */
function direct(c: Case, q: Float64Array, k: Float64Array, v: Float64Array, H: number, Hkv: number, D: number, scale: number) {
  const B = c.rows.length;
  const G = H / Hkv;
  const out = new Float64Array(B * H * D);
  const lse = new Float64Array(B * H).fill(-Infinity);
  for (let r = 0; r < B; r++) {
    const slots: number[] = [];
    for (const [s, e] of c.rows[r]) for (let x = s; x < e; x++) slots.push(x);
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G);
      const sc = slots.map((x) => {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(r * H + h) * D + i] * k[(x * Hkv + g) * D + i];
        return d * scale;
      });
      if (!sc.length) continue;
      const m = Math.max(...sc);
      const p = sc.map((s) => Math.exp(s - m));
      const l = p.reduce((a, b) => a + b, 0);
      for (let i = 0; i < D; i++) {
        let a = 0;
        slots.forEach((x, j) => (a += p[j] * v[(x * Hkv + g) * D + i]));
        out[(r * H + h) * D + i] = a / l;
      }
      lse[r * H + h] = m + Math.log(l);
    }
  }
  return { out, lse };
}

test("every row's keys are covered once and every key is read once (shared prefixes included)", () => {
  for (const seed of [1, 2, 3]) {
    for (const c of cases(seed)) {
      for (const chunk of [undefined, 1, 7, 32, 64, 128, MAX_CHUNK]) {
        const plan = planAttention(c.rows, { chunk });
        const { read, seen } = checkStructure(c, plan);
        if (seed === 1 && chunk === undefined) {
          console.log(
            `${c.name}: ${plan.items.length} items (chunk ${plan.chunk}), keys read ${read} vs per-row reads ${seen} (${(seen / Math.max(1, read)).toFixed(2)}x)`,
          );
        }
      }
    }
  }
});

test("the packed plan evaluated in float64 (partials + combine) equals direct softmax attention", () => {
  let maxDiff = 0;
  let sum = 0;
  let count = 0;
  for (const c of cases(7)) {
    const rng = new Rng(11);
    const B = c.rows.length;
    const [H, Hkv, D] = B > 16 ? [2, 1, 4] : [6, 2, 8]; // keep the 32-row case small
    const scale = 1 / Math.sqrt(D);
    const q = Float64Array.from({ length: B * H * D }, () => 2 * rng.normal());
    const k = Float64Array.from({ length: c.slots * Hkv * D }, () => rng.normal());
    const v = Float64Array.from({ length: c.slots * Hkv * D }, () => rng.normal());
    const ref = direct(c, q, k, v, H, Hkv, D, scale);
    for (const chunk of [undefined, 5, 64]) {
      const plan = planAttention(c.rows, { chunk });
      const cap = growCapacity(null, planCapacityNeeded(plan));
      const lay = planLayout(B, cap);
      const buf = new Int32Array(lay.length).fill(-7); // garbage past the plan must not matter
      packPlan(plan, lay, buf);
      // The kernel's completion counters (the plan's tail) start at 0 whatever the buffer held.
      assert.equal(lay.length - lay.counters, B * PLAN_COUNTERS_PER_ROW);
      assert.ok(
        buf.subarray(lay.counters).every((x) => x === 0),
        `${c.name}: counters packed as 0`,
      );
      const got = evalPacked(buf, lay, q, k, v, H, Hkv, D, scale);
      for (let i = 0; i < ref.out.length; i++) {
        const d = Math.abs(got.out[i] - ref.out[i]);
        maxDiff = Math.max(maxDiff, d);
        sum += d;
        count++;
      }
      for (let i = 0; i < ref.lse.length; i++) {
        if (ref.lse[i] === -Infinity) assert.equal(got.lse[i], -Infinity, `${c.name}: padding row lse`);
        else maxDiff = Math.max(maxDiff, Math.abs(got.lse[i] - ref.lse[i]));
      }
    }
  }
  console.log(`plan evaluation vs direct attention: max abs diff ${maxDiff.toExponential(2)}, mean ${(sum / count).toExponential(2)}`);
  assert.ok(maxDiff < 1e-12, `max abs diff ${maxDiff}`);
});

test("capacity: needed, fits, growth, packing refuses a plan that does not fit", () => {
  const c = cases(5)[0];
  const plan = planAttention(c.rows, { chunk: 64 });
  const need = planCapacityNeeded(plan);
  assert.deepEqual(need, { items: plan.items.length, ranges: plan.numRanges, partials: plan.numPartials });
  const cap = growCapacity(null, need);
  assert.ok(capacityFits(cap, need) && cap.items >= Math.ceil(need.items * 1.25));
  assert.equal(growCapacity(cap, need), cap, "a capacity that fits is kept (no recapture)");
  const bigger = { ...need, partials: need.partials * 3 };
  const grown = growCapacity(cap, bigger);
  assert.ok(capacityFits(grown, bigger) && grown.items === cap.items && grown.ranges === cap.ranges);
  const small = { ...need, items: need.items - 1 };
  assert.ok(!capacityFits(small, need));
  const lay = planLayout(c.rows.length, small);
  assert.throws(() => packPlan(plan, lay, new Int32Array(lay.length)), InvariantError);
  // The offsets decode-attention.cu's plan_off computes from (B, I, R, P): [0] numItems, mask[I],
  // pbase[I], rangeOff[I + 1], starts[R], ends[R], rowOff[B + 1], rowSlots[P], counters[B * 8].
  const l2 = planLayout(2, { items: 3, ranges: 4, partials: 5 });
  assert.deepEqual(
    [l2.numItems, l2.mask, l2.pbase, l2.rangeOff, l2.starts, l2.ends, l2.rowOff, l2.rowSlots, l2.counters, l2.length],
    [0, 1, 4, 7, 11, 15, 19, 22, 27, 27 + 2 * PLAN_COUNTERS_PER_ROW],
  );
});

test("autoChunk and the split of one long row", () => {
  assert.equal(autoChunk(100), 32, "a small step: one-tile items");
  assert.equal(autoChunk(500), 64);
  assert.equal(autoChunk(100_000), 256);
  assert.equal(autoChunk(4600) % 32, 0);
  assert.equal(autoChunk(4752, 8896), 64, "8 siblings over a 600-key prefix: shared keys make smaller items");
  assert.equal(autoChunk(4096), 96);
  const plan = planAttention([[[0, 4600]]]);
  assert.ok(plan.items.length >= 30, `a 4,600-key row is split over ${plan.items.length} items`);
  assert.throws(() => planAttention([[[5, 3]]]), InvariantError);
  assert.throws(
    () =>
      planAttention([
        [
          [0, 4],
          [2, 6],
        ],
      ]),
    InvariantError,
  );
  assert.throws(() => planAttention([[[0, 4]]], { chunk: MAX_CHUNK + 1 }), InvariantError);
});
