/**
 * Scratchpad of the fused decode GEMV (dev/cuda/decode_gemv.cu, host side decode_gemv_host.ts):
 * every version (decode_gemv.cu header: 4 or 8 ring stages, 4/8/16 warps, x staged or not, k-split
 * automatic or forced, L2 prefetch of the next or own weights, early PDL scheduling) is validated
 * first, then timed.
 * Validation (small random shapes, every epilogue, bf16 / f32 / RMSNormed x, 1..16 rows): each
 * version against float64 products of the same bf16 values, twice (same bits), and against the
 * product op (be.decodeGemv, src/tensor/backend/cuda/decode.ts): bit for bit for the versions that
 * keep its summation order (ring depth, x staging and prefetch move bytes, not sums); the split
 * and warp-count versions sum in another order and are held to the tolerance only.
 * Timing (Qwen3-4B shape, 36 layers of distinct random bf16 weights so nothing stays in L2): the
 * step's GEMV launches per group (norm + q/k/v, o_proj + residual, norm + gate/up + SwiGLU,
 * down_proj + residual, norm + lm_head), each group one graph, at 1, 4, 8, 16 rows; with --step,
 * the fused step's kernel sequence at one row (GEMVs, q/k norm + RoPE, decode attention from
 * dev/cuda/decode_attention.cu) with PDL off and on per version, as bench/gpu.ts's fused_step_mix.
 * dev/LOG.md keeps the numbers.
 *
 *   node dev/cuda/decode_gemv.ts [--rows 1,4,8,16] [--reps 20] [--step] [--keys 128] [--skip-timing]
 *   node dev/cuda/decode_gemv.ts --compile-only     # no GPU: NVRTC or nvcc, both dtypes
 */
import assert from "node:assert/strict";
import { parseArgs } from "node:util";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { bf16BitsToF32Array, toBf16Bits } from "../../src/tensor/dtype.ts";
import { growCapacity, packPlan, planAttention, planCapacityNeeded, planLayout } from "../../src/tensor/backend/decode-attention-plan.ts";
import type { DeviceBuffer, GemvEpilogue, GemvTarget } from "../../src/tensor/backend/types.ts";
import { Rng } from "../../src/util/rng.ts";
import { DevAttention } from "./decode_attention_host.ts";
import { DevGemv, type GemvLaunch, type GemvTune, checkSplitRules } from "./decode_gemv_host.ts";
import { DevModule, bitDiff, compileOnly, gemvRef, graphMs, numberList } from "./harness.ts";

const { values: args } = parseArgs({
  options: {
    rows: { type: "string", default: "1,4,8,16" },
    reps: { type: "string", default: "20" },
    step: { type: "boolean", default: false },
    keys: { type: "string", default: "128" },
    "skip-timing": { type: "boolean", default: false },
    "compile-only": { type: "boolean", default: false },
  },
});
checkSplitRules();
if (args["compile-only"]) process.exit(compileOnly(["decode_gemv.cu"]) ? 0 : 1);
const why = cudaUnavailable();
if (why) {
  console.log(`no CUDA here: ${why} (--compile-only needs no GPU; the split rules were checked)`);
  process.exit(0);
}

/** [name, tune, keeps the product's summation order (so its bits)]. */
const VERSIONS: Array<[string, GemvTune, boolean]> = [
  ["1 product", {}, true],
  ["2 8 ring stages", { unroll: 8 }, true],
  ["3 4 warps", { warps: 4 }, false],
  ["3 16 warps", { warps: 16 }, false],
  ["3 x never staged", { noStage: true }, true],
  ["4 split auto", { split: 0 }, false],
  ["4 split 2", { split: 2 }, false],
  ["4 split 3", { split: 3 }, false],
  ["4 split 4", { split: 4 }, false],
  ["5 next weights' L2 prefetch 20 MB", { prefetchMB: 20 }, true],
  ["5 own tile L2 prefetch 64 KB", { selfPrefetchKB: 64 }, true],
  ["5 own tile L2 prefetch all", { selfPrefetchKB: 1024 }, true],
];

const be = new CudaBackend();
const dg = new DevGemv(be, new DevModule(be, "decode_gemv.cu"));
const rng = new Rng(2026);
const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const randn = (n: number, s = 1) => Float32Array.from({ length: n }, () => s * rng.normal());
const dev = (a: Float32Array | Uint16Array | Int32Array) => {
  const b = be.alloc(a instanceof Float32Array ? "f32" : a instanceof Uint16Array ? "bf16" : "i32", a.length);
  be.write(b, a);
  return b;
};

