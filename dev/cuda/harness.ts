/**
 * Shared plumbing of the dev/cuda kernel scratchpads (llm.c's dev/cuda, STYLE.md habit 8): compile
 * a dev .cu file with NVRTC (the product's options and headers, cached like the product's kernels),
 * load it on a CudaBackend's device and launch its kernels on the backend's stream (so the
 * backend's graph capture records them), time a body as a replayed graph with CUDA events, the
 * float64 references the versions are validated against, and a compile-only check that needs no
 * GPU (NVRTC, else nvcc). Not part of npr: nothing under src/ imports dev/, and npm test does not
 * run it (tsc type-checks it).
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { compileCheck, compileNvrtc, compileUnit } from "../../src/tensor/backend/cuda/compile.ts";
import type { CompileUnit, KernelFile } from "../../src/tensor/backend/cuda/compile.ts";
import type { CudaBackend } from "../../src/tensor/backend/cuda/index.ts";
import type { KernelArg } from "../../src/tensor/backend/cuda/ffi/driver.ts";
import { Nvrtc } from "../../src/tensor/backend/cuda/ffi/nvrtc.ts";
import type { DeviceBuffer } from "../../src/tensor/backend/types.ts";

const DEV_DIR = path.dirname(fileURLToPath(import.meta.url));

/** A dev .cu file as a compile unit: its source, the product's headers (common.cuh). */
export function devUnit(file: string, dtype: "f32" | "f64"): CompileUnit {
  const headers = compileUnit("decode.cu", dtype).headers;
  // The unit's file name only names the cache entry and the compiler's messages.
  return { file: file as KernelFile, dtype, source: readFileSync(path.join(DEV_DIR, file), "utf8"), headers };
}

/** Compiles each file for sm_90 in both dtypes without a GPU; prints one line per unit; true when all compile. */
export function compileOnly(files: readonly string[]): boolean {
  const nv = Nvrtc.load();
  const report = compileCheck(
    nv.nvrtc,
    nv.why,
    ["sm_90"],
    files.flatMap((f) => [devUnit(f, "f32"), devUnit(f, "f64")]),
  );
  if (!report.compiler) {
    console.log(`no compiler: ${report.whyNotNvrtc ?? "neither libnvrtc nor nvcc"}`);
    return false;
  }
  console.log(`compiler: ${report.compiler}`);
  for (const r of report.results)
    console.log(`${r.ok ? "ok  " : "FAIL"} ${r.unit} ${r.arch} ${r.ms.toFixed(0)} ms${r.log ? `\n${r.log}` : ""}`);
  return report.results.every((r) => r.ok);
}

/** One dev .cu file loaded on a backend's device (one dtype). */
export class DevModule {
  private readonly be: CudaBackend;
  private readonly dtype: "f32" | "f64";
  private readonly mod: number;
  private readonly fns = new Map<string, number>();
  private readonly smem = new Map<number, number>();

  constructor(be: CudaBackend, file: string, dtype: "f32" | "f64" = "f32") {
    const nv = Nvrtc.load();
    if (!nv.nvrtc) throw new Error(`dev/cuda: ${nv.why}`);
    this.be = be;
    this.dtype = dtype;
    const r = compileNvrtc(nv.nvrtc, devUnit(file, dtype), be.arch, be.device.driverVersion, true);
    this.mod = be.driver.moduleLoad(r.cubin);
  }

  /**
   * Queues kernel `name` (KERNEL(name) in the file: `name_<dtype>`) on the backend's stream, with
   * programmatic dependent launch when `pdl` and the backend's pdl are on.
   */
  launch(name: string, grid: number | [number, number, number], block: number, args: KernelArg[], smem = 0, pdl = false): void {
    const g: [number, number, number] = typeof grid === "number" ? [grid, 1, 1] : grid;
    if (g[0] === 0 || g[1] === 0 || g[2] === 0) return;
    const key = `${name}_${this.dtype}`;
    let f = this.fns.get(key);
    if (f === undefined) {
      f = this.be.driver.moduleFunction(this.mod, key);
      this.fns.set(key, f);
    }
    if (smem > 48 * 1024 && (this.smem.get(f) ?? 0) < smem) {
      this.be.driver.setMaxDynamicShared(f, smem);
      this.smem.set(f, smem);
    }
    this.be.driver.launch(f, g, [block, 1, 1], smem, this.be.streamHandle, args, pdl && this.be.pdl);
  }
}

/** Device address of a live buffer (the backend's own check). */
export function ptr(be: CudaBackend, buf: DeviceBuffer): number {
  return be.checks.live("dev", "buffer", buf).ptr;
}

/**
 * Device ms per replay of a graph of `body` (run once eagerly first: module loads and first-use
 * allocations are not capturable), CUDA events around `reps` replays after one warm replay.
 */
export function graphMs(be: CudaBackend, body: () => void, reps = 20): number {
  body();
  const g = be.captureGraph(body);
  g.replay();
  be.synchronize();
  const d = be.driver;
  const e0 = d.eventCreate();
  const e1 = d.eventCreate();
  d.eventRecord(e0, be.streamHandle);
  for (let i = 0; i < reps; i++) g.replay();
  d.eventRecord(e1, be.streamHandle);
  d.eventSynchronize(e1);
  const ms = d.eventElapsedMs(e0, e1) / reps;
  d.eventDestroy(e0);
  d.eventDestroy(e1);
  g.destroy();
  return ms;
}

/** float64 y[b, j] = sum_k x[b, k] w[j, k] over the given (bf16-exact) values; also sum |terms| per output. */
export function gemvRef(x: Float32Array, w: Float32Array, rows: number, n: number, k: number): { y: Float64Array; mag: Float64Array } {
  const y = new Float64Array(rows * n);
  const mag = new Float64Array(rows * n);
  for (let b = 0; b < rows; b++) {
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
  }
  return { y, mag };
}

/** Values whose bits differ (NaN equal to NaN), for bit-identity checks between versions. */
export function bitDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) n++;
  return n + Math.abs(a.length - b.length);
}

/** Parses "1,4,8" into numbers. */
export function numberList(s: string): number[] {
  return s.split(",").filter(Boolean).map(Number);
}
