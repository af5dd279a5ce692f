/**
 * OpenBLAS through koffi: `cblas_sgemm` / `cblas_dgemm` (plus `openblas_set_num_threads` and
 * `openblas_get_corename` where the library has them), loaded once per library path. A library
 * that does not load is a value (`{ blas: null, why }`), never an exception: the CPU backend then
 * runs the TypeScript GEMM.
 *
 * This file knows C calling conventions and leading dimensions only: no batching, no size
 * validation (gemm.ts does both), no Tensor.
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import type * as Koffi from "koffi";
import { ENV } from "../../../util/index.ts";

type CFunction = ReturnType<Koffi.LibraryHandle["func"]>;

/** Row-major CBLAS GEMM on raw leading dimensions; a, b, c start at their element 0. */
export type CblasGemm<T extends Float32Array | Float64Array> = (
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  a: T,
  lda: number,
  b: T,
  ldb: number,
  beta: number,
  c: T,
  ldc: number,
) => void;

export interface OpenBlas {
  /** The path or soname that was loaded. */
  readonly library: string;
  /** What `openblas_get_corename()` says (e.g. "SkylakeX"), or null where the symbol is missing. */
  readonly corename: string | null;
  /** OPENBLAS_CORETYPE as the library saw it at load time, and who chose it. */
  readonly coretype: { value: string | null; source: "user" | "cpuinfo" | "unset" };
  readonly sgemm: CblasGemm<Float32Array>;
  readonly dgemm: CblasGemm<Float64Array>;
  /** Sets OpenBLAS's own thread count (process-wide); a no-op where the symbol is missing. */
  setThreads(n: number): void;
  /** OpenBLAS's current thread count, or null where the symbol is missing. */
  getThreads(): number | null;
}

export type OpenBlasLoad = { blas: OpenBlas; why: null } | { blas: null; why: string };

// CBLAS enum values (cblas.h).
const CBLAS_ROW_MAJOR = 101;
const CBLAS_NO_TRANS = 111;
const CBLAS_TRANS = 112;

const DEFAULT_LIBRARY = "libopenblas.so.0";

// NOTE: loaded once per path for the process. OPENBLAS_CORETYPE is read by the library when the
// dynamic loader first maps it, so a second load of the same path could not change it anyway.
const loaded = new Map<string, OpenBlasLoad>();

/**
 * Loads OpenBLAS from `path` (default: `libopenblas.so.0` on the loader's search path) and binds
 * the GEMMs. `threads`, when given, is passed to `openblas_set_num_threads` (process-wide).
 */
export function loadOpenBlas(opts: { path?: string | null; threads?: number | null } = {}): OpenBlasLoad {
  const library = opts.path || DEFAULT_LIBRARY;
  let result = loaded.get(library);
  if (result === undefined) {
    result = bind(library);
    loaded.set(library, result);
    if (ENV.debug >= 1) {
      if (result.blas) {
        const ct = result.blas.coretype;
        console.error(
          `[npr] openblas: loaded ${library}, core ${result.blas.corename ?? "(unknown)"}` +
            ` (OPENBLAS_CORETYPE=${ct.value ?? "unset"}, ${ct.source === "cpuinfo" ? "set from /proc/cpuinfo" : ct.source === "user" ? "set by the user" : "library's own detection"})`,
        );
      } else {
        console.error(`[npr] openblas: not used: ${result.why}`);
      }
    }
  }
  if (result.blas && opts.threads != null) result.blas.setThreads(opts.threads);
  return result;
}

/**
 * The OPENBLAS_CORETYPE to force for this CPU, from the `flags` line of /proc/cpuinfo, or null to
 * leave OpenBLAS's own detection alone. OpenBLAS (0.3.21 here) can misdetect CPUs it does not know
 * under a hypervisor and fall back to a generic "Prescott" kernel that is about 10x slower;
 * naming the instruction-set family avoids that. AVX-512 machines get SKYLAKEX, AVX2 ones HASWELL.
 */
export function coretypeFromCpuinfo(cpuinfo: string): string | null {
  const line = cpuinfo.split("\n").find((l) => l.startsWith("flags"));
  if (!line) return null;
  const flags = new Set(
    line
      .slice(line.indexOf(":") + 1)
      .trim()
      .split(/\s+/),
  );
  if (flags.has("avx512f")) return "SKYLAKEX";
  if (flags.has("avx2")) return "HASWELL";
  return null;
}