// ---------------------------------------------------------------- validation
{
  const eps = 1e-6;
  const cases: Array<[number, number, GemvEpilogue, "bf16" | "f32" | "norm"]> = [
    [1, 1000, "store", "bf16"],
    [1, 2560, "add", "f32"],
    [3, 1024, "swiglu", "norm"],
    [8, 1000, "add", "bf16"],
    [8, 776, "swiglu", "norm"],
    [16, 1024, "store", "norm"],
    [16, 520, "add", "f32"],
    [3, 264, "store", "bf16"],
    [4, 6400, "store", "bf16"],
  ];
  for (const [rows, k, epilogue, xKind] of cases) {
    const swiglu = epilogue === "swiglu";
    const ns = swiglu ? [56, 56] : [72, 33];
    const ws = ns.map((n) => toBf16Bits(randn(n * k)));
    const xf = randn(rows * k, xKind === "norm" ? 2 : 1);
    const nw = randn(k);
    // The kernel's bf16 input values, as the reference sees them.
    const xVals = new Float32Array(rows * k);
    for (let b = 0; b < rows; b++) {
      let ss = 0;
      for (let i = 0; i < k; i++) ss += xf[b * k + i]! ** 2;
      const rs = xKind === "norm" ? 1 / Math.sqrt(ss / k + eps) : 1;
      for (let i = 0; i < k; i++) xVals[b * k + i] = xKind === "norm" ? xf[b * k + i]! * rs * nw[i]! : xf[b * k + i]!;
    }
    const xq = bf16BitsToF32Array(toBf16Bits(xVals));
    const X = xKind === "bf16" ? dev(toBf16Bits(xf)) : dev(xf);
    const NW = dev(nw);
    const bias = randn(ns[0]!);
    const y0 = ns.map((n) => randn(rows * n));
    const W = ws.map((w) => dev(w));
    const B0 = dev(bias);
    /** One launch (the product op, or a version) on fresh outputs; the outputs' bits. */
    const launch = (tune: GemvTune | null): Uint32Array[] => {
      const ys = swiglu ? [be.alloc("bf16", rows * ns[0]!)] : y0.map((y) => dev(y));
      const mats: GemvTarget[] = swiglu
        ? [
            { w: W[0]!, y: ys[0]!, n: ns[0]! },
            { w: W[1]!, y: ys[0]!, n: ns[1]! },
          ]
        : [
            { w: W[0]!, y: ys[0]!, n: ns[0]!, bias: B0 },
            { w: W[1]!, y: ys[1]!, n: ns[1]! },
          ];
      const p: GemvLaunch = { rows, k, epilogue, norm: xKind === "norm" ? { w: NW, eps } : undefined };
      if (tune === null) be.decodeGemv(X, mats, p);
      else dg.gemv(X, mats, { ...p, prefetch: [W[0]!, W[1]!] }, tune);
      const bits = ys.map((y) => {
        const a = be.read(y);
        return a instanceof Uint16Array ? Uint32Array.from(a) : new Uint32Array(a.buffer, a.byteOffset, a.length).slice();
      });
      for (const y of ys) be.free(y);
      return bits;
    };
    const product = launch(null);
    const [gr, ur] = [gemvRef(xq, bf16BitsToF32Array(ws[0]!), rows, ns[0]!, k), gemvRef(xq, bf16BitsToF32Array(ws[1]!), rows, ns[1]!, k)];
    for (const [vname, tune, sameOrder] of VERSIONS) {
      const s0 = dg.splitLaunches;
      const first = launch(tune);
      const split = dg.splitLaunches > s0;
      const second = launch(tune);
      const repeat = first.reduce((n, a, i) => n + bitDiff(a, second[i]!), 0);
      const vsProduct = first.reduce((n, a, i) => n + bitDiff(a, product[i]!), 0);
      let worst = 0;
      if (swiglu) {
        const o = bf16BitsToF32Array(Uint16Array.from(first[0]!));
        const silu = (v: number) => v / (1 + Math.exp(-v));
        for (let i = 0; i < o.length; i++) {
          const ref = silu(gr.y[i]!) * ur.y[i]!;
          const acc = 1e-5 * (gr.mag[i]! * 1.1 * Math.abs(ur.y[i]!) + ur.mag[i]! * Math.abs(silu(gr.y[i]!)));
          worst = Math.max(worst, Math.abs(o[i]! - ref) / (2 ** -8 * Math.abs(ref) + acc + 1e-6));
        }
      } else {
        [gr, ur].forEach(({ y, mag }, m) => {
          const o = new Float32Array(first[m]!.buffer, first[m]!.byteOffset, first[m]!.length);
          const n = ns[m]!;
          for (let i = 0; i < rows * n; i++) {
            const ref = y[i]! + (m === 0 ? bias[i % n]! : 0) + (epilogue === "add" ? y0[m]![i]! : 0);
            worst = Math.max(worst, Math.abs(o[i]! - ref) / (1e-5 * (mag[i]! + Math.abs(ref)) + 1e-6));
          }
        });
      }
      out({
        check: "decode_gemv",
        rows,
        k,
        epilogue,
        x: xKind,
        version: vname,
        split_ran: split,
        error_over_allowed: worst,
        differing_on_repeat: repeat,
        differing_vs_product: vsProduct,
      });
      assert.ok(worst <= 1, `${vname} rows ${rows} k ${k}: error ${worst} times the allowed`);
      assert.equal(repeat, 0, `${vname} rows ${rows} k ${k}: a repeat gives other bits`);
      if (sameOrder) assert.equal(vsProduct, 0, `${vname} rows ${rows} k ${k}: differs from the product op`);
      if ((tune.split ?? 1) > 1) assert.ok(split, `${vname} rows ${rows} k ${k}: the split path ran`);
    }
    for (const b of [X, NW, B0, ...W]) be.free(b);
  }
  console.log(
    "# validation passed: every version within fp32-accumulation tolerance of float64, bit-identical on a repeat; the order-keeping versions equal the product op bit for bit",
  );
}
if (args["skip-timing"]) process.exit(0);

