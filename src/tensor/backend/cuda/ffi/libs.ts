/**
 * Finding and opening the CUDA shared libraries (libcuda, libcublas, libnvrtc) through koffi, and
 * the one `check()` every CUDA, cuBLAS and NVRTC status goes through (STYLE.md habit 16). A
 * library that does not load is a value (`{ lib: null, why }`), never an exception, so callers can
 * skip or fall back (tests skip with the reason; the compile check falls back to nvcc).
 *
 * Knows library names and search paths (the NPR_LIB* variables come from util/env.ts); nothing
 * about kernels or buffers.
 */
import { existsSync, readdirSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import type * as Koffi from "koffi";
import { ENV } from "../../../../util/index.ts";
import type { NprEnv } from "../../../../util/index.ts";

export type KoffiModule = typeof Koffi;
export type CFunction = ReturnType<Koffi.LibraryHandle["func"]>;

/** The CUDA-related part of the environment (util/env.ts reads it, once, with the rest). */
export type CudaEnv = Pick<NprEnv, "libcuda" | "libcublas" | "libnvrtc" | "cacheDir" | "cudaHome" | "searchPath">;

export const CUDA_ENV: CudaEnv = ENV;

/** A CUDA, cuBLAS or NVRTC call that returned an error status. */
export class CudaError extends Error {
  override name = "CudaError";
  /** The C function, e.g. "cuMemAlloc_v2". */
  readonly call: string;
  /** The status name, e.g. "CUDA_ERROR_OUT_OF_MEMORY". */
  readonly status: string;
  readonly hint: string | undefined;
  constructor(call: string, status: string, detail: string, hint?: string) {
    super(`${call} failed: ${status}${detail ? ` (${detail})` : ""}${hint ? `\nHINT: ${hint}` : ""}`);
    this.call = call;
    this.status = status;
    this.hint = hint;
  }
}

/** Hints for the statuses a user can do something about; keyed by status name. */
const HINTS: Record<string, string> = {
  CUDA_ERROR_NO_DEVICE: "no NVIDIA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)",
  CUDA_ERROR_INSUFFICIENT_DRIVER: "the NVIDIA driver is older than the CUDA libraries; update the driver",
  CUDA_ERROR_OUT_OF_MEMORY: "the GPU is out of memory: use a smaller model, batch or sequence, or free other GPU processes",
  CUDA_ERROR_ILLEGAL_ADDRESS: "a kernel read or wrote outside its buffers (a bug in npr; rerun under compute-sanitizer)",
  CUDA_ERROR_NO_BINARY_FOR_GPU: "the kernel binary was built for another GPU architecture; clear the nvrtc cache",
  CUDA_ERROR_UNSUPPORTED_PTX_VERSION: "NVRTC is newer than the driver; use a libnvrtc that matches the driver (NPR_LIBNVRTC)",
  CUBLAS_STATUS_NOT_INITIALIZED: "cuBLAS could not start: check that libcublas matches the driver",
  CUBLAS_STATUS_INVALID_VALUE: "a GEMM was given bad sizes or leading dimensions (a bug in npr)",
};

/**
 * Throws a CudaError unless status is 0 (success in all three libraries). `name` turns the
 * status into its name (cuGetErrorName, cublasGetStatusName, nvrtcGetErrorString); `detail` adds
 * what only the caller knows (the NVRTC compile log, the sizes of a GEMM).
 */
export function check(call: string, status: number, name: (s: number) => string, detail = ""): void {
  if (status === 0) return;
  const s = name(status);
  throw new CudaError(call, s, detail, HINTS[s]);
}

let koffiCache: { koffi: KoffiModule | null; why: string | null } | undefined;

/** koffi, required lazily so a missing native koffi disables the CUDA backend only. */
export function loadKoffi(): { koffi: KoffiModule | null; why: string | null } {
  if (!koffiCache) {
    try {
      koffiCache = { koffi: createRequire(import.meta.url)("koffi") as KoffiModule, why: null };
    } catch (e) {
      koffiCache = { koffi: null, why: `koffi could not be loaded: ${errorText(e)}` };
    }
  }
  return koffiCache;
}

export type LibLoad = { lib: Koffi.LibraryHandle; path: string; why: null } | { lib: null; path: null; why: string };

/**
 * Directories where CUDA libraries usually live: the toolkit (CUDA_HOME, /usr/local/cuda*),
 * the distribution's, and the pip wheels of PyTorch's CUDA (nvidia/cu13/lib, nvidia/<pkg>/lib
 * under any python site-packages found in /opt, /usr/lib or /usr/local/lib).
 */
export function cudaLibDirs(env: CudaEnv = CUDA_ENV): string[] {
  const dirs: string[] = [];
  const roots = [env.cudaHome, "/usr/local/cuda", ...globDirs("/usr/local", /^cuda-\d/)].filter((d): d is string => !!d);
  for (const r of roots) dirs.push(path.join(r, "lib64"), path.join(r, "targets/x86_64-linux/lib"), path.join(r, "lib"));
  dirs.push("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib");
  for (const sp of sitePackages()) {
    const nv = path.join(sp, "nvidia");
    dirs.push(path.join(nv, "cu13", "lib"));
    for (const pkg of globDirs(nv, /./)) dirs.push(path.join(pkg, "lib"));
  }
  return [...new Set(dirs)].filter((d) => existsSync(d));
}

/** site-packages folders of Python installs in the usual places (PyTorch ships CUDA libs there). */
function sitePackages(): string[] {
  const out: string[] = [];
  const libRoots = ["/usr/lib", "/usr/local/lib", "/opt/conda/lib"];
  for (const venv of globDirs("/opt", /./)) libRoots.push(path.join(venv, ".venv", "lib"), path.join(venv, "lib"));
  for (const root of libRoots) {
    for (const py of globDirs(root, /^python3/)) {
      for (const leaf of ["site-packages", "dist-packages"]) {
        const sp = path.join(py, leaf);
        if (existsSync(sp)) out.push(sp);
      }
    }
  }
  return out;
}

function globDirs(dir: string, re: RegExp): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => (e.isDirectory() || e.isSymbolicLink()) && re.test(e.name))
      .map((e) => path.join(dir, e.name))
      .sort()
      .reverse(); // newest version first (cuda-13.1 before cuda-13.0)
  } catch {
    return [];
  }
}

