/**
 * Device time of the shared-prefix, split-K decode attention (cuda/decode-attention.ts + the
 * tensor/backend/decode-attention-plan.ts planner) against the segment attention the decode
 * graphs used before (`be.attention` over the whole page array, each row's slot ranges as
 * segments), on the Qwen3-4B
 * shape (H 32, Hkv 8, D 128, f32 pages) for 36 layers: each variant is one CUDA graph of 36 calls,
 * each layer with its own K/V pages (fragmented blocks of 16 slots, so nothing stays in L2), timed
 * with events over replays. Layouts: 1 row x {100, 512, 4096, 16384} keys (100: the batch-1
 * decode step); 8 rows sharing a 600-key prefix + 512 own keys each; 16 rows sharing 600 + 256
 * own. Per chunk (auto, 32, 64, 128, 256): the op as the engine runs it (one kernel for a single
 * row, partial + combine for several). Also checks the outputs agree and times the host planning
 * (plan + pack) per step. One JSON line per measurement, then a table (us / layer = step time /
 * layers). The merge and tile-buffer variants side by side: dev/cuda/decode_attention.ts.
 *
 *   node bench/decode-attention.ts [--reps 20] [--layers 36]
 */
import { parseArgs } from "node:util";
import { CudaBackend } from "../src/tensor/backend/cuda/index.ts";
import { decodeAttentionScratchLength } from "../src/tensor/backend/cuda/decode-attention.ts";
import type { DeviceBuffer } from "../src/tensor/index.ts";
import {
  growCapacity,
  packPlan,
  planAttention,
  planCapacityNeeded,
  planLayout,
  slotRanges,
} from "../src/tensor/backend/decode-attention-plan.ts";
import { Rng } from "../src/util/rng.ts";

const { values: args } = parseArgs({ options: { reps: { type: "string", default: "20" }, layers: { type: "string", default: "36" } } });
const REPS = Number(args.reps);
const LAYERS = Number(args.layers);
const [H, HKV, D, P] = [32, 8, 128, 16];

type Ranges = Array<[number, number]>;

/** n rows over a shared prefix (full blocks shared, the partial tail copied per row), each + own keys; fragmented blocks. */
function layout(rng: Rng, prefix: number, n: number, own: number): { rows: Ranges[]; slots: number } {
  const tail = prefix % P;
  const numBlocks = Math.ceil(prefix / P) + n * Math.ceil((tail + own) / P) + 1;
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
  const full = take(prefix - tail);
  const rows = Array.from({ length: n }, () => slotRanges([...full, ...take(tail + own)]));
  return { rows, slots: numBlocks * P };
}

const be = new CudaBackend();
const drv = be.driver;
const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** Device ms per replay of a graph (events around `REPS` replays after one warm replay). */
function timeGraph(g: { replay: () => void }): number {
  g.replay();
  be.synchronize();
  const e0 = drv.eventCreate();
  const e1 = drv.eventCreate();
  drv.eventRecord(e0, be.streamHandle);
  for (let i = 0; i < REPS; i++) g.replay();
  drv.eventRecord(e1, be.streamHandle);
  drv.eventSynchronize(e1);
  const ms = drv.eventElapsedMs(e0, e1) / REPS;
  drv.eventDestroy(e0);
  drv.eventDestroy(e1);
  return ms;
}

