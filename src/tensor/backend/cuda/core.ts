/**
 * The CUDA backend's core: the device, the stream, buffers (alloc, free, views, host copies, the
 * collection of dropped buffers), kernel loading and launching (the extension surface the op
 * modules launch through), graphs, counters and the status word kernels report bad ids in.
 * index.ts builds CudaBackend on it with the contract's ops and the optional capabilities; this
 * file knows no op. Counters: "cuda.launch" (and "cuda.launch.pdl"), "cublas.gemm", "cuda.memset",
 * "cuda.compile" / "cuda.compile.cached", plus one per primitive call (counted by the ops).
 * Knows nothing about Tensors or autograd.
 */
import { invariant, InvariantError } from "../../../util/index.ts";
import { ENV } from "../../../util/index.ts";
import { ArgChecks, CudaBuffer, ELEM_BYTES, isCount } from "./buffers.ts";
import type { DeviceBuffer, DType, HostArray, PrimitiveName, CapturedGraph } from "../types.ts";
import { compileNvrtc, compileUnit, type KernelDType, type KernelFile } from "./compile.ts";
import { Cublas } from "./ffi/cublas.ts";
import { type DeviceInfo, CudaDriver, type KernelArg } from "./ffi/driver.ts";
import { Nvrtc } from "./ffi/nvrtc.ts";

/** Codes written by report_error in nn.cu, by op. */
const ERROR_OPS: Record<number, string> = {
  1: "embedding: an id is outside the table's rows",
  2: "embeddingBackward: an id is outside the table's rows",
  3: "logprobGather: a target is outside [0, cols) and is not the ignore index",
  4: "logprobGatherBackward: a target is outside [0, cols) and is not the ignore index",
};

export interface CudaBackendOptions {
  /** Device ordinal (default 0). */
  device?: number;
  /** Use the on-disk kernel cache (default true; tests of the compiler turn it off). */
  cache?: boolean;
  /** Free the device memory of buffers collected without free() (default true; see collected()). */
  collect?: boolean;
  /**
   * Let the default memory pool keep freed memory across synchronizations (default true), as
   * PyTorch's caching allocator does; false restores CUDA's default (release threshold 0), where
   * each synchronize hands freed memory back and the next step maps it again.
   */
  retainPoolMemory?: boolean;
  /** Programmatic dependent launch where the device has it (default: on unless NPR_PDL=0; see CudaBackend.pdl). */
  pdl?: boolean;
}

/** Everything of the CUDA backend but its ops (index.ts adds those). */
export class CudaCore {
  readonly name = "cuda";
  readonly device: DeviceInfo;
  /** "sm_90" etc.: the architecture kernels are compiled for. */
  readonly arch: string;
  readonly driver: CudaDriver;
  readonly libraries: { cuda: string; cublas: string; nvrtc: string };
  protected readonly cublas: Cublas;
  private readonly nvrtc: Nvrtc;
  private readonly stream: number;
  private readonly useCache: boolean;
  private readonly calls: Record<string, number> = {};
  private readonly modules = new Map<string, number>();
  private readonly functions = new Map<string, number>();
  /** Device status word {code, index, value} written by kernels that meet bad ids (common.cuh). */
  private readonly err: number;
  private readonly errHost = new Int32Array(4);
  /** Dynamic shared memory limit each kernel was raised to (launchKernel). */
  private readonly smemLimits = new Map<number, number>();
  /** Host-side argument checks bound to this backend's buffers. */
  private readonly chk: ArgChecks;
  /** Frees buffers dropped without free() once collected (see collected()); bytes held now. */
  private readonly gc = new FinalizationRegistry<{ ptr: number; bytes: number }>((h) => this.collected(h));
  private live = 0;
  private readonly collect: boolean;
  /**
   * bf16 x bf16 -> f32 GEMMs with at most this many rows (batch-1 decode) use the GEMV kernel of
   * convert.cu instead of cuBLAS (0 turns it off). Measured on an H200 (docs/benchmarks.md): faster
   * than cuBLAS at 1 row (2.79 vs 2.33 TB/s), slower from 4 rows on (x is re-read per column).
   */
  gemvMaxRows = 1;
  /**
   * Which attention kernels run: "flash" (flash-attention.cu: 64 x 64 tiles on bf16 tensor cores,
   * f32 accumulation, ~1e-2 relative error), "reference" (attention.cu: f32 throughout, one warp
   * per row) or "auto": flash for f32 calls whose caller accepts bf16 inner products
   * (AttentionParams.bf16Inner: a bf16-compute model) with head dim 64 or 128 and at least
   * 256 query tokens (training and prefill); the reference path otherwise (f32
   * models keep f32 accuracy; decode rows, the conformance suite's small shapes, f64). Flash also
   * needs sm_80+ and 16-byte aligned buffers.
   */
  attentionKernel: "auto" | "flash" | "reference" = "auto";
  /**
   * Programmatic dependent launch for the kernels that allow it (launchKernel's opts.pdl: the
   * fused decode step's GEMVs, norms, q/k norm + RoPE and decode attention): each may start (and
   * stream its weights) while the previous kernel drains, inside a captured graph too. Default on
   * where the device has it (sm_90+, a driver with cuLaunchKernelEx) unless NPR_PDL=0; turning it
   * on elsewhere throws. Read at launch time: a graph keeps what it was captured with.
   */
  get pdl(): boolean {
    return this.usePdl;
  }

