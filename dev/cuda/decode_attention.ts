/**
 * Scratchpad of the paged decode attention (dev/cuda/decode_attention.cu): every version (the
 * product's launch, the last-block merge for several rows, the combine kernel for one row,
 * double-buffered key tiles, early PDL scheduling) is first validated, then timed.
 * Validation, f32 and f64 on fresh random pages: each version against float64 softmax attention
 * over each row's slots, the product's launch also bit for bit against the product op
 * (be.decodeAttention, src/tensor/backend/cuda/decode-attention.ts), and every version twice
 * (same bits: the merge order is fixed). Timing: bench/decode-attention.ts's layouts (the Qwen3-4B
 * shape, 36 layers of fragmented f32 pages, one graph of 36 calls, events over replays) for each
 * version and chunk; dev/LOG.md keeps the numbers.
 *
 *   node dev/cuda/decode_attention.ts [--reps 20] [--layers 36] [--chunks auto,64,128,256]
 *   node dev/cuda/decode_attention.ts --compile-only     # no GPU: NVRTC or nvcc, both dtypes
 */
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import {
  growCapacity,
  packPlan,
  planAttention,
  planCapacityNeeded,
  planLayout,
  slotRanges,
} from "../../src/tensor/backend/decode-attention-plan.ts";
import type { DecodeAttentionParams, DeviceBuffer } from "../../src/tensor/backend/types.ts";
import { Rng } from "../../src/util/rng.ts";
import { type AttentionTune, DevAttention, TWO_STAGE_SMEM, smemBytes } from "./decode_attention_host.ts";
import { DevModule, bitDiff, compileOnly, graphMs } from "./harness.ts";

const { values: args } = parseArgs({
  options: {
    reps: { type: "string", default: "20" },
    layers: { type: "string", default: "36" },
    chunks: { type: "string", default: "auto,64,128,256" },
    "compile-only": { type: "boolean", default: false },
    "skip-timing": { type: "boolean", default: false },
  },
});
if (args["compile-only"]) process.exit(compileOnly(["decode_attention.cu"]) ? 0 : 1);
const why = cudaUnavailable();
if (why) {
  console.log(`no CUDA here: ${why} (--compile-only needs no GPU)`);
  process.exit(0);
}

type Ranges = Array<[number, number]>;
const VERSIONS: Array<[string, AttentionTune]> = [
  ["1 product (one kernel for 1 row, else partial + combine)", {}],
  ["2 one kernel for any rows", { fused: true }],
  ["3 partial + combine for any rows", { fused: false }],
  ["4 two key-tile buffers", { stages: 2 }],
  ["5 early PDL scheduling", { pdlEarly: true }],
];

/** n rows over a shared prefix (full blocks shared, the partial tail copied per row), each + own keys; fragmented blocks of 16. */
function layout(rng: Rng, prefix: number, n: number, own: number, padding = 0): { rows: Ranges[]; slots: number } {
  const P = 16;
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
  const rows: Ranges[] = Array.from({ length: n }, () => slotRanges([...full, ...take(tail + own)]));
  for (let i = 0; i < padding; i++) rows.push([]);
  return { rows, slots: numBlocks * P };
}

/** float64 softmax attention of each row over its slots: out [B, H, D], lse [B, H] (-inf for a row without keys). */
function direct(
  rows: Ranges[],
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
) {
  const B = rows.length;
  const G = H / Hkv;
  const out = new Float64Array(B * H * D);
  const lse = new Float64Array(B * H).fill(-Infinity);
  for (let r = 0; r < B; r++) {
    const slots = rows[r]!.flatMap(([s, e]) => Array.from({ length: e - s }, (_, i) => s + i));
    if (!slots.length) continue;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G);
      const sc = slots.map((x) => {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(r * H + h) * D + i]! * k[(x * Hkv + g) * D + i]!;
        return d * scale;
      });
      const m = Math.max(...sc);
      const p = sc.map((s) => Math.exp(s - m));
      const l = p.reduce((a, b) => a + b, 0);
      for (let i = 0; i < D; i++) {
        let a = 0;
        slots.forEach((x, j) => (a += p[j]! * v[(x * Hkv + g) * D + i]!));
        out[(r * H + h) * D + i] = a / l;
      }
      lse[r * H + h] = m + Math.log(l);
    }
  }
  return { out, lse };
}