const scenarios: Array<[string, number, number, number]> = [
  ["1 row x 100", 100, 1, 0],
  ["1 row x 512", 512, 1, 0],
  ["1 row x 4096", 4096, 1, 0],
  ["1 row x 16384", 16384, 1, 0],
  ["8 rows: 600 shared + 512 own", 600, 8, 512],
  ["16 rows: 600 shared + 256 own", 600, 16, 256],
];
const table: string[] = [];
for (const [name, prefix, n, own] of scenarios) {
  const rng = new Rng(1);
  const { rows, slots } = layout(rng, prefix, n, own);
  const B = n;
  const scale = 1 / Math.sqrt(D);
  const kvLen = slots * HKV * D;
  // Layer 0's pages random from the host, copied on the device to the other layers.
  const host = Float32Array.from({ length: kvLen }, () => rng.normal());
  const ks: DeviceBuffer[] = [];
  const vs: DeviceBuffer[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const k = be.alloc("f32", kvLen);
    const v = be.alloc("f32", kvLen);
    if (l === 0) {
      be.write(k, host);
      be.write(
        v,
        host.map((x) => -x),
      );
    } else {
      be.copy(ks[0], k, { shape: [kvLen], srcStrides: [1], srcOffset: 0, dstOffset: 0 });
      be.copy(vs[0], v, { shape: [kvLen], srcStrides: [1], srcOffset: 0, dstOffset: 0 });
    }
    ks.push(k);
    vs.push(v);
  }
  const q = be.alloc("f32", B * H * D);
  be.write(
    q,
    Float32Array.from({ length: B * H * D }, () => rng.normal()),
  );
  const o1 = be.alloc("f32", B * H * D);
  const o2 = be.alloc("f32", B * H * D);
  const lse = be.alloc("f32", B * H);
  const seen = rows.reduce((a, r) => a + r.reduce((x, [s, e]) => x + e - s, 0), 0);
  const distinct = new Set(rows.flatMap((r) => r.flatMap(([s, e]) => Array.from({ length: e - s }, (_, i) => s + i)))).size;
  // Bytes the new op must read at least: each distinct key's K and V rows once per layer.
  const bytes = distinct * HKV * D * 4 * 2 * LAYERS;

  // Today's path: segment attention, one warp per (row, head) walking the row's keys.
  const offs = new Int32Array(B + 1);
  const st: number[] = [];
  const en: number[] = [];
  rows.forEach((r, i) => {
    for (const [s, e] of r) {
      st.push(s);
      en.push(e);
    }
    offs[i + 1] = st.length;
  });
  const seg = { offsets: be.alloc("i32", B + 1), starts: be.alloc("i32", st.length), ends: be.alloc("i32", en.length) };
  be.write(seg.offsets, offs);
  be.write(seg.starts, Int32Array.from(st));
  be.write(seg.ends, Int32Array.from(en));
  const p = { tokens: B, keys: slots, heads: H, kvHeads: HKV, headDim: D, scale };
  const old = () => {
    for (let l = 0; l < LAYERS; l++) be.attention(q, ks[l], vs[l], seg, o1, lse, p);
  };
  old();
  const gOld = be.captureGraph(old);
  const msOld = timeGraph(gOld);
  gOld.destroy();
  const ref = be.read(o1, 0, B * H * D);
  out({
    bench: "decode_attention",
    layout: name,
    kernel: "segment",
    ms: msOld,
    keys_seen: seen,
    keys_distinct: distinct,
    gbps_min_bytes: bytes / msOld / 1e6,
  });
  table.push(
    `| ${name} | segment attention | - | - | ${msOld.toFixed(3)} | ${((msOld / LAYERS) * 1000).toFixed(1)} | ${(bytes / msOld / 1e6).toFixed(0)} | |`,
  );

  const vname = B === 1 ? "one kernel" : "partial + combine";
  for (const chunk of [undefined, 32, 64, 128, 256]) {
    const t0 = performance.now();
    let plan = planAttention(rows, { chunk });
    for (let i = 0; i < 9; i++) plan = planAttention(rows, { chunk });
    const cap = growCapacity(null, planCapacityNeeded(plan));
    const lay = planLayout(B, cap);
    const planHost = new Int32Array(lay.length);
    packPlan(plan, lay, planHost);
    const planUs = ((performance.now() - t0) * 1000) / 10;
    const planBuf = be.alloc("i32", lay.length);
    be.write(planBuf, planHost);
    const scratch = be.alloc("f32", decodeAttentionScratchLength(cap, H, D));
    const dp = { rows: B, keys: slots, heads: H, kvHeads: HKV, headDim: D, scale, capacity: cap };
    const fresh = () => {
      for (let l = 0; l < LAYERS; l++) be.decodeAttention(q, ks[l], vs[l], planBuf, scratch, o2, lse, dp);
    };
    fresh();
    const got = be.read(o2, 0, B * H * D);
    let diff = 0;
    for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i] - ref[i]));
    const g = be.captureGraph(fresh);
    const ms = timeGraph(g);
    g.destroy();
    out({
      bench: "decode_attention",
      layout: name,
      kernel: `decodeAttention: ${vname}`,
      chunk: plan.chunk,
      items: plan.items.length,
      ms,
      us_per_layer: (ms / LAYERS) * 1000,
      speedup: msOld / ms,
      gbps_min_bytes: bytes / ms / 1e6,
      max_abs_diff_vs_segment: diff,
      plan_us: planUs,
    });
    table.push(
      `| ${name} | decodeAttention: ${vname} | ${plan.chunk}${chunk === undefined ? " (auto)" : ""} | ${plan.items.length} | ${ms.toFixed(3)} | ${((ms / LAYERS) * 1000).toFixed(1)} | ${(bytes / ms / 1e6).toFixed(0)} | ${(msOld / ms).toFixed(2)}x (plan ${planUs.toFixed(0)} us, diff ${diff.toExponential(1)}) |`,
    );
    be.free(planBuf);
    be.free(scratch);
  }
  for (const b of [...ks, ...vs, q, o1, o2, lse, seg.offsets, seg.starts, seg.ends]) be.free(b);
}
console.log(`\n${LAYERS} layers, H ${H}, Hkv ${HKV}, D ${D}, f32 pages, ${REPS} replays; GB/s = distinct K+V bytes / time\n`);
console.log("| layout | kernel | chunk | items | ms / step (all layers) | us / layer | GB/s (min bytes) | speed-up vs segment |");
console.log("|---|---|---|---|---|---|---|---|");
for (const l of table) console.log(l);
