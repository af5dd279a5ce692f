/**
 * `npr backend check`: can this machine run a backend? The default, `auto`, checks cuda where a
 * GPU is usable and the CPU otherwise. For cpu it prints the GEMM path (OpenBLAS or TypeScript)
 * and runs one GEMM and one causal attention against float64 references. For cuda,
 * `--compile-only` compiles every kernel (kernels/*.cu, both float dtypes, each --arch) with NVRTC
 * where libnvrtc loads, else with nvcc, and exits 1 on any error: the CI check, which needs no
 * GPU. Without --compile-only it starts the backend on the GPU, prints the device and libraries,
 * loads every kernel and runs the same GEMM and attention against the CPU backend. Also owns
 * `makeCudaBackend`, the one place the CLI turns "cuda" into a backend (a UsageError says why not).
 */
import type { Command } from "commander";
import { CpuBackend } from "../tensor/backend/cpu/index.ts";
import { CudaBackend, cudaUnavailable, allUnits, compileCheck, KERNEL_FILES, Nvrtc } from "../tensor/backend/cuda/index.ts";
import type { Backend } from "../tensor/index.ts";
import { UsageError } from "../util/index.ts";
import { parseChoice } from "./args.ts";
import { causalLayout } from "../util/index.ts";
import { Rng } from "../util/index.ts";

/** The CUDA backend, or a UsageError naming what is missing (driver, device, NVRTC, cuBLAS). */
export function makeCudaBackend(): CudaBackend {
  const why = cudaUnavailable();
  if (why) {
    throw new UsageError(`the cuda backend cannot start here: ${why}`, {
      code: "cuda_unavailable",
      param: "--backend",
      hint: "run on a machine with an NVIDIA GPU and CUDA 13 libraries, or use --backend cpu",
    });
  }
  return new CudaBackend();
}

interface CheckOptions {
  backend: string;
  compileOnly?: boolean;
  arch: string;
  nvcc?: boolean;
}

export function registerBackendCommands(program: Command): void {
  const backend = program.command("backend").description("inspect and check compute backends");
  backend
    .command("check")
    .description(
      "check that a backend works here: runs a GEMM and an attention against a reference; --compile-only compiles the CUDA kernels without a GPU",
    )
    .option("--backend <name>", "backend to check: auto (cuda where a GPU is usable, else cpu), cpu or cuda", "auto")
    .option("--compile-only", "cuda: only compile every kernel (NVRTC, else nvcc); needs no GPU")
    .option("--arch <list>", "cuda --compile-only: comma-separated GPU architectures", "sm_90")
    .option("--nvcc", "cuda --compile-only: use nvcc even when libnvrtc loads")
    .action((opts: CheckOptions) => {
      let name = parseChoice(opts.backend, "--backend", ["auto", "cpu", "cuda"] as const);
      if (name === "auto") {
        // --compile-only is a cuda check that needs no GPU, so auto means cuda there.
        const why = opts.compileOnly ? null : cudaUnavailable();
        name = why === null ? "cuda" : "cpu";
        if (why !== null) process.stdout.write(`backend auto: cpu (cuda cannot start here: ${why})\n`);
      }
      if (name === "cpu") {
        if (opts.compileOnly || opts.nvcc)
          throw new UsageError("--compile-only and --nvcc check CUDA kernels; they do not apply to --backend cpu", {
            code: "bad_flag",
            param: "--compile-only",
          });
        return checkCpu();
      }
      if (opts.compileOnly) return checkCompile(opts);
      return checkCuda();
    });
}

/** C = A B in float64: A [m, k], B [k, n] row-major. */
function gemmRef(A: ArrayLike<number>, B: ArrayLike<number>, m: number, n: number, k: number): Float64Array {
  const C = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const a = A[i * k + p]!;
      for (let j = 0; j < n; j++) C[i * n + j] += a * B[p * n + j]!;
    }
  }
  return C;
}

/**
 * Causal grouped-query attention in float64: q [T, H, D], k/v [T, Hkv, D] -> out [T, H, D];
 * token t sees keys 0..t (what causalLayout(T) describes).
 */
function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  T: number,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
): Float64Array {
  const out = new Float64Array(T * H * D);
  for (let h = 0; h < H; h++) {
    const g = Math.floor((h * Hkv) / H);
    for (let t = 0; t < T; t++) {
      const sc = new Float64Array(t + 1);
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(t * H + h) * D + d]! * k[(s * Hkv + g) * D + d]!;
        sc[s] = scale * dot;
      }
      const max = Math.max(...sc);
      let z = 0;
      for (let s = 0; s <= t; s++) z += Math.exp(sc[s]! - max);
      for (let s = 0; s <= t; s++) {
        const p = Math.exp(sc[s]! - max) / z;
        for (let d = 0; d < D; d++) out[(t * H + h) * D + d] += p * v[(s * Hkv + g) * D + d]!;
      }
    }
  }
  return out;
}

/**
 * The CPU backend against float64 references: it is the reference every other backend is
 * compared with, so its own check is against the textbook formulas (its GEMM path, OpenBLAS or
 * TypeScript, is what this machine will use).
 */
function checkCpu(): void {
  const be = new CpuBackend();
  process.stdout.write(`cpu backend: GEMM path ${be.gemmPath}${be.whyNoBlas ? ` (${be.whyNoBlas})` : ""}\n`);
  const t0 = performance.now();
  const d = smoke(be, SMOKE_REFERENCE);
  process.stdout.write(
    `smoke: GEMM 64x48x80 max |cpu - float64| ${d.gemm.toExponential(2)}, causal attention T=33 H=4 D=64 ${d.attention.toExponential(2)} (${(performance.now() - t0).toFixed(0)} ms)\n`,
  );
  if (!(d.gemm < 1e-4 && d.attention < 1e-5)) {
    process.stderr.write("npr: the cpu backend disagrees with the float64 reference\n");
    process.exitCode = 1;
    return;
  }
  process.stdout.write("ok\n");
}