const be = new CudaBackend();
const mods = {
  f32: new DevAttention(be, new DevModule(be, "decode_attention.cu", "f32"), "f32"),
  f64: new DevAttention(be, new DevModule(be, "decode_attention.cu", "f64"), "f64"),
};
const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

// ---------------------------------------------------------------- validation
for (const dtype of ["f32", "f64"] as const) {
  const tol = dtype === "f32" ? 2e-5 : 1e-12;
  for (const [H, Hkv, D] of [
    [32, 8, 128],
    [6, 2, 64],
  ] as const) {
    const cases: Array<[string, { rows: Ranges[]; slots: number }]> = [
      ["1 row x 90", layout(new Rng(1), 90, 1, 0)],
      ["1 row x 2,500", layout(new Rng(2), 2500, 1, 0)],
      ["8 siblings over 600", layout(new Rng(3), 600, 8, 200)],
      ["5 siblings + 11 padding", layout(new Rng(4), 70, 5, 40, 11)],
    ];
    for (const [name, { rows, slots }] of cases) {
      const rng = new Rng(7);
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
      const ref = direct(rows, qh, kh, vh, H, Hkv, D, scale);
      const dev = (a: Float32Array | Float64Array | Int32Array, dt: "f32" | "f64" | "i32") => {
        const b = be.alloc(dt, a.length);
        be.write(b, a);
        return b;
      };
      const [q, k, v] = [dev(qh, dtype), dev(kh, dtype), dev(vh, dtype)];
      const plan = planAttention(rows);
      const cap = growCapacity(null, planCapacityNeeded(plan));
      const lay = planLayout(B, cap);
      const host = new Int32Array(lay.length);
      packPlan(plan, lay, host);
      const planBuf = dev(host, "i32");
      const scratch = be.alloc(dtype, be.decodeAttentionScratchLength(cap, H, D));
      const o = be.alloc(dtype, B * H * D);
      const lse = be.alloc(dtype, B * H);
      const p: DecodeAttentionParams = { rows: B, keys: slots, heads: H, kvHeads: Hkv, headDim: D, scale, capacity: cap };
      const read = () => ({ out: be.read(o), lse: be.read(lse) });
      be.decodeAttention(q, k, v, planBuf, scratch, o, lse, p);
      const product = read();
      for (const [vname, tune] of VERSIONS) {
        if (tune.stages === 2 && smemBytes(D, dtype === "f32" ? 4 : 8, 2) > TWO_STAGE_SMEM) continue;
        mods[dtype].run(q, k, v, planBuf, scratch, o, lse, p, tune);
        const a = read();
        mods[dtype].run(q, k, v, planBuf, scratch, o, lse, p, tune);
        const b = read();
        let max = 0;
        for (let i = 0; i < ref.out.length; i++) max = Math.max(max, Math.abs(a.out[i]! - ref.out[i]!));
        for (let i = 0; i < ref.lse.length; i++) {
          if (ref.lse[i] === -Infinity) assert.equal(a.lse[i], -Infinity, `${vname} ${name}: padding row lse`);
          else max = Math.max(max, Math.abs(a.lse[i]! - ref.lse[i]!) / 10);
        }
        const repeat = bitDiff(a.out, b.out) + bitDiff(a.lse, b.lse);
        const vsProduct = bitDiff(a.out, product.out) + bitDiff(a.lse, product.lse);
        out({
          check: "decode_attention",
          dtype,
          shape: `H${H} Hkv${Hkv} D${D}`,
          layout: name,
          version: vname,
          max_abs_diff_vs_float64: max,
          differing_on_repeat: repeat,
          differing_vs_product: vsProduct,
        });
        assert.ok(max < tol, `${vname} ${name} ${dtype}: ${max} from float64`);
        assert.equal(repeat, 0, `${vname} ${name}: a repeat gives other bits`);
        // A version that merges as the product does (fused exactly for one row) computes its bits:
        // the product kernel is this file's version 1 with the other versions' code removed.
        if ((tune.fused ?? B === 1) === (B === 1) && (tune.stages ?? 1) === 1)
          assert.equal(vsProduct, 0, `${vname} ${name}: differs from the product op`);
      }
      for (const x of [q, k, v, planBuf, scratch, o, lse]) be.free(x);
    }
  }
}
console.log(
  "# validation passed: every version within tolerance of float64, bit-identical on a repeat, the product's launch equal to the product op",
);
if (args["skip-timing"]) process.exit(0);