/**
 * Makes sure OPENBLAS_CORETYPE is set before the library is mapped. This is the one place npr
 * touches `process.env` outside util/env.ts, on purpose: the variable is OpenBLAS's, read by C
 * `getenv()` in the library's constructor. Node's `process.env` writes through to the C environ
 * (checked: after `process.env.OPENBLAS_CORETYPE = "PRESCOTT"`, `koffi.load` gives a library whose
 * `openblas_get_corename()` is "Prescott", and libc `getenv` sees the value). It only works if
 * nothing in the process has mapped libopenblas before this call.
 */
function ensureCoretype(): OpenBlas["coretype"] {
  const user = process.env["OPENBLAS_CORETYPE"];
  if (user) return { value: user, source: "user" };
  let cpuinfo = "";
  try {
    cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  } catch {
    return { value: null, source: "unset" }; // not Linux: let OpenBLAS decide
  }
  const value = coretypeFromCpuinfo(cpuinfo);
  if (value === null) return { value: null, source: "unset" };
  process.env["OPENBLAS_CORETYPE"] = value;
  return { value, source: "cpuinfo" };
}

function bind(library: string): OpenBlasLoad {
  // koffi is required lazily so that a missing native koffi package only disables this path.
  let koffi: typeof Koffi;
  try {
    koffi = createRequire(import.meta.url)("koffi") as typeof Koffi;
  } catch (e) {
    return { blas: null, why: `koffi could not be loaded: ${errorText(e)}` };
  }
  const coretype = ensureCoretype();
  let lib: Koffi.LibraryHandle;
  try {
    lib = koffi.load(library);
  } catch (e) {
    return {
      blas: null,
      why: `${library} did not load: ${errorText(e)} (install libopenblas0, or set NPR_OPENBLAS_PATH)`,
    };
  }
  // The pointers are declared `float *` / `double *` but koffi does not check a typed array's
  // element type against them (a Float64Array passed as `float *` is silently reinterpreted), so
  // the wrappers below take typed parameters and gemm.ts checks dtypes before calling. A typed
  // array is passed as a pointer to its own first element, byteOffset included, without a copy
  // (checked with libc memchr on a subarray), so callers pass `x.subarray(offset)` for offsets.
  const sig = (t: string) => ["int", "int", "int", "int", "int", "int", t, `${t} *`, "int", `${t} *`, "int", t, `${t} *`, "int"];
  let sgemmC: CFunction;
  let dgemmC: CFunction;
  try {
    sgemmC = lib.func("cblas_sgemm", "void", sig("float"));
    dgemmC = lib.func("cblas_dgemm", "void", sig("double"));
  } catch (e) {
    return { blas: null, why: `${library} has no cblas_sgemm/cblas_dgemm: ${errorText(e)}` };
  }
  const optional = (name: string, ret: string, args: string[]): CFunction | null => {
    try {
      return lib.func(name, ret, args);
    } catch {
      return null; // a reference BLAS or another vendor's: the GEMMs still work
    }
  };
  const setThreadsC = optional("openblas_set_num_threads", "void", ["int"]);
  const getThreadsC = optional("openblas_get_num_threads", "int", []);
  const corenameC = optional("openblas_get_corename", "const char *", []);
  const corename = corenameC ? (corenameC() as string | null) : null;

  const wrap =
    <T extends Float32Array | Float64Array>(f: CFunction): CblasGemm<T> =>
    (transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) =>
      f(
        CBLAS_ROW_MAJOR,
        transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
        transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
        m,
        n,
        k,
        alpha,
        a,
        lda,
        b,
        ldb,
        beta,
        c,
        ldc,
      );

  return {
    blas: {
      library,
      corename,
      coretype,
      sgemm: wrap<Float32Array>(sgemmC),
      dgemm: wrap<Float64Array>(dgemmC),
      setThreads: (n: number) => {
        if (setThreadsC) setThreadsC(n);
      },
      getThreads: () => (getThreadsC ? (getThreadsC() as number) : null),
    },
    why: null,
  };
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
