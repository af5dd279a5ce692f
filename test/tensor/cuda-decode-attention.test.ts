/**
 * The shared-prefix, split-K paged decode attention (cuda/decode-attention.ts over a plan from
 * tensor/backend/decode-attention-plan.ts) against the CPU backend's segment attention on the
 * same pages and slot ranges: f32 and f64, fresh random inputs, siblings over a fragmented shared
 * prefix with copy-on-write tails, one long row, padding rows, GQA ratios 1, 3 and 4, head dims
 * 64, 96, 128 (the Qwen3-4B shape H 32, Hkv 8, D 128) and 256. One row takes the one-kernel path
 * (its last block merges), several rows the partial + combine pair (the launch count says which
 * ran). Each case also runs again, bit-identical (the merge order is fixed whichever block
 * finishes a row last; the plan's completion counters are back at 0). Then one captured graph
 * replayed with new plan contents within its capacity (the item count is read on the device) and
 * replayed again without a new upload. The merge variants compared side by side live in
 * dev/cuda/decode_attention.ts. Skipped without a GPU.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { decodeAttentionScratchLength } from "../../src/tensor/backend/cuda/decode-attention.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import {
  growCapacity,
  packPlan,
  planAttention,
  planCapacityNeeded,
  planLayout,
  slotRanges,
} from "../../src/tensor/backend/decode-attention-plan.ts";
import type { DecodeAttentionCapacity } from "../../src/tensor/backend/types.ts";
import { Rng } from "../../src/util/rng.ts";

type Ranges = Array<[number, number]>;

/** Rows of a step: `n` siblings over a shared prefix (fragmented blocks of 16, cow tails), then padding. */
function siblingRows(rng: Rng, numBlocks: number, prefix: number, n: number, own: number, padding: number): Ranges[] {
  const P = 16;
  const ids = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const take = (len: number) => {
    const out: number[] = [];
    let b = -1;
    for (let i = 0; i < len; i++) {
      if (i % P === 0) b = ids.pop()!;
      out.push(b * P + (i % P));
    }
    return out;
  };
  const base = take(prefix);
  const full = Math.floor(prefix / P) * P;
  const rows = Array.from({ length: n }, () => slotRanges([...base.slice(0, full), ...take(prefix - full + 1 + rng.int(own))]));
  for (let i = 0; i < padding; i++) rows.push([]);
  return rows;
}

const why = cudaUnavailable();