  set pdl(on: boolean) {
    invariant(
      !on || this.pdlSupported,
      () => `cuda backend: programmatic dependent launch needs sm_90+ and cuLaunchKernelEx (device ${this.arch})`,
    );
    this.usePdl = on;
  }

  /** Whether this device and driver can launch with PDL. */
  get pdlSupported(): boolean {
    return this.device.major >= 9 && this.driver.hasLaunchEx;
  }

  private usePdl = false;

  constructor(opts: CudaBackendOptions = {}) {
    const d = CudaDriver.load();
    if (!d.driver) throw new InvariantError(`cuda backend: ${d.why}`);
    this.driver = d.driver;
    this.driver.init();
    const count = this.driver.deviceCount();
    const ordinal = opts.device ?? 0;
    invariant(ordinal < count, () => `cuda backend: device ${ordinal} asked for, ${count} visible`);
    this.device = this.driver.device(ordinal);
    this.arch = `sm_${this.device.major}${this.device.minor}`;
    this.driver.primaryContext(ordinal);
    if (opts.retainPoolMemory ?? true) this.driver.setPoolReleaseThreshold(this.device.ordinal, 2n ** 64n - 1n);
    this.stream = this.driver.streamCreate(0);
    const b = Cublas.load(this.stream);
    if (!b.cublas) throw new InvariantError(`cuda backend: ${b.why}`);
    this.cublas = b.cublas;
    const n = Nvrtc.load();
    if (!n.nvrtc) throw new InvariantError(`cuda backend: ${n.why}`);
    this.nvrtc = n.nvrtc;
    this.useCache = opts.cache ?? true;
    this.collect = opts.collect ?? true;
    this.chk = new ArgChecks(this);
    this.libraries = { cuda: this.driver.libraryPath, cublas: this.cublas.libraryPath, nvrtc: this.nvrtc.libraryPath };
    this.usePdl = (opts.pdl ?? ENV.pdl) && this.pdlSupported;
    this.err = this.driver.allocAsync(16, this.stream);
    this.driver.memsetD32Async(this.err, 0, 4, this.stream);
  }

  // ---------------------------------------------------------------- plumbing

  private count(name: PrimitiveName | string, n = 1): void {
    this.calls[name] = (this.calls[name] ?? 0) + n;
  }

  /** The kernel `name_<dtype>` of a file, compiling and loading the file's module on first use. */
  private fn(file: KernelFile, name: string, dtype: KernelDType): number {
    const key = `${name}_${dtype}`;
    let f = this.functions.get(key);
    if (f !== undefined) return f;
    const modKey = `${file}/${dtype}`;
    let mod = this.modules.get(modKey);
    if (mod === undefined) {
      const r = compileNvrtc(this.nvrtc, compileUnit(file, dtype), this.arch, this.device.driverVersion, this.useCache);
      this.count(r.cached ? "cuda.compile.cached" : "cuda.compile");
      mod = this.driver.moduleLoad(r.cubin);
      this.modules.set(modKey, mod);
    }
    f = this.driver.moduleFunction(mod, key);
    this.functions.set(key, f);
    return f;
  }

