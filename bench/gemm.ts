/**
 * GEMM throughput of the CPU backend's two paths, f32: OpenBLAS through koffi, and the blocked
 * TypeScript kernel on one thread and on the default thread count (worker split). Square sizes
 * 64..1024, then the GEMMs of one training step of a ~10M-parameter transformer (d_model 256,
 * 2048 tokens per step, fused QKV 768, MLP 1024, vocabulary 8192) and a decode-time GEMV.
 * Not a test: prints a table. Run: node bench/gemm.ts (OPENBLAS_CORETYPE= to let npr choose).
 */

import { availableParallelism } from "node:os";
import { CpuGemm } from "../src/tensor/backend/cpu/gemm.ts";
import { loadOpenBlas } from "../src/tensor/backend/cpu/openblas.ts";
import type { MatmulParams } from "../src/tensor/backend/types.ts";
import { ENV } from "../src/util/env.ts";
import { Rng } from "../src/util/rng.ts";

interface Shape {
  name: string;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  batch?: number;
}

const threads = ENV.threads ?? availableParallelism();
const blas = new CpuGemm({ useBlas: true, openblasPath: ENV.openblasPath, threads: ENV.threads });
const ts1 = new CpuGemm({ useBlas: false, threads: 1 });
const tsN = new CpuGemm({ useBlas: false, threads });

const shapes: Shape[] = [
  ...[64, 128, 256, 512, 1024].map((s) => ({ name: `square ${s}`, m: s, n: s, k: s, transA: false, transB: false })),
  // Linear layers store W as [out, in] (Hugging Face layout): forward is x W^T (transB), the input
  // gradient dy W, the weight gradient dy^T x (transA).
  { name: "qkv fwd   x Wqkv^T", m: 2048, n: 768, k: 256, transA: false, transB: true },
  { name: "qkv dX    dy Wqkv", m: 2048, n: 256, k: 768, transA: false, transB: false },
  { name: "qkv dW    dy^T x", m: 768, n: 256, k: 2048, transA: true, transB: false },
  { name: "proj fwd  x Wo^T", m: 2048, n: 256, k: 256, transA: false, transB: true },
  { name: "mlp up fwd", m: 2048, n: 1024, k: 256, transA: false, transB: true },
  { name: "mlp down fwd", m: 2048, n: 256, k: 1024, transA: false, transB: true },
  { name: "mlp down dW", m: 256, n: 1024, k: 2048, transA: true, transB: false },
  { name: "lm head fwd", m: 2048, n: 8192, k: 256, transA: false, transB: true },
  { name: "attn q k^T (8 heads)", m: 256, n: 256, k: 32, transA: false, transB: true, batch: 8 },
  { name: "decode gemv x W^T", m: 1, n: 768, k: 256, transA: false, transB: true },
];

const rng = new Rng(1);
function random(len: number): Float32Array {
  const x = new Float32Array(len);
  for (let i = 0; i < len; i++) x[i] = rng.uniform(-1, 1);
  return x;
}

/**
 * GFLOP/s of gemm on shape s from the fastest of its repeats (one warm-up call, then at least 3
 * repeats and 0.3 s). The fastest, not the mean: this 2-core machine is often shared with other
 * processes, and a repeat that lost its core measures them, not the kernel.
 */
function measure(gemm: CpuGemm, s: Shape, a: Float32Array, b: Float32Array, c: Float32Array): number {
  const batch = s.batch ?? 1;
  const p: MatmulParams = {
    batch,
    m: s.m,
    n: s.n,
    k: s.k,
    transA: s.transA,
    transB: s.transB,
    strideA: s.m * s.k,
    strideB: s.k * s.n,
    strideC: s.m * s.n,
  };
  gemm.run(a, b, c, p);
  let best = Infinity;
  const t0 = performance.now();
  for (let reps = 0; reps < 3 || performance.now() - t0 < 300; reps++) {
    const t = performance.now();
    gemm.run(a, b, c, p);
    best = Math.min(best, performance.now() - t);
  }
  return (2 * batch * s.m * s.n * s.k) / (best / 1000) / 1e9;
}

const info = loadOpenBlas({ path: ENV.openblasPath });
const blasInfo = info.blas
  ? `OpenBLAS core ${info.blas.corename} (OPENBLAS_CORETYPE=${info.blas.coretype.value ?? "unset"}, ${info.blas.coretype.source})`
  : `OpenBLAS not loaded: ${info.why}`;
console.log(`# GEMM f32, ${blasInfo}; TypeScript on 1 and ${threads} thread(s)\n`);
const cols = ["shape", "m x n x k", "MFLOP", "openblas GFLOP/s", "ts 1T GFLOP/s", `ts ${threads}T GFLOP/s`];
console.log(`| ${cols.join(" | ")} |`);
console.log(`|${cols.map(() => "---").join("|")}|`);
for (const s of shapes) {
  const batch = s.batch ?? 1;
  const a = random(batch * s.m * s.k);
  const b = random(batch * s.k * s.n);
  const c = new Float32Array(batch * s.m * s.n);
  const g = (gemm: CpuGemm) => measure(gemm, s, a, b, c).toFixed(1);
  const dims = `${batch > 1 ? `${batch} x ` : ""}${s.m} x ${s.n} x ${s.k}${s.transA ? " tA" : ""}${s.transB ? " tB" : ""}`;
  const mflop = ((2 * batch * s.m * s.n * s.k) / 1e6).toFixed(1);
  console.log(
    `| ${s.name} | ${dims} | ${mflop} | ${blas.path === "openblas" ? g(blas) : "-"} | ${g(ts1)} | ${threads > 1 ? g(tsN) : "-"} |`,
  );
}