// ---------------------------------------------------------------- timing, Qwen3-4B shape
const [C, I, H, HKV, D, V, L] = [2560, 9728, 32, 8, 128, 151936, 36];
const HD = H * D;
const KV = HKV * D;
/** A bf16 buffer of n random values (a 4 M pool written in pieces: the weights differ across the buffer). */
const pool = toBf16Bits(randn(1 << 22, 0.03));
const randomBf16 = (n: number): DeviceBuffer => {
  const b = be.alloc("bf16", n);
  for (let off = 0; off < n; off += pool.length) be.write(b, pool.subarray(0, Math.min(pool.length, n - off)), off);
  return b;
};
const layers = Array.from({ length: L }, () => ({
  q: randomBf16(HD * C),
  k: randomBf16(KV * C),
  v: randomBf16(KV * C),
  o: randomBf16(C * HD),
  gate: randomBf16(I * C),
  up: randomBf16(I * C),
  down: randomBf16(C * I),
}));
const head = randomBf16(V * C);
const weightBytes = 2 * (L * (HD * C + 2 * KV * C + C * HD + 3 * I * C) + V * C);
const f32 = (n: number, v: number) => {
  const b = be.alloc("f32", n);
  be.fill(b, v);
  return b;
};
const h32 = f32(16 * C, 0.01);
const a32 = f32(16 * HD, 0.01);
const nw = f32(C, 1);
const x16 = be.alloc("bf16", 16 * Math.max(C, I, HD));
be.fill(x16, 0.01);
const mlp16 = be.alloc("bf16", 16 * I);
const y = be.alloc("f32", 16 * V);
const qkv = [be.alloc("f32", 16 * HD), be.alloc("f32", 16 * KV), be.alloc("f32", 16 * KV)];
const eps = 1e-6;
const norm = { w: nw, eps, scratch: x16 };
/** A GEMV as the product op (tune null) or a version. */
const G = (x: DeviceBuffer, mats: GemvTarget[], p: GemvLaunch, tune: GemvTune | null) =>
  tune === null ? be.decodeGemv(x, mats, p) : dg.gemv(x, mats, p, tune);