  // ---------------------------------------------------------------- extension surface
  // The op modules beside this file (the contract's: *-ops.ts; the engine's fused ops: decode.ts,
  // decode-attention.ts, sampling.ts) launch through these and count like the ops here. An empty
  // grid (zero rows or elements) is no launch at all: CUDA rejects a zero grid dimension.

  /** Argument checks bound to this backend's buffers (dtypes, sizes, use after free). */
  get checks(): ArgChecks {
    return this.chk;
  }

  /** Bumps counter `name` (an extension op's own name, and whatever the tests assert on). */
  countCall(name: string, n = 1): void {
    this.count(name, n);
  }

  /**
   * Queues kernel `name_<dtype>` of `file` with a 1-D or 3-D grid and `smem` bytes of dynamic
   * shared memory (above 48 KiB the function's limit is raised, whenever a launch needs more than
   * it was raised to). An empty grid is no launch.
   * `opts.pdl`: the kernel is PDL-safe (it executes griddepcontrol.wait before it reads anything an
   * earlier kernel wrote or writes anything an earlier kernel reads), so it may be launched with
   * programmatic dependent launch; it is when `this.pdl` is on (counter "cuda.launch.pdl").
   */
  launchKernel(
    file: KernelFile,
    name: string,
    dtype: KernelDType,
    grid: number | [number, number, number],
    block: number,
    args: KernelArg[],
    smem = 0,
    opts?: { pdl?: boolean },
  ): void {
    const g: [number, number, number] = typeof grid === "number" ? [grid, 1, 1] : grid;
    if (g[0] === 0 || g[1] === 0 || g[2] === 0) return;
    const f = this.fn(file, name, dtype);
    if (smem > 48 * 1024 && (this.smemLimits.get(f) ?? 0) < smem) {
      this.driver.setMaxDynamicShared(f, smem);
      this.smemLimits.set(f, smem);
    }
    const pdl = this.pdl && opts?.pdl === true;
    this.driver.launch(f, g, [block, 1, 1], smem, this.stream, args, pdl);
    this.count("cuda.launch");
    if (pdl) this.count("cuda.launch.pdl");
  }

  /** Device address of the status word kernels record bad ids in (common.cuh report_error). */
  get errorWord(): number {
    return this.err;
  }

  /** The stream every op of this backend is queued on (extension ops that copy use it too). */
  get streamHandle(): number {
    return this.stream;
  }

  /** Throws (once) what a kernel recorded in the status word, then clears it. Synchronizes. */
  private checkKernelErrors(): void {
    this.driver.dtoh(this.errHost, this.err, 12);
    const [code, index, value] = this.errHost;
    if (code === 0) return;
    this.driver.memsetD32Async(this.err, 0, 4, this.stream);
    throw new InvariantError(`${ERROR_OPS[code] ?? `kernel error ${code}`}: element ${index} is ${value}`);
  }

  /** Waits for all queued work and reports kernel-recorded errors. */
  synchronize(): void {
    this.driver.streamSynchronize(this.stream);
    this.checkKernelErrors();
  }

  /**
   * Records the kernels and GEMMs `body` queues into a CUDA graph instead of running them, and
   * returns a replayable handle (decode steps are captured this way once the engine lands). Kernels
   * used inside must have been used once before (loading a module is not capturable), and body must
   * not write, read or alloc from the host.
   */
  captureGraph(body: () => void): CapturedGraph {
    this.driver.beginCapture(this.stream);
    try {
      body();
    } catch (e) {
      try {
        this.driver.endCapture(this.stream);
      } catch {
        // the capture is already invalid; the first error is the one to report
      }
      throw e;
    }
    const [graph, exec] = this.driver.endCapture(this.stream);
    return {
      replay: () => {
        this.driver.graphLaunch(exec, this.stream);
        this.count("cuda.graph");
      },
      destroy: () => this.driver.graphDestroy(graph, exec),
    };
  }

  // ---------------------------------------------------------------- buffers

  alloc(dtype: DType, length: number): CudaBuffer {
    invariant(dtype === "f32" || dtype === "f64" || dtype === "i32" || dtype === "bf16", () => `alloc: unknown dtype ${String(dtype)}`);
    invariant(isCount(length), () => `alloc: length ${length} is not a non-negative integer`);
    // At least 16 bytes: a zero-length allocation is an error in CUDA, and 16 keeps alignment.
    const bytes = Math.max(16, length * ELEM_BYTES[dtype]);
    const ptr = this.driver.allocAsync(bytes, this.stream);
    const buf = new CudaBuffer(this, dtype, length, ptr);
    this.live += bytes;
    if (this.collect) this.gc.register(buf, { ptr, bytes }, buf);
    return buf;
  }

