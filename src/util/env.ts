/**
 * The process environment, read once into a typed, frozen object (STYLE.md habit 3). Nothing else
 * in npr reads `process.env` directly, so every knob is listed here with what it does (the CUDA
 * backend's library paths and caches included: cuda/ffi/libs.ts takes them from here). The one
 * exception is OPENBLAS_CORETYPE, which cpu/openblas.ts sets for the C library on purpose.
 */
import path from "node:path";

export interface NprEnv {
  /** NPR_BLAS=0 (or "off"/"false") forces the pure-TypeScript GEMM even when OpenBLAS loads. */
  readonly useBlas: boolean;
  /** NPR_OPENBLAS_PATH: explicit path of libopenblas.so; otherwise the loader's search path. */
  readonly openblasPath: string | null;
  /** NPR_THREADS: worker threads for CPU kernels that use them (default: available cores). */
  readonly threads: number | null;
  /** NPR_DEBUG: verbosity, 0 (quiet) to 3. */
  readonly debug: number;
  /** NPR_BACKEND: default backend name ("cpu", later "cuda"). */
  readonly backend: string;
  /** NPR_PDL=0 (or "off"/"false"/"no"): no programmatic dependent launch on CUDA (default on where the device has it). */
  readonly pdl: boolean;
  /** NPR_LIBCUDA / NPR_LIBCUBLAS / NPR_LIBNVRTC: explicit CUDA library paths (used alone: a wrong one is reported). */
  readonly libcuda: string | null;
  readonly libcublas: string | null;
  readonly libnvrtc: string | null;
  /** NPR_CACHE_DIR: root of npr's caches (compiled kernels under nvrtc/); default $XDG_CACHE_HOME/npr, else ~/.cache/npr. */
  readonly cacheDir: string;
  /** CUDA_HOME / CUDA_PATH: a CUDA toolkit root searched before the usual ones (libraries, nvcc). */
  readonly cudaHome: string | null;
  /** PATH, split at ":": where the kernels' compile-only check looks for nvcc. */
  readonly searchPath: readonly string[];
}

function flag(v: string | undefined, dflt: boolean): boolean {
  if (v === undefined || v === "") return dflt;
  return !["0", "off", "false", "no"].includes(v.toLowerCase());
}

function intOrNull(v: string | undefined): number | null {
  if (v === undefined || v === "") return null;
  const n = Number(v);
  return Number.isInteger(n) && n > 0 ? n : null;
}

export function readEnv(env: Record<string, string | undefined> = process.env): NprEnv {
  return Object.freeze({
    useBlas: flag(env["NPR_BLAS"], true),
    openblasPath: env["NPR_OPENBLAS_PATH"] || null,
    threads: intOrNull(env["NPR_THREADS"]),
    debug: intOrNull(env["NPR_DEBUG"]) ?? 0,
    backend: env["NPR_BACKEND"] || "cpu",
    pdl: flag(env["NPR_PDL"], true),
    libcuda: env["NPR_LIBCUDA"] || null,
    libcublas: env["NPR_LIBCUBLAS"] || null,
    libnvrtc: env["NPR_LIBNVRTC"] || null,
    cacheDir: env["NPR_CACHE_DIR"] || path.join(env["XDG_CACHE_HOME"] || path.join(env["HOME"] || "/tmp", ".cache"), "npr"),
    cudaHome: env["CUDA_HOME"] || env["CUDA_PATH"] || null,
    searchPath: Object.freeze((env["PATH"] ?? "").split(":").filter(Boolean)),
  });
}

/** The environment as it was when npr started. */
export const ENV: NprEnv = readEnv();