if (why) {
  test("cuda decode attention", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();
  const cpu = new CpuBackend();

  interface Shape {
    H: number;
    Hkv: number;
    D: number;
  }

  /** Runs the CPU reference once and the op per chunk size on fresh random inputs; max / mean abs diff of out and lse per chunk. */
  function compare(dtype: "f32" | "f64", rows: Ranges[], slots: number, s: Shape, seed: number, chunks: Array<number | undefined>) {
    const rng = new Rng(seed);
    const { H, Hkv, D } = s;
    const B = rows.length;
    const mk = (n: number, sd: number) => {
      const a = dtype === "f32" ? new Float32Array(n) : new Float64Array(n);
      for (let i = 0; i < n; i++) a[i] = sd * rng.normal();
      return a;
    };
    const qh = mk(B * H * D, 1.5);
    const kh = mk(slots * Hkv * D, 1);
    const vh = mk(slots * Hkv * D, 1);
    const scale = 1 / Math.sqrt(D);
    // Reference: segment attention over the whole page array, each row's ranges as its segments.
    const offsets = new Int32Array(B + 1);
    const starts: number[] = [];
    const ends: number[] = [];
    rows.forEach((r, i) => {
      for (const [a, b] of r) {
        starts.push(a);
        ends.push(b);
      }
      offsets[i + 1] = starts.length;
    });
    const put = (b: CpuBackend | CudaBackend, a: Float32Array | Float64Array | Int32Array, dt: "f32" | "f64" | "i32") => {
      const buf = b.alloc(dt, Math.max(1, a.length));
      if (a.length) b.write(buf, a);
      return buf;
    };
    const p = { tokens: B, keys: slots, heads: H, kvHeads: Hkv, headDim: D, scale };
    const cOut = cpu.alloc(dtype, B * H * D);
    const cLse = cpu.alloc(dtype, B * H);
    cpu.attention(
      put(cpu, qh, dtype),
      put(cpu, kh, dtype),
      put(cpu, vh, dtype),
      {
        offsets: put(cpu, offsets, "i32"),
        starts: put(cpu, Int32Array.from(starts), "i32"),
        ends: put(cpu, Int32Array.from(ends), "i32"),
      },
      cOut,
      cLse,
      p,
    );
    const ref = cpu.read(cOut, 0, B * H * D);
    const refLse = cpu.read(cLse, 0, B * H);

    const gq = put(be, qh, dtype);
    const gk = put(be, kh, dtype);
    const gv = put(be, vh, dtype);
    return chunks.map((chunk) => {
      const plan = planAttention(rows, { chunk });
      const cap = growCapacity(null, planCapacityNeeded(plan));
      const lay = planLayout(B, cap);
      const host = new Int32Array(lay.length);
      packPlan(plan, lay, host);
      const gOut = be.alloc(dtype, B * H * D);
      const gLse = be.alloc(dtype, B * H);
      const scratch = be.alloc(dtype, decodeAttentionScratchLength(cap, H, D));
      const gPlan = put(be, host, "i32");
      const before = be.counters()["decodeAttention"] ?? 0;
      const launches0 = be.counters()["cuda.launch"] ?? 0;
      const run = () => {
        be.write(gOut, dtype === "f32" ? new Float32Array(B * H * D).fill(Number.NaN) : new Float64Array(B * H * D).fill(Number.NaN));
        be.decodeAttention(gq, gk, gv, gPlan, scratch, gOut, gLse, {
          rows: B,
          keys: slots,
          heads: H,
          kvHeads: Hkv,
          headDim: D,
          scale,
          capacity: cap,
        });
        return { out: be.read(gOut, 0, B * H * D), lse: be.read(gLse, 0, B * H) };
      };
      const { out: got, lse: gotLse } = run();
      assert.equal(be.counters()["decodeAttention"], before + 1, "the CUDA op ran");
      // One row: one kernel (its last block merges); several: partial + combine.
      assert.equal((be.counters()["cuda.launch"] ?? 0) - launches0, B === 1 ? 1 : 2, `${B} rows: the merge path`);
      // Same inputs again: bit for bit, and the completion counters are back at 0.
      const again = run();
      const counters = be.read(gPlan, lay.counters, lay.length - lay.counters);
      assert.ok(
        counters.every((x) => x === 0),
        "the completion counters are back at 0",
      );
      const bitDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
        let n = 0;
        for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) n++;
        return n;
      };
      const repeat = bitDiff(got, again.out) + bitDiff(gotLse, again.lse);
      for (const b of [gOut, gLse, scratch, gPlan]) be.free(b);
      let max = 0;
      let sum = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(got[i] - ref[i]);
        assert.ok(Number.isFinite(got[i]), `out[${i}] = ${got[i]}`);
        max = Math.max(max, d);
        sum += d;
      }
      let lseMax = 0;
      for (let i = 0; i < refLse.length; i++) {
        if (refLse[i] === -Infinity) assert.equal(gotLse[i], -Infinity, `lse[${i}] of a row without keys`);
        else lseMax = Math.max(lseMax, Math.abs(gotLse[i] - refLse[i]));
      }
      return { max, mean: sum / ref.length, lseMax, items: plan.items.length, chunk: plan.chunk, repeat };
    });
  }

  const shapes: Array<[string, Shape]> = [
    ["4B shape H32 Hkv8 D128", { H: 32, Hkv: 8, D: 128 }],
    ["H6 Hkv2 D64", { H: 6, Hkv: 2, D: 64 }],
    ["H4 Hkv4 D96", { H: 4, Hkv: 4, D: 96 }],
    ["H8 Hkv2 D256", { H: 8, Hkv: 2, D: 256 }],
  ];

  for (const dtype of ["f32", "f64"] as const) {
    test(`decode attention (${dtype}) matches the CPU segment attention`, () => {
      const tol = dtype === "f32" ? 2e-5 : 1e-12;
      let seed = dtype === "f32" ? 100 : 200;
      for (const [name, s] of shapes) {
        const layouts: Array<[string, Ranges[], number]> = [
          ["8 siblings, prefix 600", siblingRows(new Rng(seed), 200, 600, 8, 300, 0), 200 * 16],
          ["16-row bucket: 5 siblings + 11 padding", siblingRows(new Rng(seed + 1), 120, 70, 5, 40, 11), 120 * 16],
          ["one row, 2,500 keys", siblingRows(new Rng(seed + 2), 200, 2500, 1, 1, 0), 200 * 16],
          ["one row, 90 keys", siblingRows(new Rng(seed + 3), 40, 90, 1, 1, 0), 40 * 16],
        ];
        for (const [lname, rows, slots] of layouts) {
          for (const r of compare(dtype, rows, slots, s, seed++, [undefined, 32, 200])) {
            console.log(
              `${dtype} ${name} ${lname} chunk ${r.chunk} (${r.items} items): out max ${r.max.toExponential(2)} mean ${r.mean.toExponential(2)}, lse max ${r.lseMax.toExponential(2)}; values differing on a repeat: ${r.repeat}`,
            );
            assert.ok(r.max < tol && r.lseMax < tol * 10, `${dtype} ${name} ${lname}: max ${r.max}, lse ${r.lseMax}`);
            assert.equal(r.repeat, 0, `${dtype} ${name} ${lname}: a second run is bit-identical`);
          }
        }
      }
    });
  }

  test("a captured graph replays new plans within its capacity", () => {
    const rng = new Rng(31);
    const [H, Hkv, D] = [32, 8, 128];
    const slots = 300 * 16;
    const B = 8;
    const scale = 1 / Math.sqrt(D);
    const q = be.alloc("f32", B * H * D);
    const k = be.alloc("f32", slots * Hkv * D);
    const v = be.alloc("f32", slots * Hkv * D);
    for (const b of [q, k, v])
      be.write(
        b,
        Float32Array.from({ length: b.length }, () => rng.normal()),
      );
    const steps = [siblingRows(rng, 300, 400, 8, 200, 0), siblingRows(rng, 300, 900, 6, 300, 2), siblingRows(rng, 300, 100, 3, 50, 5)];
    const plans = steps.map((rows) => planAttention(rows));
    let cap: DecodeAttentionCapacity | null = null;
    for (const pl of plans) cap = growCapacity(cap, planCapacityNeeded(pl));
    const lay = planLayout(B, cap!);
    const host = new Int32Array(lay.length);
    const planBuf = be.alloc("i32", lay.length);
    const scratch = be.alloc("f32", decodeAttentionScratchLength(cap!, H, D));
    const out = be.alloc("f32", B * H * D);
    const lse = be.alloc("f32", B * H);
    const p = { rows: B, keys: slots, heads: H, kvHeads: Hkv, headDim: D, scale, capacity: cap! };
    const run = () => be.decodeAttention(q, k, v, planBuf, scratch, out, lse, p);
    packPlan(plans[0], lay, host);
    be.write(planBuf, host);
    run(); // loads the module (not capturable)
    const graph = be.captureGraph(run);
    for (const pl of plans) {
      packPlan(pl, lay, host);
      be.write(planBuf, host);
      run();
      const eager = be.read(out, 0, B * H * D);
      be.write(out, new Float32Array(B * H * D).fill(Number.NaN));
      graph.replay();
      const replayed = be.read(out, 0, B * H * D);
      // Again without a new upload: the replay left the plan's counters at 0.
      be.write(out, new Float32Array(B * H * D).fill(Number.NaN));
      graph.replay();
      const replayed2 = be.read(out, 0, B * H * D);
      let max = 0;
      for (let i = 0; i < eager.length; i++) {
        max = Math.max(max, Math.abs(replayed[i] - eager[i]), Math.abs(replayed2[i] - eager[i]));
        if (Number.isNaN(replayed[i]) || Number.isNaN(replayed2[i])) max = Number.NaN;
      }
      console.log(`graph replay (twice) vs eager (${pl.items.length} items): max abs diff ${max}`);
      assert.equal(max, 0);
    }
    graph.destroy();
  });
}
