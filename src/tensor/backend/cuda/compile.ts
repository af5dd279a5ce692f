/**
 * Turning the repository's kernels/*.cu into cubins: with NVRTC (in-process, the normal path on a
 * GPU host) or with `nvcc` (the compile-only check on machines without libnvrtc, such as CI), and
 * a disk cache keyed by source hash, options, compiler version and driver version so a warm start
 * compiles nothing. Each .cu file is compiled once per float dtype (-DNPR_T, see common.cuh).
 *
 * Knows file names, compiler options and the cache layout; nothing about launching kernels.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Nvrtc } from "./ffi/nvrtc.ts";
import { CUDA_ENV, errorText } from "./ffi/libs.ts";

/** The kernel sources, in kernels/. Every one is compiled for both float dtypes. */
export const KERNEL_FILES = [
  "elementwise.cu",
  "nn.cu",
  "attention.cu",
  "convert.cu",
  "flash-attention.cu",
  "decode.cu",
  "decode-attention.cu",
  "sample.cu",
] as const;
export type KernelFile = (typeof KERNEL_FILES)[number];
/** Headers the sources include by name (passed to NVRTC as in-memory headers, to nvcc by -I). */
const HEADER_FILES = ["common.cuh", "sample-slow.cuh"] as const;

export type KernelDType = "f32" | "f64";
const C_TYPE: Record<KernelDType, string> = { f32: "float", f64: "double" };

export const KERNEL_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), "kernels");

export interface CompileUnit {
  file: KernelFile;
  dtype: KernelDType;
  source: string;
  headers: Record<string, string>;
}

/** Reads the sources once per process (they are part of the installed program, not user input). */
let sourcesCache: { sources: Map<KernelFile, string>; headers: Record<string, string> } | undefined;

function sources(): { sources: Map<KernelFile, string>; headers: Record<string, string> } {
  if (!sourcesCache) {
    const map = new Map<KernelFile, string>();
    for (const f of KERNEL_FILES) map.set(f, readFileSync(path.join(KERNEL_DIR, f), "utf8"));
    const headers: Record<string, string> = {};
    for (const h of HEADER_FILES) headers[h] = readFileSync(path.join(KERNEL_DIR, h), "utf8");
    sourcesCache = { sources: map, headers };
  }
  return sourcesCache;
}

export function compileUnit(file: KernelFile, dtype: KernelDType): CompileUnit {
  const s = sources();
  return { file, dtype, source: s.sources.get(file)!, headers: s.headers };
}

export function allUnits(): CompileUnit[] {
  return KERNEL_FILES.flatMap((f) => (["f32", "f64"] as const).map((d) => compileUnit(f, d)));
}

/**
 * Options shared by NVRTC and nvcc. `arch` is e.g. "sm_90"; no fast-math: the conformance suite
 * holds f32 kernels to a few ulps of a float64 reference.
 */
function defines(dtype: KernelDType): string[] {
  return [`-DNPR_T=${C_TYPE[dtype]}`, `-DNPR_SFX=${dtype}`];
}

export function nvrtcOptions(arch: string, dtype: KernelDType): string[] {
  return [`--gpu-architecture=${arch}`, "-std=c++17", "-lineinfo", ...defines(dtype)];
}

/** The cache file of one unit: any change of source, options, compiler or driver gives a new name. */
function cachePath(u: CompileUnit, options: string[], compilerId: string, driverVersion: number): string {
  const h = createHash("sha256");
  h.update(u.source);
  for (const [name, text] of Object.entries(u.headers)) h.update(`\0${name}\0${text}`);
  h.update(`\0${options.join(" ")}\0${compilerId}\0${driverVersion}`);
  const arch = options[0].split("=")[1];
  return path.join(CUDA_ENV.cacheDir, "nvrtc", arch, `${u.file.replace(".cu", "")}.${u.dtype}.${h.digest("hex").slice(0, 20)}.cubin`);
}

/** What happened to one unit: for counters and the compile check's report. */
export interface CompileResult {
  cubin: Uint8Array;
  cached: boolean;
  ms: number;
}

/**
 * Compiles a unit with NVRTC for `arch`, reading and writing the disk cache. A cache that cannot
 * be written (read-only home) is skipped silently: it only costs a recompile next time.
 */
export function compileNvrtc(nvrtc: Nvrtc, u: CompileUnit, arch: string, driverVersion: number, useCache = true): CompileResult {
  const t0 = performance.now();
  const options = nvrtcOptions(arch, u.dtype);
  const file = cachePath(u, options, `nvrtc-${nvrtc.version.join(".")}`, driverVersion);
  if (useCache && existsSync(file)) {
    return { cubin: new Uint8Array(readFileSync(file)), cached: true, ms: performance.now() - t0 };
  }
  const cubin = nvrtc.compile(`${u.file} (${u.dtype})`, u.source, u.headers, options);
  if (useCache) {
    try {
      mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, cubin);
      renameSync(tmp, file); // atomic: a concurrent reader never sees half a cubin
    } catch {
      // read-only cache dir: run uncached
    }
  }
  return { cubin, cached: false, ms: performance.now() - t0 };
}

