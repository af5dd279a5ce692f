/**
 * The CUDA driver API (libcuda.so.1) through koffi: init, device queries, the primary context,
 * stream-ordered memory, copies, streams, events, modules, kernel launches and graph
 * capture/replay. Every status goes through check() with the call's name.
 *
 * Conventions: handles (CUcontext, CUstream, CUmodule, CUfunction, CUevent, CUgraph) and device
 * addresses (CUdeviceptr) are JS numbers (declared uint64_t: same ABI as a pointer on x86-64, and
 * user-space addresses stay below 2^53). Output parameters are declared `void *` and given a
 * typed array, which koffi passes as a pointer to its own memory without a copy.
 * Launches go through cuLaunchKernel, or cuLaunchKernelEx when a launch allows programmatic
 * dependent launch (PDL, sm_90+): both read their arguments from one fixed native area.
 * Knows nothing about kernels' meanings, dtypes or the Backend contract.
 */
import type * as Koffi from "koffi";
import { type CFunction, CUDA_ENV, check, loadKoffi, openLibrary, toNumber } from "./libs.ts";

/** cuDeviceGetAttribute ids used here (cuda.h). */
const ATTR = {
  maxThreadsPerBlock: 1,
  multiprocessorCount: 16,
  computeCapabilityMajor: 75,
  computeCapabilityMinor: 76,
} as const;

/** CU_STREAM_CAPTURE_MODE_THREAD_LOCAL: other threads' CUDA calls do not break our capture. */
const CAPTURE_MODE_THREAD_LOCAL = 1;

/** CU_MEMPOOL_ATTR_RELEASE_THRESHOLD (cuda.h CUmemPool_attribute): a cuuint64_t of bytes. */
const MEMPOOL_ATTR_RELEASE_THRESHOLD = 4;

export interface DeviceInfo {
  ordinal: number;
  name: string;
  /** Compute capability, e.g. 9.0 for Hopper. */
  major: number;
  minor: number;
  multiprocessors: number;
  totalBytes: number;
  /** cuDriverGetVersion, e.g. 13000 for CUDA 13.0. */
  driverVersion: number;
}

/**
 * cuLaunchKernelEx's config (cuda.h CUlaunchConfig, x86-64 layout): grid x/y/z, block x/y/z and
 * sharedMemBytes as u32 at 0..24, pad, hStream u64 at 32, attrs pointer at 40, numAttrs u32 at 48
 * (56 bytes). One CUlaunchAttribute follows at ATTR_OFF: id u32, 4 bytes of pad, then the 64-byte
 * value union (72 bytes).
 */
const LAUNCH_CONFIG = { grid: 0, block: 12, shared: 24, stream: 32, attrs: 40, numAttrs: 48 } as const;
const ATTR_OFF = 64;
const CONFIG_BYTES = ATTR_OFF + 72;
/**
 * CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION (cuda.h CUlaunchAttributeID): value.int
 * programmaticStreamSerializationAllowed = 1 lets the kernel start while the previous kernel of
 * the stream still runs, once that one's blocks have all executed griddepcontrol.launch_dependents
 * (or exited); the kernel orders itself with griddepcontrol.wait. Stream capture keeps it as a
 * programmatic edge of the graph.
 */
const ATTR_PROGRAMMATIC_STREAM_SERIALIZATION = 6;

/** Bytes of the argument area of one launch; kernels here take far fewer (largest ~400). */
const ARG_BYTES = 4096;
const MAX_ARGS = 64;

/** One kernel argument: its C type decides how many bytes the kernel reads. */
export type KernelArg =
  | { ptr: number }
  | { i32: number }
  | { u32: number }
  | { i64: number }
  | { f32: number }
  | { f64: number }
  /** A by-value struct of int64 fields (shapes and strides), 8-byte aligned. */
  | { i64s: readonly number[] };

export class CudaDriver {
  readonly libraryPath: string;
  private readonly koffi: typeof Koffi;
  private readonly f: Record<string, CFunction>;
  /** Stable native memory for launch arguments: values, then the pointer array into them. */
  private readonly argArea: DataView;
  private readonly argAddr: number;
  private readonly ptrArray: BigUint64Array;
  private readonly ptrAddr: number;
  private readonly out64 = new BigUint64Array(1);
  private readonly out32 = new Int32Array(1);
  /** cuLaunchKernelEx's config and attribute (see LAUNCH_CONFIG), written per PDL launch. */
  private readonly config: DataView;
  private readonly configAddr: number;
  /** Whether the driver exports cuLaunchKernelEx (CUDA 11.8+): PDL launches need it. */
  readonly hasLaunchEx: boolean;