/**
 * Opens the first library that loads: the explicit path (an env variable; no fallback then, so a
 * wrong setting is reported rather than silently ignored), else each soname on the loader's path,
 * else each soname in each usual directory. `what` names the library in messages.
 */
export function openLibrary(what: string, explicit: string | null, sonames: string[], envVar: string): LibLoad {
  const k = loadKoffi();
  if (!k.koffi) return { lib: null, path: null, why: k.why! };
  const koffi = k.koffi;
  const tryLoad = (p: string): Koffi.LibraryHandle | string => {
    try {
      return koffi.load(p);
    } catch (e) {
      return errorText(e);
    }
  };
  if (explicit) {
    const r = tryLoad(explicit);
    return typeof r === "string"
      ? { lib: null, path: null, why: `${envVar}=${explicit} did not load: ${r}` }
      : { lib: r, path: explicit, why: null };
  }
  const tried: string[] = [];
  for (const so of sonames) {
    const r = tryLoad(so);
    if (typeof r !== "string") return { lib: r, path: so, why: null };
    tried.push(so);
  }
  for (const dir of cudaLibDirs()) {
    for (const so of sonames) {
      const p = path.join(dir, so);
      if (!existsSync(p)) continue;
      const r = tryLoad(p);
      if (typeof r !== "string") return { lib: r, path: p, why: null };
      tried.push(`${p} (${r})`);
    }
  }
  return {
    lib: null,
    path: null,
    why: `${what} not found (tried ${tried.join(", ")}); install the CUDA ${what} or set ${envVar} to its path`,
  };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A 64-bit handle or device address as a JS number (user-space addresses stay below 2^53). */
export function toNumber(v: bigint | number): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new Error(`CUDA handle ${v} does not fit a JS number`);
  return n;
}