/** The nvcc on PATH (or CUDA_HOME/bin), or null. */
export function findNvcc(): string | null {
  const candidates = [
    ...(CUDA_ENV.cudaHome ? [path.join(CUDA_ENV.cudaHome, "bin", "nvcc")] : []),
    ...CUDA_ENV.searchPath.map((d) => path.join(d, "nvcc")),
    "/usr/local/cuda/bin/nvcc",
  ];
  return candidates.find((c) => existsSync(c)) ?? null;
}

export function nvccVersion(nvcc: string): string {
  try {
    const out = execFileSync(nvcc, ["--version"], { encoding: "utf8" });
    return out.match(/release [\d.]+, V[\d.]+/)?.[0] ?? out.trim().split("\n").pop()!;
  } catch (e) {
    return `unknown (${errorText(e)})`;
  }
}

/**
 * Compiles a unit with nvcc to a cubin for `arch` (into a temporary file); returns the cubin or
 * the compiler's output. Used by the compile-only check where libnvrtc is missing; the options
 * mirror nvrtcOptions so both compilers judge the same code.
 */
export function compileNvcc(nvcc: string, u: CompileUnit, arch: string): { cubin: Uint8Array; why: null } | { cubin: null; why: string } {
  // The unit's text goes through a temporary copy (headers beside it), so what is compiled is
  // exactly the unit given, as with NVRTC; messages still name the original file.
  const dir = mkdtempSync(path.join(tmpdir(), "npr-nvcc-"));
  for (const [name, text] of Object.entries(u.headers)) writeFileSync(path.join(dir, name), text);
  const src = path.join(dir, u.file);
  writeFileSync(src, u.source);
  const out = path.join(dir, `${u.dtype}.${arch}.cubin`);
  const args = ["-cubin", `-arch=${arch}`, "-std=c++17", "-lineinfo", "-Werror", "all-warnings", ...defines(u.dtype), "-o", out, src];
  try {
    execFileSync(nvcc, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    return { cubin: new Uint8Array(readFileSync(out)), why: null };
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string };
    return { cubin: null, why: `${nvcc} ${args.join(" ")}\n${(err.stderr ?? "") + (err.stdout ?? "") || errorText(e)}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One unit's outcome in the compile-only check. */
export interface UnitCheck {
  unit: string;
  arch: string;
  ok: boolean;
  ms: number;
  bytes: number;
  /** The compiler's complaint when !ok. */
  log: string | null;
}

export interface CompileCheck {
  /** "nvrtc <version> (<path>)" or "nvcc <version> (<path>)", or null when neither is available. */
  compiler: string | null;
  /** Why NVRTC was not used (null when it was). */
  whyNotNvrtc: string | null;
  results: UnitCheck[];
}

/**
 * Compiles every unit for every arch without a GPU: NVRTC where libnvrtc loads (unless
 * `prefer` is "nvcc"), else nvcc; no cache, so the check really compiles. `units` defaults to all
 * kernel files in both dtypes (tests pass a broken one to see the failure reported).
 */
export function compileCheck(
  nvrtc: Nvrtc | null,
  whyNotNvrtc: string | null,
  archs: string[],
  units: CompileUnit[] = allUnits(),
): CompileCheck {
  const nvcc = nvrtc ? null : findNvcc();
  const compiler = nvrtc ? `nvrtc ${nvrtc.version.join(".")} (${nvrtc.libraryPath})` : nvcc ? `nvcc ${nvccVersion(nvcc)} (${nvcc})` : null;
  const results: UnitCheck[] = [];
  if (!compiler) return { compiler, whyNotNvrtc, results };
  for (const arch of archs) {
    for (const u of units) {
      const t0 = performance.now();
      const unit = `${u.file} (${u.dtype})`;
      if (nvrtc) {
        try {
          const r = compileNvrtc(nvrtc, u, arch, 0, false);
          results.push({ unit, arch, ok: true, ms: performance.now() - t0, bytes: r.cubin.length, log: null });
        } catch (e) {
          results.push({ unit, arch, ok: false, ms: performance.now() - t0, bytes: 0, log: errorText(e) });
        }
      } else {
        const r = compileNvcc(nvcc!, u, arch);
        results.push({ unit, arch, ok: r.cubin !== null, ms: performance.now() - t0, bytes: r.cubin?.length ?? 0, log: r.why });
      }
    }
  }
  return { compiler, whyNotNvrtc, results };
}