  /** Loads libcuda and binds every function this file uses; a missing library is `{ why }`. */
  static load(): { driver: CudaDriver; why: null } | { driver: null; why: string } {
    const l = openLibrary("driver library libcuda", CUDA_ENV.libcuda, ["libcuda.so.1", "libcuda.so"], "NPR_LIBCUDA");
    if (!l.lib) return { driver: null, why: l.why };
    try {
      return { driver: new CudaDriver(l.lib, l.path), why: null };
    } catch (e) {
      return { driver: null, why: `${l.path} is not a usable libcuda: ${e instanceof Error ? e.message : String(e)}` };
    }
  }

  private constructor(lib: Koffi.LibraryHandle, libraryPath: string) {
    this.libraryPath = libraryPath;
    this.koffi = loadKoffi().koffi!;
    const u64 = "uint64_t";
    const sigs: Record<string, [string, string[]]> = {
      cuInit: ["int", ["uint32_t"]],
      cuDriverGetVersion: ["int", ["void *"]],
      cuDeviceGetCount: ["int", ["void *"]],
      cuDeviceGet: ["int", ["void *", "int"]],
      cuDeviceGetName: ["int", ["void *", "int", "int"]],
      cuDeviceGetAttribute: ["int", ["void *", "int", "int"]],
      cuDeviceTotalMem_v2: ["int", ["void *", "int"]],
      cuDevicePrimaryCtxRetain: ["int", ["void *", "int"]],
      cuCtxSetCurrent: ["int", [u64]],
      cuCtxSynchronize: ["int", []],
      cuMemAlloc_v2: ["int", ["void *", "size_t"]],
      cuMemFree_v2: ["int", [u64]],
      cuMemAllocAsync: ["int", ["void *", "size_t", u64]],
      cuMemFreeAsync: ["int", [u64, u64]],
      cuMemGetInfo_v2: ["int", ["void *", "void *"]],
      cuDeviceGetDefaultMemPool: ["int", ["void *", "int"]],
      cuMemPoolSetAttribute: ["int", [u64, "int", "void *"]],
      cuMemcpyHtoD_v2: ["int", [u64, "void *", "size_t"]],
      cuMemcpyDtoH_v2: ["int", ["void *", u64, "size_t"]],
      cuMemcpyDtoDAsync_v2: ["int", [u64, u64, "size_t", u64]],
      cuMemsetD32Async: ["int", [u64, "uint32_t", "size_t", u64]],
      cuMemsetD8Async: ["int", [u64, "uint8_t", "size_t", u64]],
      cuMemsetD16Async: ["int", [u64, "uint16_t", "size_t", u64]],
      cuStreamCreate: ["int", ["void *", "uint32_t"]],
      cuStreamSynchronize: ["int", [u64]],
      cuStreamDestroy_v2: ["int", [u64]],
      cuEventCreate: ["int", ["void *", "uint32_t"]],
      cuEventRecord: ["int", [u64, u64]],
      cuEventSynchronize: ["int", [u64]],
      cuEventDestroy_v2: ["int", [u64]],
      cuModuleLoadData: ["int", ["void *", "void *"]],
      cuModuleGetFunction: ["int", ["void *", u64, "const char *"]],
      cuModuleUnload: ["int", [u64]],
      cuFuncSetAttribute: ["int", [u64, "int", "int"]],
      cuLaunchKernel: ["int", [u64, "uint32_t", "uint32_t", "uint32_t", "uint32_t", "uint32_t", "uint32_t", "uint32_t", u64, u64, u64]],
      cuStreamBeginCapture_v2: ["int", [u64, "int"]],
      cuStreamEndCapture: ["int", [u64, "void *"]],
      cuGraphInstantiateWithFlags: ["int", ["void *", u64, "uint64_t"]],
      cuGraphLaunch: ["int", [u64, u64]],
      cuGraphExecDestroy: ["int", [u64]],
      cuGraphDestroy: ["int", [u64]],
    };
    this.f = {};
    for (const [name, [ret, args]] of Object.entries(sigs)) this.f[name] = lib.func(name, ret, args);
    // cuEventElapsedTime_v2 is CUDA 12.8+; older drivers have only the plain name.
    try {
      this.f["cuEventElapsedTime"] = lib.func("cuEventElapsedTime_v2", "int", ["void *", u64, u64]);
    } catch {
      this.f["cuEventElapsedTime"] = lib.func("cuEventElapsedTime", "int", ["void *", u64, u64]);
    }
    this.f["cuGetErrorName"] = lib.func("int cuGetErrorName(int error, _Out_ const char **pStr)");
    // (config*, CUfunction, kernelParams**, extra**): pointers passed as addresses.
    try {
      this.f["cuLaunchKernelEx"] = lib.func("cuLaunchKernelEx", "int", [u64, u64, u64, u64]);
      this.hasLaunchEx = true;
    } catch {
      this.hasLaunchEx = false;
    }

    const area = this.koffi.alloc("uint8_t", ARG_BYTES);
    this.argArea = new DataView(this.koffi.view(area, ARG_BYTES));
    this.argAddr = toNumber(this.koffi.address(area));
    const ptrs = this.koffi.alloc("uint64_t", MAX_ARGS);
    this.ptrArray = new BigUint64Array(this.koffi.view(ptrs, MAX_ARGS * 8));
    this.ptrAddr = toNumber(this.koffi.address(ptrs));
    const cfg = this.koffi.alloc("uint8_t", CONFIG_BYTES);
    this.config = new DataView(this.koffi.view(cfg, CONFIG_BYTES));
    this.configAddr = toNumber(this.koffi.address(cfg));
    // The attribute never changes: PROGRAMMATIC_STREAM_SERIALIZATION, allowed; value's other bytes 0.
    for (let i = 0; i < CONFIG_BYTES; i++) this.config.setUint8(i, 0);
    this.config.setUint32(ATTR_OFF, ATTR_PROGRAMMATIC_STREAM_SERIALIZATION, true);
    this.config.setInt32(ATTR_OFF + 8, 1, true);
    this.config.setBigUint64(LAUNCH_CONFIG.attrs, BigInt(this.configAddr + ATTR_OFF), true);
    this.config.setUint32(LAUNCH_CONFIG.numAttrs, 1, true);
    // Keep the allocations reachable for the life of the driver (koffi frees them on GC).
    this.keep = [area, ptrs, cfg];
  }