const groups: Array<{ name: string; bytes: number; launch: (l: number, rows: number, tune: GemvTune | null) => void }> = [
  {
    name: "norm_qkv",
    bytes: 2 * (HD + 2 * KV) * C,
    launch: (l, rows, t) =>
      G(
        h32,
        [
          { w: layers[l]!.q, y: qkv[0]!, n: HD },
          { w: layers[l]!.k, y: qkv[1]!, n: KV },
          { w: layers[l]!.v, y: qkv[2]!, n: KV },
        ],
        { rows, k: C, epilogue: "store", norm, prefetch: [layers[l]!.o] },
        t,
      ),
  },
  {
    name: "o_add",
    bytes: 2 * C * HD,
    launch: (l, rows, t) =>
      G(a32, [{ w: layers[l]!.o, y: h32, n: C }], { rows, k: HD, epilogue: "add", prefetch: [layers[l]!.gate, layers[l]!.up] }, t),
  },
  {
    name: "norm_gate_up_swiglu",
    bytes: 2 * 2 * I * C,
    launch: (l, rows, t) =>
      G(
        h32,
        [
          { w: layers[l]!.gate, y: mlp16, n: I },
          { w: layers[l]!.up, y: mlp16, n: I },
        ],
        { rows, k: C, epilogue: "swiglu", norm, prefetch: [layers[l]!.down] },
        t,
      ),
  },
  {
    name: "down_add",
    bytes: 2 * C * I,
    launch: (l, rows, t) =>
      G(
        mlp16,
        [{ w: layers[l]!.down, y: h32, n: C }],
        { rows, k: I, epilogue: "add", prefetch: l + 1 < L ? [layers[l + 1]!.q, layers[l + 1]!.k, layers[l + 1]!.v] : [head] },
        t,
      ),
  },
];
const REPS = Number(args.reps);
console.log(
  `\nQwen3-4B-shape GEMVs (${L} layers + lm_head, ${(weightBytes / 1e9).toFixed(2)} GB of bf16 weights) on ${be.device.name}, PDL ${be.pdl ? "on" : "off"}\n`,
);
console.log("| rows | version | ms per step's GEMVs | TB/s of weights | q/k/v | o_proj | gate/up | down_proj | lm_head (us per launch) |");
console.log("|---|---|---|---|---|---|---|---|---|");
for (const rows of numberList(args.rows)) {
  const contestants: Array<[string, GemvTune | null]> = [
    ["product op", null],
    ...VERSIONS.filter(([, t]) => rows === 1 || t.split !== undefined || Object.keys(t).length === 0).map(
      ([n, t]) => [n, t] as [string, GemvTune],
    ),
  ];
  for (const [vname, tune] of contestants) {
    const per: Record<string, number> = {};
    let total = 0;
    for (const gr of groups) {
      const ms = graphMs(
        be,
        () => {
          for (let l = 0; l < L; l++) gr.launch(l, rows, tune);
        },
        REPS,
      );
      per[gr.name] = (ms / L) * 1000;
      total += ms;
    }
    const hms = graphMs(
      be,
      () =>
        G(h32, [{ w: head, y, n: V }], { rows, k: C, epilogue: "store", norm, prefetch: [layers[0]!.q, layers[0]!.k, layers[0]!.v] }, tune),
      REPS,
    );
    per["norm_lm_head"] = hms * 1000;
    total += hms;
    out({ bench: "decode_gemv", rows, version: vname, ms_per_step: total, weight_tb_s: weightBytes / total / 1e9, us_per_launch: per });
    console.log(
      `| ${rows} | ${vname} | ${total.toFixed(3)} | ${(weightBytes / total / 1e9).toFixed(2)} | ${Object.values(per)
        .map((u) => u.toFixed(1))
        .join(" | ")} |`,
    );
  }
}