function checkCompile(opts: CheckOptions): void {
  const archs = opts.arch
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean);
  for (const a of archs) {
    if (!/^sm_\d+a?$/.test(a))
      throw new UsageError(`--arch: "${a}" is not an architecture like sm_90`, { code: "bad_arch", param: "--arch" });
  }
  const n = opts.nvcc ? { nvrtc: null, why: "--nvcc given" } : Nvrtc.load();
  const report = compileCheck(n.nvrtc, n.why, archs, allUnits());
  if (!report.compiler) {
    process.stderr.write(`npr: no CUDA compiler: libnvrtc did not load (${n.why}) and nvcc is not on PATH\n`);
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`compiler: ${report.compiler}${report.whyNotNvrtc ? `\n  (not NVRTC: ${report.whyNotNvrtc})` : ""}\n`);
  let failed = 0;
  for (const r of report.results) {
    process.stdout.write(
      `${r.ok ? "ok  " : "FAIL"} ${r.arch} ${r.unit.padEnd(26)} ${r.ok ? `${(r.bytes / 1024).toFixed(0)} KiB` : ""} ${r.ms.toFixed(0)} ms\n`,
    );
    if (!r.ok) {
      failed++;
      process.stdout.write(`${r.log}\n`);
    }
  }
  process.stdout.write(
    `${report.results.length - failed}/${report.results.length} units compiled (${KERNEL_FILES.length} files x 2 dtypes x ${archs.length} arch)\n`,
  );
  if (failed > 0) process.exitCode = 1;
}

/** Max |a - b| over two arrays. */
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Stands in for a second backend in `smoke`: the float64 reference formulas. */
const SMOKE_REFERENCE = "float64" as const;

/**
 * Runs one GEMM and one causal attention on `be` and on `ref` (another backend, or the float64
 * references) and returns the max differences.
 */
function smoke(gpu: Backend, cpu: Backend | typeof SMOKE_REFERENCE): { gemm: number; attention: number } {
  const rng = new Rng(1);
  const rand = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const run = (be: Backend) => {
    const up = (x: Float32Array) => {
      const b = be.alloc("f32", x.length);
      be.write(b, x);
      return b;
    };
    return up;
  };
  const m = 64,
    n = 48,
    k = 80;
  const A = rand(m * k),
    B = rand(k * n);
  const gemm = (be: Backend) => {
    const up = run(be);
    const c = be.alloc("f32", m * n);
    be.matmul(up(A), up(B), c, { batch: 1, m, n, k, transA: false, transB: false, strideA: 0, strideB: 0, strideC: 0 });
    return be.read(c);
  };
  const T = 33,
    H = 4,
    Hkv = 2,
    D = 64;
  const lay = causalLayout(T);
  const q = rand(T * H * D),
    kk = rand(T * Hkv * D),
    v = rand(T * Hkv * D);
  const attn = (be: Backend) => {
    const up = run(be);
    const ints = (x: ArrayLike<number>) => {
      const b = be.alloc("i32", x.length);
      be.write(b, Int32Array.from(x));
      return b;
    };
    const out = be.alloc("f32", T * H * D);
    const lse = be.alloc("f32", T * H);
    const seg = { offsets: ints(lay.segOffsets), starts: ints(lay.segStarts), ends: ints(lay.segEnds) };
    be.attention(up(q), up(kk), up(v), seg, out, lse, { tokens: T, keys: T, heads: H, kvHeads: Hkv, headDim: D, scale: 1 / Math.sqrt(D) });
    return be.read(out);
  };
  if (cpu === SMOKE_REFERENCE) {
    return {
      gemm: maxDiff(gemm(gpu), gemmRef(A, B, m, n, k)),
      attention: maxDiff(attn(gpu), attentionRef(q, kk, v, T, H, Hkv, D, 1 / Math.sqrt(D))),
    };
  }
  return { gemm: maxDiff(gemm(gpu), gemm(cpu)), attention: maxDiff(attn(gpu), attn(cpu)) };
}

function checkCuda(): void {
  const be = makeCudaBackend();
  const d = be.device;
  const [free, total] = be.driver.memInfo();
  process.stdout.write(
    `device ${d.ordinal}: ${d.name}, ${be.arch}, ${d.multiprocessors} SMs, ${(total / 2 ** 30).toFixed(1)} GiB (${(free / 2 ** 30).toFixed(1)} free), driver ${d.driverVersion}\n` +
      `libraries: ${be.libraries.cuda}, ${be.libraries.cublas}, ${be.libraries.nvrtc}\n`,
  );
  const t0 = performance.now();
  const diffs = smoke(be, new CpuBackend());
  const c = be.counters();
  process.stdout.write(
    `smoke: GEMM 64x48x80 max |gpu - cpu| ${diffs.gemm.toExponential(2)}, causal attention T=33 H=4 D=64 ${diffs.attention.toExponential(2)} ` +
      `(${(performance.now() - t0).toFixed(0)} ms; ${c["cuda.compile"] ?? 0} units compiled, ${c["cuda.compile.cached"] ?? 0} from cache, ${c["cuda.launch"] ?? 0} launches, ${c["cublas.gemm"] ?? 0} cuBLAS calls)\n`,
  );
  if (!(diffs.gemm < 1e-3 && diffs.attention < 1e-4)) {
    process.stderr.write("npr: the cuda backend disagrees with the cpu backend\n");
    process.exitCode = 1;
  }
}