  private readonly keep: unknown[];

  /** The status's name, e.g. "CUDA_ERROR_OUT_OF_MEMORY" (or the number when the driver has none). */
  readonly errorName = (status: number): string => {
    const out: [string | null] = [null];
    const r = this.f["cuGetErrorName"](status, out) as number;
    return r === 0 && out[0] ? out[0] : `CUDA error ${status}`;
  };

  /** Calls a bound function and checks its status. */
  private call(name: string, ...args: unknown[]): void {
    check(name, this.f[name](...args) as number, this.errorName);
  }

  private outHandle(name: string, ...args: unknown[]): number {
    this.out64[0] = 0n;
    this.call(name, this.out64, ...args);
    return toNumber(this.out64[0]);
  }

  private outInt(name: string, ...args: unknown[]): number {
    this.out32[0] = 0;
    this.call(name, this.out32, ...args);
    return this.out32[0];
  }

  // ---------------------------------------------------------------- device and context

  init(): void {
    this.call("cuInit", 0);
  }

  deviceCount(): number {
    return this.outInt("cuDeviceGetCount");
  }

  /** Queries one device (cuInit must have run). */
  device(ordinal: number): DeviceInfo {
    const dev = this.outInt("cuDeviceGet", ordinal);
    const nameBuf = new Uint8Array(256);
    this.call("cuDeviceGetName", nameBuf, nameBuf.length, dev);
    const end = nameBuf.indexOf(0);
    const attr = (a: number) => this.outInt("cuDeviceGetAttribute", a, dev);
    this.out64[0] = 0n;
    this.call("cuDeviceTotalMem_v2", this.out64, dev);
    return {
      ordinal: dev,
      name: new TextDecoder().decode(nameBuf.subarray(0, end < 0 ? nameBuf.length : end)),
      major: attr(ATTR.computeCapabilityMajor),
      minor: attr(ATTR.computeCapabilityMinor),
      multiprocessors: attr(ATTR.multiprocessorCount),
      totalBytes: Number(this.out64[0]),
      driverVersion: this.outInt("cuDriverGetVersion"),
    };
  }

