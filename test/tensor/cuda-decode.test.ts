/**
 * The fused decode ops of the CUDA backend (cuda/decode.ts, kernels/decode.cu) on a GPU, each on
 * fresh seeded random inputs against an independent reference: decodeRmsnorm against a float64
 * RMSNorm (and the CPU backend's rmsnorm + bf16 cast, bit for bit but for rare summation-order
 * ties); decodeGemv's three epilogues (several matrices per launch, partial 16-row tiles, k not a
 * multiple of 32, bias, a row stride, bf16 and f32 x, 1..16 rows, 4 and 8 warps, x staged in
 * shared memory or read from global) against float64 products of the same bf16 values, and with
 * the RMSNorm fused into its x reads (and the separate-kernel fallback for more rows) against a
 * float64 norm; decodeQkNormRope against the CPU backend's rmsnorm + rope + a host scatter
 * (padding slot -1, positions up to 70,000).
 * Programmatic dependent launch: a 3-layer decode step built from these ops and the decode
 * attention (each kernel reading what the previous one wrote) gives the same bits with PDL on and
 * off, eagerly and replayed from a captured graph, and the PDL launches really happened.
 * The measured-and-dropped variants (k-split GEMV, 8 ring stages, L2 prefetch, early PDL
 * scheduling) are validated by their own harness, dev/cuda/decode_gemv.ts.
 * Skipped without a GPU (the PDL part also without sm_90).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CudaBackend, cudaUnavailable } from "../../src/tensor/backend/cuda/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { bf16BitsToF32Array, toBf16Bits } from "../../src/tensor/dtype.ts";
import { Rng } from "../../src/util/rng.ts";
import { growCapacity, packPlan, planAttention, planCapacityNeeded, planLayout } from "../../src/tensor/backend/decode-attention-plan.ts";
import { diffStats } from "../util/check-close.ts";

const why = cudaUnavailable();

const fmt = (d: { max: number; mean: number }) => `max abs diff ${d.max.toExponential(2)}, mean ${d.mean.toExponential(2)}`;

if (why) {
  test("cuda fused decode ops", { skip: `no CUDA here: ${why}` }, () => {});
} else {
  const be = new CudaBackend();
  const cpu = new CpuBackend();
  const rng = new Rng(2026);
  const randn = (n: number, s = 1) => Float32Array.from({ length: n }, () => s * rng.normal());
  /** Random bf16 values: the bits for the device, their exact f32 values for the reference. */
  const randBf16 = (n: number, s = 1) => {
    const bits = toBf16Bits(randn(n, s));
    return { bits, vals: bf16BitsToF32Array(bits) };
  };
  const dev = (a: Float32Array | Uint16Array | Int32Array) => {
    const b = be.alloc(a instanceof Float32Array ? "f32" : a instanceof Uint16Array ? "bf16" : "i32", a.length);
    be.write(b, a);
    return b;
  };

  test("decodeRmsnorm: f32 rows -> bf16 equals rmsnorm + cast", (t) => {
    const rows = 5;
    const dim = 200;
    const eps = 1e-6;
    const x = randn(rows * dim, 3);
    const w = randn(dim);
    const out = be.alloc("bf16", rows * dim);
    be.decodeRmsnorm(dev(x), dev(w), out, { rows, dim, eps });
    const got = bf16BitsToF32Array(be.read(out) as Uint16Array);
    // float64 reference, and the CPU backend's f32 rmsnorm rounded to bf16 (the generic path).
    const ref = new Float64Array(rows * dim);
    for (let r = 0; r < rows; r++) {
      let ss = 0;
      for (let j = 0; j < dim; j++) ss += x[r * dim + j]! ** 2;
      const rs = 1 / Math.sqrt(ss / dim + eps);
      for (let j = 0; j < dim; j++) ref[r * dim + j] = x[r * dim + j]! * rs * w[j]!;
    }
    const cx = cpu.alloc("f32", rows * dim);
    cpu.write(cx, x);
    const cw = cpu.alloc("f32", dim);
    cpu.write(cw, w);
    const co = cpu.alloc("f32", rows * dim);
    cpu.rmsnorm(cx, cw, co, cpu.alloc("f32", rows), { rows, dim, eps });
    const generic = bf16BitsToF32Array(toBf16Bits(cpu.read(co) as Float32Array));
    const d = diffStats(got, ref);
    const g = diffStats(got, generic);
    let rel = 0;
    for (let i = 0; i < ref.length; i++) rel = Math.max(rel, Math.abs(got[i]! - ref[i]!) / (Math.abs(ref[i]!) + 1e-30));
    t.diagnostic(`vs float64: ${fmt(d)}, max rel ${rel.toExponential(2)}; vs cpu rmsnorm + cast: ${fmt(g)}`);
    assert.ok(rel <= 2 ** -8, `relative error ${rel} above bf16 rounding`);
    // Bit for bit but where the double sums of squares, added in another order, round apart.
    let mismatches = 0;
    for (let i = 0; i < got.length; i++) if (got[i] !== generic[i]) mismatches++;
    assert.ok(mismatches <= 2, `${mismatches} of ${got.length} values differ from the generic rmsnorm + cast: ${fmt(g)}`);
  });

  /** float64 y[b, j] = sum_k x[b, k] w[j, k] over bf16-exact values; also sum |terms| per output. */
  const gemvRef = (x: Float32Array, w: Float32Array, rows: number, n: number, k: number) => {
    const y = new Float64Array(rows * n);
    const mag = new Float64Array(rows * n);
    for (let b = 0; b < rows; b++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        let m = 0;
        for (let i = 0; i < k; i++) {
          const p = x[b * k + i]! * w[j * k + i]!;
          s += p;
          m += Math.abs(p);
        }
        y[b * n + j] = s;
        mag[b * n + j] = m;
      }
    return { y, mag };
  };

  test("decodeGemv store/add: several matrices, partial tiles, bias, row stride, bf16 and f32 x", (t) => {
    const ns = [48, 37, 16];
    // [rows, k, x f32]: 4 warps below k = 1024 (32 steps of 32), 8 from there; x staged in shared
    // memory for <= 4 rows of at most 48 KB (not at k = 6400), read from global otherwise.
    const cases = [
      [1, 264, false],
      [3, 1024, true],
      [8, 520, false],
      [11, 264, true],
      [16, 1024, false],
      [2, 264, false],
      [4, 6400, true],
    ] as const;
    for (const [rows, k, xF32] of cases) {
      const ws = ns.map((n) => randBf16(n * k));
      const xb = randBf16(rows * k);
      // f32 x: values off the bf16 grid, which the kernel rounds to nearest even as it loads.
      const xf = randn(rows * k);
      const xVals = xF32 ? bf16BitsToF32Array(toBf16Bits(xf)) : xb.vals;
      const bias = randn(ns[1]!);
      const ldy0 = ns[0]! + 5;
      const y0 = randn(rows * ldy0);
      const ys = [dev(y0), be.alloc("f32", rows * ns[1]!), be.alloc("f32", rows * ns[2]!)];
      const W = ws.map((w) => dev(w.bits));
      const c0 = be.counters()["decodeGemv"] ?? 0;
      be.decodeGemv(
        xF32 ? dev(xf) : dev(xb.bits),
        [
          { w: W[0]!, y: ys[0]!, n: ns[0]!, ldy: ldy0 },
          { w: W[1]!, y: ys[1]!, n: ns[1]!, bias: dev(bias) },
          { w: W[2]!, y: ys[2]!, n: ns[2]! },
        ],
        { rows, k, epilogue: "store" },
      );
      // "add" into the third output (the residual's use), same x.
      be.decodeGemv(xF32 ? dev(xf) : dev(xb.bits), [{ w: W[2]!, y: ys[2]!, n: ns[2]! }], { rows, k, epilogue: "add" });
      assert.equal((be.counters()["decodeGemv"] ?? 0) - c0, 2);
      let worst = 0;
      const all: number[] = [];
      const refs: number[] = [];
      ns.forEach((n, m) => {
        const { y, mag } = gemvRef(xVals, ws[m]!.vals, rows, n, k);
        const got = be.read(ys[m]!) as Float32Array;
        const ld = m === 0 ? ldy0 : n;
        for (let b = 0; b < rows; b++)
          for (let j = 0; j < n; j++) {
            // Matrix 2 was stored then added once more: 2y. Matrix 1 has the bias.
            const want = (m === 2 ? 2 : 1) * y[b * n + j]! + (m === 1 ? bias[j]! : 0);
            const g = got[b * ld + j]!;
            worst = Math.max(worst, Math.abs(g - want) / (mag[b * n + j]! * (m === 2 ? 2 : 1) + 1e-3));
            all.push(g);
            refs.push(want);
          }
        // The gap of the strided output (columns n..ldy) is untouched.
        if (m === 0) for (let b = 0; b < rows; b++) for (let j = n; j < ld; j++) assert.equal(got[b * ld + j], y0[b * ld + j]);
      });
      const d = diffStats(all, refs);
      const staged = rows <= 4 && rows * (k + 8) * 2 <= 48 * 1024;
      t.diagnostic(
        `rows ${rows}, k ${k}, x ${xF32 ? "f32" : "bf16"}, ${k >= 1024 ? 8 : 4} warps, x ${staged ? "staged" : "from global"}: ${fmt(d)}, max err / sum|terms| ${worst.toExponential(2)}`,
      );
      assert.ok(worst < 1e-5, `error ${worst} of the terms' magnitude exceeds fp32 accumulation`);
    }
  });

  test("decodeGemv with the RMSNorm fused (f32 residual in), and its separate-kernel fallback", (t) => {
    const eps = 1e-6;
    // [rows, k, scratch given, epilogue]; the last case's x is too large to stage (read from global).
    const cases = [
      [1, 264, false, "store"],
      [3, 1024, true, "swiglu"],
      [9, 520, true, "store"],
      [9, 264, false, "swiglu"],
      [2, 2560, false, "store"],
      [4, 6400, true, "store"],
    ] as const;
    for (const [rows, k, scratch, epilogue] of cases) {
      const n = 40;
      const h = randn(rows * k, 2);
      const nw = randn(k);
      // Reference input: rmsnorm in float64, rounded to f32 then bf16 (the generic path's values).
      const xn = new Float32Array(rows * k);
      for (let b = 0; b < rows; b++) {
        let ss = 0;
        for (let i = 0; i < k; i++) ss += h[b * k + i]! ** 2;
        const rs = 1 / Math.sqrt(ss / k + eps);
        for (let i = 0; i < k; i++) xn[b * k + i] = h[b * k + i]! * rs * nw[i]!;
      }
      const xv = bf16BitsToF32Array(toBf16Bits(xn));
      const g = randBf16(n * k);
      const u = randBf16(n * k);
      const swiglu = epilogue === "swiglu";
      const y = be.alloc(swiglu ? "bf16" : "f32", rows * n);
      const r0 = be.counters()["decodeRmsnorm"] ?? 0;
      be.decodeGemv(
        dev(h),
        swiglu
          ? [
              { w: dev(g.bits), y, n },
              { w: dev(u.bits), y, n },
            ]
          : [{ w: dev(g.bits), y, n }],
        {
          rows,
          k,
          epilogue,
          norm: { w: dev(nw), eps, scratch: scratch ? be.alloc("bf16", rows * k) : undefined },
        },
      );
      const separate = (be.counters()["decodeRmsnorm"] ?? 0) - r0;
      assert.equal(separate, scratch && rows > 4 ? 1 : 0, "the norm runs fused for few rows or without scratch");
      const gr = gemvRef(xv, g.vals, rows, n, k);
      const ur = gemvRef(xv, u.vals, rows, n, k);
      const silu = (v: number) => v / (1 + Math.exp(-v));
      const got = swiglu ? bf16BitsToF32Array(be.read(y) as Uint16Array) : (be.read(y) as Float32Array);
      const ref = swiglu ? gr.y.map((gv, i) => silu(gv) * ur.y[i]!) : gr.y;
      let worst = 0;
      for (let i = 0; i < ref.length; i++) {
        const allowed = swiglu
          ? 2 ** -8 * Math.abs(ref[i]!) + 1e-5 * (gr.mag[i]! * 1.1 * Math.abs(ur.y[i]!) + ur.mag[i]! * Math.abs(silu(gr.y[i]!))) + 1e-6
          : 1e-5 * gr.mag[i]! + 1e-6;
        worst = Math.max(worst, Math.abs(got[i]! - ref[i]!) / allowed);
      }
      const d = diffStats(got, ref);
      const staged = rows <= 4 && rows * (k + 8) * 2 <= 48 * 1024;
      t.diagnostic(
        `rows ${rows}, k ${k}, ${epilogue}, norm ${separate ? "separate kernel" : "fused"}, x ${staged ? "staged" : "from global"}: ${fmt(d)}, max error / allowed ${worst.toFixed(3)}`,
      );
      assert.ok(worst <= 1, `normed GEMV error ${worst} times the allowed`);
    }
  });

  test("decodeGemv swiglu: gate and up in one launch, bf16 out", (t) => {
    for (const [rows, k] of [
      [1, 136],
      [9, 512],
      [16, 264],
      [4, 1024],
    ] as const) {
      const n = 40;
      const g = randBf16(n * k);
      const u = randBf16(n * k);
      const xb = randBf16(rows * k, 0.5);
      const out = be.alloc("bf16", rows * n);
      be.decodeGemv(
        dev(xb.bits),
        [
          { w: dev(g.bits), y: out, n },
          { w: dev(u.bits), y: out, n },
        ],
        { rows, k, epilogue: "swiglu" },
      );
      const got = bf16BitsToF32Array(be.read(out) as Uint16Array);
      const gr = gemvRef(xb.vals, g.vals, rows, n, k);
      const ur = gemvRef(xb.vals, u.vals, rows, n, k);
      const silu = (v: number) => v / (1 + Math.exp(-v));
      const ref = gr.y.map((gv, i) => silu(gv) * ur.y[i]!);
      // Allowed: bf16 rounding of the result, plus fp32 accumulation error (1e-5 of the terms'
      // magnitude) carried through silu(g) u (|silu'| <= 1.1).
      let worst = 0;
      for (let i = 0; i < ref.length; i++) {
        const acc = 1e-5 * (gr.mag[i]! * 1.1 * Math.abs(ur.y[i]!) + ur.mag[i]! * Math.abs(silu(gr.y[i]!)));
        worst = Math.max(worst, Math.abs(got[i]! - ref[i]!) / (2 ** -8 * Math.abs(ref[i]!) + acc + 1e-6));
      }
      const d = diffStats(got, ref);
      t.diagnostic(`rows ${rows}, k ${k}: ${fmt(d)}, max error / allowed ${worst.toFixed(3)}`);
      assert.ok(worst <= 1, `swiglu error ${worst} times the allowed`);
    }
  });

  test("decodeGemv refuses what it cannot read", () => {
    const x = be.alloc("bf16", 2 * 12);
    const w = be.alloc("bf16", 4 * 12);
    const y = be.alloc("f32", 8);
    assert.throws(() => be.decodeGemv(x, [{ w, y, n: 4 }], { rows: 2, k: 12, epilogue: "store" }), /multiple of 8/);
    assert.throws(() => be.decodeGemv(x, [{ w, y, n: 4 }], { rows: 17, k: 8, epilogue: "store" }), /rows = 17/);
    assert.throws(
      () =>
        be.decodeGemv(
          x,
          [
            { w, y, n: 4 },
            { w, y, n: 3 },
          ],
          { rows: 1, k: 8, epilogue: "swiglu" },
        ),
      /equal rows/,
    );
    assert.throws(() => be.decodeGemv(x, [{ w: y, y, n: 1 }], { rows: 1, k: 8, epilogue: "store" }), /expected bf16/);
  });

  for (const [D, H, Hkv] of [
    [32, 4, 2],
    [128, 8, 2],
  ] as const) {
    test(`decodeQkNormRope (D ${D}) equals rmsnorm + rope + scatter on the cpu`, (t) => {
      const rows = 3;
      const eps = 1e-6;
      const theta = 1e6;
      const numSlots = 10;
      const positions = Int32Array.from([5, 1000, 70000]);
      const slots = Int32Array.from([7, -1, 2]);
      const q = randn(rows * H * D, 2);
      const k = randn(rows * Hkv * D, 2);
      const v = randn(rows * Hkv * D);
      const qw = randn(D);
      const kw = randn(D);
      const keys0 = randn(numSlots * Hkv * D);
      const vals0 = randn(numSlots * Hkv * D);
      const Q = dev(q);
      const KP = dev(keys0);
      const VP = dev(vals0);
      const c0 = be.counters()["decodeQkNormRope"] ?? 0;
      be.decodeQkNormRope(Q, dev(k), dev(v), dev(qw), dev(kw), dev(positions), dev(slots), KP, VP, {
        rows,
        heads: H,
        kvHeads: Hkv,
        headDim: D,
        eps,
        theta,
      });
      assert.equal((be.counters()["decodeQkNormRope"] ?? 0) - c0, 1);
      // The generic path on the CPU: rmsnorm per head, rope at the positions, then the scatter.
      const cpuNormRope = (x: Float32Array, w: Float32Array, heads: number) => {
        const X = cpu.alloc("f32", x.length);
        cpu.write(X, x);
        const W = cpu.alloc("f32", D);
        cpu.write(W, w);
        const N = cpu.alloc("f32", x.length);
        cpu.rmsnorm(X, W, N, cpu.alloc("f32", rows * heads), { rows: rows * heads, dim: D, eps });
        const P = cpu.alloc("i32", rows);
        cpu.write(P, positions);
        const O = cpu.alloc("f32", x.length);
        cpu.rope(N, P, O, { tokens: rows, heads, dim: D, theta, inverse: false });
        return cpu.read(O) as Float32Array;
      };
      const qRef = cpuNormRope(q, qw, H);
      const kRef = cpuNormRope(k, kw, Hkv);
      const keysRef = Float32Array.from(keys0);
      const valsRef = Float32Array.from(vals0);
      const row = Hkv * D;
      for (let r = 0; r < rows; r++) {
        if (slots[r]! < 0) continue;
        keysRef.set(kRef.subarray(r * row, (r + 1) * row), slots[r]! * row);
        valsRef.set(v.subarray(r * row, (r + 1) * row), slots[r]! * row);
      }
      const dq = diffStats(be.read(Q) as Float32Array, qRef);
      const dk = diffStats(be.read(KP) as Float32Array, keysRef);
      const dv = diffStats(be.read(VP) as Float32Array, valsRef);
      t.diagnostic(`q: ${fmt(dq)}; keys: ${fmt(dk)}; values: ${fmt(dv)}`);
      assert.ok(dq.max < 1e-5 && dk.max < 1e-5, "q/k differ from rmsnorm + rope");
      assert.equal(dv.max, 0, "values are copies");
    });
  }

  for (const rows of [1, 6]) {
    test(`PDL: a ${rows}-row decode step of dependent fused kernels gives the same bits with PDL on and off, eager and in a graph`, (t) => {
      if (!be.pdlSupported) {
        t.skip(`PDL needs sm_90+ (device ${be.arch})`);
        return;
      }
      const [C, H, Hkv, D, I, V, L, S] = [256, 4, 2, 32, 384, 520, 3, 64];
      const eps = 1e-6;
      const bf = (n: number, s: number) => dev(toBf16Bits(randn(n, s)));
      const f32 = (n: number, s = 1) => dev(randn(n, s));
      const layers = Array.from({ length: L }, () => ({
        q: bf(H * D * C, 0.06),
        k: bf(Hkv * D * C, 0.06),
        v: bf(Hkv * D * C, 0.06),
        o: bf(C * H * D, 0.08),
        gate: bf(I * C, 0.06),
        up: bf(I * C, 0.06),
        down: bf(C * I, 0.05),
        n1: f32(C),
        n2: f32(C),
        qn: f32(D),
        kn: f32(D),
      }));
      const head = bf(V * C, 0.06);
      const fnorm = f32(C);
      // Row r is at position 40 + r, writes slot 40 + r and sees slots [0, 41 + r).
      const pos = dev(Int32Array.from({ length: rows }, (_, r) => 40 + r));
      const plan = planAttention(Array.from({ length: rows }, (_, r) => [[0, 41 + r] as [number, number]]));
      const cap = growCapacity(null, planCapacityNeeded(plan));
      const lay = planLayout(rows, cap);
      const planHost = new Int32Array(lay.length);
      packPlan(plan, lay, planHost);
      const planBuf = dev(planHost);
      const h0 = randn(rows * C);
      const keys0 = randn(S * Hkv * D);
      const vals0 = randn(S * Hkv * D);
      const h = be.alloc("f32", rows * C);
      const keys = be.alloc("f32", S * Hkv * D);
      const vals = be.alloc("f32", S * Hkv * D);
      const q = be.alloc("f32", rows * H * D);
      const k = be.alloc("f32", rows * Hkv * D);
      const v = be.alloc("f32", rows * Hkv * D);
      const att = be.alloc("f32", rows * H * D);
      const lse = be.alloc("f32", rows * H);
      const scratch = be.alloc("f32", be.decodeAttentionScratchLength(cap, H, D));
      const a16 = be.alloc("bf16", rows * C);
      const m16 = be.alloc("bf16", rows * I);
      const logits = be.alloc("f32", rows * V);
      const body = () => {
        for (const w of layers) {
          be.decodeGemv(
            h,
            [
              { w: w.q, y: q, n: H * D },
              { w: w.k, y: k, n: Hkv * D },
              { w: w.v, y: v, n: Hkv * D },
            ],
            { rows, k: C, epilogue: "store", norm: { w: w.n1, eps, scratch: a16 } },
          );
          be.decodeQkNormRope(q, k, v, w.qn, w.kn, pos, pos, keys, vals, { rows, heads: H, kvHeads: Hkv, headDim: D, eps, theta: 1e4 });
          be.decodeAttention(q, keys, vals, planBuf, scratch, att, lse, {
            rows,
            keys: S,
            heads: H,
            kvHeads: Hkv,
            headDim: D,
            scale: 1 / Math.sqrt(D),
            capacity: cap,
          });
          be.decodeGemv(att, [{ w: w.o, y: h, n: C }], { rows, k: H * D, epilogue: "add" });
          be.decodeGemv(
            h,
            [
              { w: w.gate, y: m16, n: I },
              { w: w.up, y: m16, n: I },
            ],
            { rows, k: C, epilogue: "swiglu", norm: { w: w.n2, eps, scratch: a16 } },
          );
          be.decodeGemv(m16, [{ w: w.down, y: h, n: C }], { rows, k: I, epilogue: "add" });
        }
        be.decodeGemv(h, [{ w: head, y: logits, n: V }], { rows, k: C, epilogue: "store", norm: { w: fnorm, eps, scratch: a16 } });
      };
      /** Resets the inputs the step overwrites, runs it (eagerly or by `replay`), returns its outputs. */
      const run = (replay?: () => void) => {
        be.write(h, h0);
        be.write(keys, keys0);
        be.write(vals, vals0);
        if (replay) replay();
        else body();
        return [be.read(logits) as Float32Array, be.read(h) as Float32Array, be.read(keys) as Float32Array];
      };
      const keep = be.pdl;
      try {
        be.pdl = false;
        const c0 = be.counters()["cuda.launch.pdl"] ?? 0;
        const l00 = be.counters()["cuda.launch"] ?? 0;
        const ref = run();
        // The step's kernels (the decode attention's count is its own file's business).
        const stepLaunches = (be.counters()["cuda.launch"] ?? 0) - l00;
        assert.equal((be.counters()["cuda.launch.pdl"] ?? 0) - c0, 0, "PDL off launches nothing with PDL");
        const offGraph = be.captureGraph(body);
        const results: Array<[string, Float32Array[]]> = [["graph, PDL off", run(offGraph.replay)]];
        be.pdl = true;
        const l0 = be.counters()["cuda.launch"] ?? 0;
        const p0 = be.counters()["cuda.launch.pdl"] ?? 0;
        results.push(["eager, PDL on", run()]);
        // Every kernel of the step is a fused op: all of them launch with PDL.
        const launched = (be.counters()["cuda.launch"] ?? 0) - l0;
        assert.equal((be.counters()["cuda.launch.pdl"] ?? 0) - p0, launched, "every fused kernel launched with PDL");
        assert.equal(launched, stepLaunches);
        assert.ok(
          launched >= L * (5 + (rows > 4 ? 2 : 0)) + 1 + (rows > 4 ? 1 : 0),
          `${launched} launches: at least the GEMVs, q/k norm + RoPE, one attention kernel and the norms per layer`,
        );
        const onGraph = be.captureGraph(body);
        results.push(["graph, PDL on", run(onGraph.replay)], ["graph, PDL on, again", run(onGraph.replay)]);
        onGraph.destroy();
        offGraph.destroy();
        const mag = ref[0]!.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
        assert.ok(Number.isFinite(mag) && mag > 1e-3, `the step's logits are finite and not trivial (max |logit| ${mag})`);
        for (const [name, got] of results) {
          ["logits", "residual", "key pages"].forEach((what, i) => {
            const d = diffStats(got[i]!, ref[i]!);
            t.diagnostic(`rows ${rows}, ${name}, ${what} vs eager PDL off: ${fmt(d)}`);
            assert.equal(d.max, 0, `${name}: ${what} differ from the serialized step`);
          });
        }
      } finally {
        be.pdl = keep;
      }
    });
  }
}
