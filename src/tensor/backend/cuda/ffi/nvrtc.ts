/**
 * NVRTC (libnvrtc.so.13) through koffi: compile one CUDA C++ source to a cubin for one GPU
 * architecture. A failed compile is a CudaError whose detail is the full compile log, so the
 * message names the file and line the compiler complained about.
 *
 * Knows compiler calls only; which sources, which options and the on-disk cache are compile.ts's.
 */
import type * as Koffi from "koffi";
import { type CFunction, CUDA_ENV, CudaError, check, openLibrary, toNumber } from "./libs.ts";

export class Nvrtc {
  readonly libraryPath: string;
  /** [major, minor] of NVRTC itself, e.g. [13, 0]. */
  readonly version: [number, number];
  private readonly f: Record<string, CFunction>;

  static load(): { nvrtc: Nvrtc; why: null } | { nvrtc: null; why: string } {
    const l = openLibrary(
      "runtime compiler libnvrtc",
      CUDA_ENV.libnvrtc,
      ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
      "NPR_LIBNVRTC",
    );
    if (!l.lib) return { nvrtc: null, why: l.why };
    try {
      return { nvrtc: new Nvrtc(l.lib, l.path), why: null };
    } catch (e) {
      return { nvrtc: null, why: `${l.path} is not a usable libnvrtc: ${e instanceof Error ? e.message : String(e)}` };
    }
  }

  private constructor(lib: Koffi.LibraryHandle, libraryPath: string) {
    this.libraryPath = libraryPath;
    const u64 = "uint64_t";
    this.f = {
      nvrtcVersion: lib.func("nvrtcVersion", "int", ["void *", "void *"]),
      nvrtcGetErrorString: lib.func("nvrtcGetErrorString", "const char *", ["int"]),
      nvrtcCreateProgram: lib.func("nvrtcCreateProgram", "int", [
        "void *",
        "const char *",
        "const char *",
        "int",
        "const char **",
        "const char **",
      ]),
      nvrtcCompileProgram: lib.func("nvrtcCompileProgram", "int", [u64, "int", "const char **"]),
      nvrtcGetProgramLogSize: lib.func("nvrtcGetProgramLogSize", "int", [u64, "void *"]),
      nvrtcGetProgramLog: lib.func("nvrtcGetProgramLog", "int", [u64, "void *"]),
      nvrtcGetCUBINSize: lib.func("nvrtcGetCUBINSize", "int", [u64, "void *"]),
      nvrtcGetCUBIN: lib.func("nvrtcGetCUBIN", "int", [u64, "void *"]),
      nvrtcDestroyProgram: lib.func("nvrtcDestroyProgram", "int", ["void *"]),
    };
    const maj = new Int32Array(1);
    const min = new Int32Array(1);
    this.call("nvrtcVersion", maj, min);
    this.version = [maj[0], min[0]];
  }

  readonly errorName = (s: number): string => (this.f["nvrtcGetErrorString"](s) as string | null) ?? `NVRTC error ${s}`;

  private call(name: string, ...args: unknown[]): void {
    check(name, this.f[name](...args) as number, this.errorName);
  }

  /**
   * Compiles `source` (named `name` in messages) with the given headers (include name -> text)
   * and options, e.g. ["--gpu-architecture=sm_90", "-std=c++17"]. Returns the cubin bytes.
   */
  compile(name: string, source: string, headers: Record<string, string>, options: string[]): Uint8Array {
    const progOut = new BigUint64Array(1);
    const hdrNames = Object.keys(headers);
    const hdrTexts = hdrNames.map((h) => headers[h]);
    this.call("nvrtcCreateProgram", progOut, source, name, hdrNames.length, hdrTexts, hdrNames);
    const prog = toNumber(progOut[0]);
    try {
      const status = this.f["nvrtcCompileProgram"](prog, options.length, options) as number;
      if (status !== 0) {
        throw new CudaError(
          "nvrtcCompileProgram",
          this.errorName(status),
          `${name}:\n${this.log(prog)}`,
          "the kernel source does not compile for this GPU; `npr backend check --backend cuda --compile-only` shows every error",
        );
      }
      const size = new BigUint64Array(1);
      this.call("nvrtcGetCUBINSize", prog, size);
      const cubin = new Uint8Array(Number(size[0]));
      this.call("nvrtcGetCUBIN", prog, cubin);
      return cubin;
    } finally {
      this.f["nvrtcDestroyProgram"](progOut);
    }
  }

  /** The compile log (warnings and errors), trimmed. */
  private log(prog: number): string {
    const size = new BigUint64Array(1);
    this.call("nvrtcGetProgramLogSize", prog, size);
    const buf = new Uint8Array(Number(size[0]));
    this.call("nvrtcGetProgramLog", prog, buf);
    const end = buf.indexOf(0);
    return new TextDecoder().decode(buf.subarray(0, end < 0 ? buf.length : end)).trim();
  }
}