  /** Retains the device's primary context (the one the runtime API and cuBLAS share) and makes it current. */
  primaryContext(ordinal: number): number {
    const ctx = this.outHandle("cuDevicePrimaryCtxRetain", ordinal);
    this.call("cuCtxSetCurrent", ctx);
    return ctx;
  }

  synchronize(): void {
    this.call("cuCtxSynchronize");
  }

  /** [free, total] bytes of device memory. */
  memInfo(): [number, number] {
    const free = new BigUint64Array(1);
    const total = new BigUint64Array(1);
    this.call("cuMemGetInfo_v2", free, total);
    return [Number(free[0]), Number(total[0])];
  }

  // ---------------------------------------------------------------- memory

  /** Stream-ordered allocation from the device's default pool: no device-wide sync, unlike cuMemAlloc. */
  allocAsync(bytes: number, stream: number): number {
    return this.outHandle("cuMemAllocAsync", bytes, stream);
  }

  /**
   * Sets how many freed bytes the device's default pool (the one allocAsync draws from) may keep
   * at a synchronization instead of returning them to the driver. CUDA's default is 0: every
   * synchronize unmaps the freed memory, and the next allocations map it again (measured ~25-40
   * us per cuMemAllocAsync after a synchronize on an H200, against a few us from a warm pool).
   * `dev` is the CUdevice (DeviceInfo.ordinal).
   */
  setPoolReleaseThreshold(dev: number, bytes: bigint): void {
    const pool = this.outHandle("cuDeviceGetDefaultMemPool", dev);
    this.call("cuMemPoolSetAttribute", pool, MEMPOOL_ATTR_RELEASE_THRESHOLD, new BigUint64Array([bytes]));
  }

  freeAsync(ptr: number, stream: number): void {
    this.call("cuMemFreeAsync", ptr, stream);
  }

  /**
   * Host to device, synchronous for the host: the legacy default stream the copy runs on waits
   * for our blocking stream's earlier work, and that stream's later work waits for the copy.
   */
  htod(dst: number, src: ArrayBufferView, bytes: number): void {
    this.call("cuMemcpyHtoD_v2", dst, src, bytes);
  }

  /** Device to host; returns once the bytes are in dst (after all earlier work of our stream). */
  dtoh(dst: ArrayBufferView, src: number, bytes: number): void {
    this.call("cuMemcpyDtoH_v2", dst, src, bytes);
  }

  dtodAsync(dst: number, src: number, bytes: number, stream: number): void {
    this.call("cuMemcpyDtoDAsync_v2", dst, src, bytes, stream);
  }

  memsetD32Async(dst: number, value: number, count: number, stream: number): void {
    this.call("cuMemsetD32Async", dst, value >>> 0, count, stream);
  }

  memsetD8Async(dst: number, value: number, count: number, stream: number): void {
    this.call("cuMemsetD8Async", dst, value, count, stream);
  }

  /** count 16-bit words (bf16 fills). */
  memsetD16Async(dst: number, value: number, count: number, stream: number): void {
    this.call("cuMemsetD16Async", dst, value & 0xffff, count, stream);
  }

  // ---------------------------------------------------------------- streams and events

  /** flags 0 = CU_STREAM_DEFAULT: a blocking stream, ordered against the legacy default stream. */
  streamCreate(flags = 0): number {
    return this.outHandle("cuStreamCreate", flags);
  }

  streamSynchronize(stream: number): void {
    this.call("cuStreamSynchronize", stream);
  }

  streamDestroy(stream: number): void {
    this.call("cuStreamDestroy_v2", stream);
  }

  eventCreate(flags = 0): number {
    return this.outHandle("cuEventCreate", flags);
  }

  eventRecord(event: number, stream: number): void {
    this.call("cuEventRecord", event, stream);
  }

  eventSynchronize(event: number): void {
    this.call("cuEventSynchronize", event);
  }

  /** Milliseconds between two recorded events. */
  eventElapsedMs(start: number, end: number): number {
    const ms = new Float32Array(1);
    this.call("cuEventElapsedTime", ms, start, end);
    return ms[0];
  }

  eventDestroy(event: number): void {
    this.call("cuEventDestroy_v2", event);
  }