// ---------------------------------------------------------------- the fused step's kernel sequence, one row
if (args.step) {
  const da = new DevAttention(be, new DevModule(be, "decode_attention.cu"));
  const len = Number(args.keys);
  const q = f32(HD, 0.01);
  const kv = f32(2 * KV, 0.01);
  const kb = be.view(kv, 0, KV);
  const vb = be.view(kv, KV, KV);
  const pages = [f32(len * KV, 0.01), f32(len * KV, 0.01)];
  const iblk = be.alloc("i32", 2);
  be.write(iblk, Int32Array.of(len - 1, len - 1));
  const pos = be.view(iblk, 0, 1);
  const slot = be.view(iblk, 1, 1);
  const plan = planAttention([[[0, len]]]);
  const cap = growCapacity(null, planCapacityNeeded(plan));
  const lay = planLayout(1, cap);
  const planHost = new Int32Array(lay.length);
  packPlan(plan, lay, planHost);
  const planBuf = be.alloc("i32", lay.length);
  be.write(planBuf, planHost);
  const scratch = be.alloc("f32", be.decodeAttentionScratchLength(cap, H, D));
  const att = be.alloc("f32", HD);
  const lse = be.alloc("f32", H);
  const qn = f32(D, 1);
  const ap = { rows: 1, keys: len, heads: H, kvHeads: HKV, headDim: D, scale: 1 / Math.sqrt(D), capacity: cap };
  const rp = { rows: 1, heads: H, kvHeads: HKV, headDim: D, eps, theta: 1e6 };
  /** The step (embedding aside): per layer the 4 GEMV launches, q/k norm + RoPE, attention; then lm_head. */
  const step = (tune: GemvTune | null, parts: { rope: boolean; att: boolean }) => () => {
    for (let l = 0; l < L; l++) {
      const w = layers[l]!;
      G(
        h32,
        [
          { w: w.q, y: q, n: HD },
          { w: w.k, y: kb, n: KV },
          { w: w.v, y: vb, n: KV },
        ],
        { rows: 1, k: C, epilogue: "store", norm, prefetch: [w.o] },
        tune,
      );
      if (parts.rope) {
        if (tune === null) be.decodeQkNormRope(q, kb, vb, qn, qn, pos, slot, pages[0]!, pages[1]!, rp);
        else dg.qkNormRope(q, kb, vb, qn, qn, pos, slot, pages[0]!, pages[1]!, rp, tune);
      }
      if (parts.att) {
        if (tune === null) be.decodeAttention(q, pages[0]!, pages[1]!, planBuf, scratch, att, lse, ap);
        else da.run(q, pages[0]!, pages[1]!, planBuf, scratch, att, lse, ap, { pdlEarly: tune.pdlEarly });
      }
      G(att, [{ w: w.o, y: h32, n: C }], { rows: 1, k: HD, epilogue: "add", prefetch: [w.gate, w.up] }, tune);
      groups[2]!.launch(l, 1, tune);
      groups[3]!.launch(l, 1, tune);
    }
    G(h32, [{ w: head, y, n: V }], { rows: 1, k: C, epilogue: "store", norm, prefetch: [layers[0]!.q, layers[0]!.k, layers[0]!.v] }, tune);
  };
  const stepVersions: Array<[string, GemvTune | null]> = [
    ["product ops", null],
    ["1 product (dev)", {}],
    ["4 split auto", { split: 0 }],
    ["4 split 3", { split: 3 }],
    ["early PDL scheduling", { pdlEarly: true }],
    ["5 next weights' L2 prefetch 20 MB", { prefetchMB: 20 }],
    ["5 own tile L2 prefetch 64 KB", { selfPrefetchKB: 64 }],
    ["5 own tile L2 prefetch all", { selfPrefetchKB: 1024 }],
  ];
  console.log(
    `\nThe fused step's kernel sequence, one row, ${len} keys (ms per step; us per layer added by q/k norm + RoPE and by attention)\n`,
  );
  console.log("| PDL | version | GEMVs | + q/k norm + RoPE | + attention (= step) | rope us/layer | attention us/layer |");
  console.log("|---|---|---|---|---|---|---|");
  const keepPdl = be.pdl;
  for (const pdl of be.pdlSupported ? [false, true] : [false]) {
    be.pdl = pdl;
    for (const [vname, tune] of stepVersions) {
      if (!pdl && tune?.pdlEarly) continue;
      const ms = [
        graphMs(be, step(tune, { rope: false, att: false }), 50),
        graphMs(be, step(tune, { rope: true, att: false }), 50),
        graphMs(be, step(tune, { rope: true, att: true }), 50),
      ];
      const perLayer = (a: number, b: number) => ((b - a) * 1000) / L;
      out({
        bench: "decode_step_mix",
        pdl,
        version: vname,
        keys: len,
        ms_gemvs: ms[0],
        ms_gemvs_rope: ms[1],
        ms_step: ms[2],
        rope_us_per_layer: perLayer(ms[0]!, ms[1]!),
        attention_us_per_layer: perLayer(ms[1]!, ms[2]!),
      });
      console.log(
        `| ${pdl ? "on" : "off"} | ${vname} | ${ms[0]!.toFixed(3)} | ${ms[1]!.toFixed(3)} | ${ms[2]!.toFixed(3)} | ${perLayer(ms[0]!, ms[1]!).toFixed(1)} | ${perLayer(ms[1]!, ms[2]!).toFixed(1)} |`,
      );
    }
  }
  be.pdl = keepPdl;
}