// ---------------------------------------------------------------- timing (bench/decode-attention.ts's layouts)
const REPS = Number(args.reps);
const LAYERS = Number(args.layers);
const [H, HKV, D] = [32, 8, 128];
const scenarios: Array<[string, number, number, number]> = [
  ["1 row x 100", 100, 1, 0],
  ["1 row x 512", 512, 1, 0],
  ["1 row x 4096", 4096, 1, 0],
  ["1 row x 16384", 16384, 1, 0],
  ["8 rows: 600 shared + 512 own", 600, 8, 512],
  ["16 rows: 600 shared + 256 own", 600, 16, 256],
];
const chunks = args.chunks.split(",").map((c) => (c === "auto" ? undefined : Number(c)));
const table: string[] = [];
for (const [name, prefix, n, own] of scenarios) {
  const rng = new Rng(1);
  const { rows, slots } = layout(rng, prefix, n, own);
  const B = n;
  const kvLen = slots * HKV * D;
  const host = Float32Array.from({ length: kvLen }, () => rng.normal());
  const ks: DeviceBuffer[] = [];
  const vs: DeviceBuffer[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const k = be.alloc("f32", kvLen);
    const v = be.alloc("f32", kvLen);
    be.write(k, host);
    be.write(
      v,
      host.map((x) => -x),
    );
    ks.push(k);
    vs.push(v);
  }
  const q = be.alloc("f32", B * H * D);
  be.write(
    q,
    Float32Array.from({ length: B * H * D }, () => rng.normal()),
  );
  const o = be.alloc("f32", B * H * D);
  const lse = be.alloc("f32", B * H);
  const distinct = new Set(rows.flatMap((r) => r.flatMap(([s, e]) => Array.from({ length: e - s }, (_, i) => s + i)))).size;
  const bytes = distinct * HKV * D * 4 * 2 * LAYERS;
  for (const chunk of chunks) {
    const plan = planAttention(rows, { chunk });
    const cap = growCapacity(null, planCapacityNeeded(plan));
    const lay = planLayout(B, cap);
    const planHost = new Int32Array(lay.length);
    packPlan(plan, lay, planHost);
    const planBuf = be.alloc("i32", lay.length);
    be.write(planBuf, planHost);
    const scratch = be.alloc("f32", be.decodeAttentionScratchLength(cap, H, D));
    const p: DecodeAttentionParams = { rows: B, keys: slots, heads: H, kvHeads: HKV, headDim: D, scale: 1 / Math.sqrt(D), capacity: cap };
    // The product op, then every version; one call per layer, each on its own pages.
    const contestants: Array<[string, AttentionTune | null]> = [["product op", null], ...VERSIONS];
    for (const [vname, tune] of contestants) {
      const body = () => {
        for (let l = 0; l < LAYERS; l++) {
          if (tune === null) be.decodeAttention(q, ks[l]!, vs[l]!, planBuf, scratch, o, lse, p);
          else mods.f32.run(q, ks[l]!, vs[l]!, planBuf, scratch, o, lse, p, tune);
        }
      };
      const ms = graphMs(be, body, REPS);
      out({
        bench: "decode_attention",
        layout: name,
        version: vname,
        chunk: plan.chunk,
        items: plan.items.length,
        ms,
        us_per_layer: (ms / LAYERS) * 1000,
        gbps_min_bytes: bytes / ms / 1e6,
      });
      table.push(
        `| ${name} | ${vname} | ${plan.chunk}${chunk === undefined ? " (auto)" : ""} | ${plan.items.length} | ${ms.toFixed(3)} | ${((ms / LAYERS) * 1000).toFixed(1)} | ${(bytes / ms / 1e6).toFixed(0)} |`,
      );
    }
    be.free(planBuf);
    be.free(scratch);
  }
  for (const b of [...ks, ...vs, q, o, lse]) be.free(b);
}
console.log(
  `\n${LAYERS} layers, H ${H}, Hkv ${HKV}, D ${D}, f32 pages, ${REPS} replays, on ${be.device.name}; GB/s = distinct K+V bytes / time\n`,
);
console.log("| layout | version | chunk | items | ms / step (all layers) | us / layer | GB/s (min bytes) |");
console.log("|---|---|---|---|---|---|---|");
for (const l of table) console.log(l);