  // ---------------------------------------------------------------- modules and launches

  /** Loads a cubin (or NUL-terminated PTX) image; the driver copies it, so image may be dropped. */
  moduleLoad(image: Uint8Array): number {
    return this.outHandle("cuModuleLoadData", image);
  }

  moduleFunction(module: number, name: string): number {
    return this.outHandle("cuModuleGetFunction", module, name);
  }

  moduleUnload(module: number): void {
    this.call("cuModuleUnload", module);
  }

  /**
   * Launches fn on grid x block with the given arguments. Each argument is written into the
   * stable argument area and the pointer array is pointed at it (cuLaunchKernel's kernelParams
   * reads one pointer per parameter and copies the values before it returns).
   * `pdl`: launch through cuLaunchKernelEx with programmatic stream serialization allowed (see
   * ATTR_PROGRAMMATIC_STREAM_SERIALIZATION): only for kernels that execute griddepcontrol.wait
   * before they touch anything an earlier kernel writes or reads; the caller checks hasLaunchEx
   * and the device (sm_90+).
   */
  launch(
    fn: number,
    grid: readonly [number, number, number],
    block: readonly [number, number, number],
    shared: number,
    stream: number,
    args: readonly KernelArg[],
    pdl = false,
  ): void {
    const dv = this.argArea;
    let off = 0;
    for (let i = 0; i < args.length; i++) {
      const a = args[i];
      off = (off + 7) & ~7; // every slot 8-byte aligned: enough for any argument here
      this.ptrArray[i] = BigInt(this.argAddr + off);
      if ("ptr" in a) {
        dv.setBigUint64(off, BigInt(a.ptr), true);
        off += 8;
      } else if ("i32" in a) {
        dv.setInt32(off, a.i32, true);
        off += 4;
      } else if ("u32" in a) {
        dv.setUint32(off, a.u32, true);
        off += 4;
      } else if ("i64" in a) {
        dv.setBigInt64(off, BigInt(a.i64), true);
        off += 8;
      } else if ("f32" in a) {
        dv.setFloat32(off, a.f32, true);
        off += 4;
      } else if ("f64" in a) {
        dv.setFloat64(off, a.f64, true);
        off += 8;
      } else {
        for (const v of a.i64s) {
          dv.setBigInt64(off, BigInt(v), true);
          off += 8;
        }
      }
    }
    if (off > ARG_BYTES || args.length > MAX_ARGS)
      throw new Error(`cuLaunchKernel: ${args.length} arguments (${off} bytes) exceed the argument area`);
    if (!pdl) {
      this.call("cuLaunchKernel", fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], shared, stream, this.ptrAddr, 0);
      return;
    }
    const c = this.config;
    for (let i = 0; i < 3; i++) {
      c.setUint32(LAUNCH_CONFIG.grid + 4 * i, grid[i], true);
      c.setUint32(LAUNCH_CONFIG.block + 4 * i, block[i], true);
    }
    c.setUint32(LAUNCH_CONFIG.shared, shared, true);
    c.setBigUint64(LAUNCH_CONFIG.stream, BigInt(stream), true);
    this.call("cuLaunchKernelEx", this.configAddr, fn, this.ptrAddr, 0);
  }

  /** Raises a kernel's dynamic shared memory limit (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8). */
  setMaxDynamicShared(fn: number, bytes: number): void {
    this.call("cuFuncSetAttribute", fn, 8, bytes);
  }

  // ---------------------------------------------------------------- graphs

  /** Starts recording the stream's work into a graph instead of running it. */
  beginCapture(stream: number): void {
    this.call("cuStreamBeginCapture_v2", stream, CAPTURE_MODE_THREAD_LOCAL);
  }

  /** Ends the capture and instantiates the graph; returns [graph, exec]. */
  endCapture(stream: number): [number, number] {
    const out = new BigUint64Array(1);
    this.call("cuStreamEndCapture", stream, out); // CUgraph* comes second here
    const graph = toNumber(out[0]);
    const exec = this.outHandle("cuGraphInstantiateWithFlags", graph, 0);
    return [graph, exec];
  }

  graphLaunch(exec: number, stream: number): void {
    this.call("cuGraphLaunch", exec, stream);
  }

  graphDestroy(graph: number, exec: number): void {
    this.call("cuGraphExecDestroy", exec);
    this.call("cuGraphDestroy", graph);
  }
}