  free(buf: DeviceBuffer): void {
    const b = this.chk.live("free", "buf", buf);
    invariant(b.parent === null, () => `free: a view (${b.dtype}[${b.length}]) is freed with its parent, not alone`);
    b.freed = true;
    this.gc.unregister(b);
    this.live -= Math.max(16, b.length * ELEM_BYTES[b.dtype]);
    this.driver.freeAsync(b.ptr, this.stream);
  }

  /**
   * Frees the device memory of a buffer the program dropped without free() (the tensor layer
   * does not dispose intermediates). Runs from a FinalizationRegistry, i.e. in its own task after
   * a garbage collection: a loop that never yields to the event loop collects nothing, so long
   * loops (training steps, servers) await between iterations. Stream-ordered, so kernels queued
   * before still read valid memory.
   */
  private collected(held: { ptr: number; bytes: number }): void {
    this.live -= held.bytes;
    this.count("cuda.gc.free");
    this.driver.freeAsync(held.ptr, this.stream);
  }

  /** Bytes of device memory held by this backend's live allocations (views not counted twice). */
  liveBytes(): number {
    return this.live;
  }

  /**
   * A buffer over elements [offset, offset + length) of buf, sharing its memory: one host write
   * fills several kernel arguments (the decode graphs' input block). Not freed on its own.
   */
  view(buf: DeviceBuffer, offset: number, length: number, dtype?: DType): CudaBuffer {
    const b = this.chk.live("view", "buf", buf);
    const dt = dtype ?? b.dtype;
    invariant(ELEM_BYTES[dt] === ELEM_BYTES[b.dtype], () => `view: a ${dt} view of a ${b.dtype} buffer changes the element size`);
    invariant(
      isCount(offset) && isCount(length) && offset + length <= b.length,
      () => `view: [${offset}, ${offset + length}) is outside a buffer of ${b.length}`,
    );
    return new CudaBuffer(this, dt, length, b.ptr + offset * ELEM_BYTES[b.dtype], b.parent ?? b);
  }

  write(buf: DeviceBuffer, src: HostArray, dstOffset = 0): void {
    const b = this.chk.live("write", "buf", buf);
    const ok =
      (b.dtype === "f32" && src instanceof Float32Array) ||
      (b.dtype === "f64" && src instanceof Float64Array) ||
      (b.dtype === "i32" && src instanceof Int32Array) ||
      (b.dtype === "bf16" && src instanceof Uint16Array);
    invariant(ok, () => `write: a ${src.constructor.name} cannot be written into a ${b.dtype} buffer`);
    invariant(
      isCount(dstOffset) && dstOffset + src.length <= b.length,
      () => `write: ${src.length} elements at offset ${dstOffset} overflow a buffer of ${b.length}`,
    );
    if (src.length > 0) this.driver.htod(b.ptr + dstOffset * ELEM_BYTES[b.dtype], src, src.byteLength);
  }

  /**
   * A host copy; waits for every queued op (the copy is ordered after them). The kernels' error
   * word is read here too, so a bad id fails the read that would expose its garbage.
   */
  read(buf: DeviceBuffer, offset = 0, length?: number): HostArray {
    const b = this.chk.live("read", "buf", buf);
    const n = length ?? b.length - offset;
    invariant(
      isCount(offset) && isCount(n) && offset + n <= b.length,
      () => `read: [${offset}, ${offset + n}) is outside a buffer of ${b.length}`,
    );
    const out =
      b.dtype === "f32"
        ? new Float32Array(n)
        : b.dtype === "f64"
          ? new Float64Array(n)
          : b.dtype === "bf16"
            ? new Uint16Array(n)
            : new Int32Array(n);
    if (n > 0) this.driver.dtoh(out, b.ptr + offset * ELEM_BYTES[b.dtype], out.byteLength);
    this.checkKernelErrors();
    return out;
  }

  counters(): Readonly<Record<string, number>> {
    return { ...this.calls };
  }
}
