/**
 * The CUDA backend: the Backend contract (types.ts) on an NVIDIA GPU, with buffers in device
 * memory, GEMMs in cuBLAS and every other primitive a kernel from kernels/*.cu (compiled by NVRTC
 * at first use, cached on disk). All work goes onto one blocking stream in call order; read()
 * is the synchronization point, and also where errors recorded by kernels (an id or target out of
 * range) surface as InvariantErrors naming the op.
 *
 * Counters: one per primitive call (the conformance suite checks them), plus "cuda.launch" (kernel
 * launches), "cublas.gemm" (cuBLAS calls), "cuda.memset", "cuda.compile" and
 * "cuda.compile.cached" (kernel units compiled / loaded from the disk cache), so a test can prove
 * the GPU path ran. Argument checks (dtypes, sizes, use after free) are the CPU backend's, done on
 * the host before anything is queued; segment arrays live on the device and are not read back:
 * the kernels clamp segments to [0, keys), so a bad layout gives wrong numbers, never a stray read.
 * bf16 buffers: cast, fill, contiguous copy, matmul (cuBLAS bf16 x bf16 -> f32 or bf16, fp32
 * accumulation) and embedding from a bf16 table into f32 run natively; every other op with bf16
 * buffers goes through the generic f32 wrapper of ../bf16.ts (cast kernels around the f32 kernel),
 * which gives the CPU reference's results.
 * Knows nothing about Tensors or autograd.
 */
import { invariant, InvariantError } from "../../../util/errors.ts";
import { f32ToBf16Bits } from "../../dtype.ts";
import { installBf16, runViaF32 } from "../bf16.ts";
import { collapseDims, numel, stridedExtent } from "../cpu/elementwise.ts";
import { ArgChecks, CudaBuffer, ELEM_BYTES, isCount } from "./buffers.ts";
import type {
  AdamWParams,
  AttentionParams,
  AttentionSegments,
  Backend,
  BinaryOp,
  BinaryParams,
  CopyParams,
  DeviceBuffer,
  DType,
  HostArray,
  LogprobParams,
  MatmulParams,
  PrimitiveName,
  ReduceParams,
  RmsNormParams,
  RopeParams,
  RowsParams,
  ScalarOp,
  UnaryOp,
} from "../types.ts";
import { BINARY_OPS, SCALAR_OPS, UNARY_OPS } from "../types.ts";
import { compileNvrtc, compileUnit, type KernelDType, type KernelFile } from "./compile.ts";
import { CUBLAS_SONAMES, Cublas } from "./ffi/cublas.ts";
import { CUDA_ENV, openLibrary } from "./ffi/libs.ts";
import { type DeviceInfo, CudaDriver, type KernelArg } from "./ffi/driver.ts";

export { CudaBuffer } from "./buffers.ts";
import { Nvrtc } from "./ffi/nvrtc.ts";
import { decodeAttention, decodeAttentionScratchLength, type DecodeAttentionCapacity, type DecodeAttentionParams } from "./decode-attention.ts";
import { sampleRows } from "./sampling.ts";
import { matmulExtents } from "../extents.ts";
import * as fusedDecode from "./decode.ts";
import { attentionBackward, attentionForward } from "./attention-ops.ts";

/** Threads per block of the 1-D and row kernels (see the kernel files' headers). */
const BLOCK = 256;
/** Grid-stride kernels cap their grid here; more blocks would only loop less. */
const MAX_BLOCKS = 65535 * 4;
/** Warps (= output columns) per block of the decode GEMV (convert.cu gemv_bf16_m*). */
const GEMV_WARPS = 8;
/** Blocks the RMSNorm dw reduction aims for (a few per SM of an H100/H200). */
const DW_TARGET_BLOCKS = 1024;
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
}

/** Why no CUDA backend can be made here, or null when one can (for skips and `backend check`). */
export function cudaUnavailable(): string | null {
  const d = CudaDriver.load();
  if (!d.driver) return d.why;
  try {
    d.driver.init();
    if (d.driver.deviceCount() === 0) return "libcuda loaded but no CUDA device is visible";
  } catch (e) {
    return `libcuda loaded but CUDA did not start: ${e instanceof Error ? e.message : String(e)}`;
  }
  const c = Nvrtc.load();
  if (!c.nvrtc) return c.why;
  const b = openLibrary("cuBLAS library", CUDA_ENV.libcublas, CUBLAS_SONAMES, "NPR_LIBCUBLAS");
  if (!b.lib) return b.why;
  return null;
}

export class CudaBackend implements Backend {
  readonly name = "cuda";
  readonly device: DeviceInfo;
  /** "sm_90" etc.: the architecture kernels are compiled for. */
  readonly arch: string;
  readonly driver: CudaDriver;
  readonly libraries: { cuda: string; cublas: string; nvrtc: string };
  private readonly cublas: Cublas;
  private readonly nvrtc: Nvrtc;
  private readonly stream: number;
  private readonly useCache: boolean;
  private readonly calls: Record<string, number> = {};
  private readonly modules = new Map<string, number>();
  private readonly functions = new Map<string, number>();
  /** Device status word {code, index, value} written by kernels that meet bad ids (common.cuh). */
  private readonly err: number;
  private readonly errHost = new Int32Array(4);
  /** RoPE denominators by "theta/dim" (see ropeTable). */
  private readonly ropeTables = new Map<string, CudaBuffer>();
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
    this.err = this.driver.allocAsync(16, this.stream);
    this.driver.memsetD32Async(this.err, 0, 4, this.stream);
    // Calls with bf16 buffers that these methods run themselves; the rest are upcast around f32.
    installBf16(this, (op, args) => {
      if (op === "fill" || op === "copy" || op === "matmul") return true;
      return op === "embedding" && (args[2] as DeviceBuffer).dtype === "f32";
    });
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

  /**
   * Queues one kernel on the stream. An empty grid (zero rows or elements) is no launch at all:
   * CUDA rejects a zero grid dimension, and the op has nothing to do.
   */
  private launch(file: KernelFile, name: string, dtype: KernelDType, grid: number, block: number, args: KernelArg[]): void {
    if (grid === 0) return;
    this.driver.launch(this.fn(file, name, dtype), [grid, 1, 1], [block, 1, 1], 0, this.stream, args);
    this.count("cuda.launch");
  }

  // ---------------------------------------------------------------- extension surface
  // Host modules beside this file (decode.ts, decode-attention.ts, sampling.ts) add fused ops that
  // are not part of the Backend contract; they launch through these and count like the ops here.

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
   */
  launchKernel(file: KernelFile, name: string, dtype: KernelDType, grid: number | [number, number, number], block: number, args: KernelArg[], smem = 0): void {
    const g: [number, number, number] = typeof grid === "number" ? [grid, 1, 1] : grid;
    if (g[0] === 0 || g[1] === 0 || g[2] === 0) return;
    const f = this.fn(file, name, dtype);
    if (smem > 48 * 1024 && (this.smemLimits.get(f) ?? 0) < smem) {
      this.driver.setMaxDynamicShared(f, smem);
      this.smemLimits.set(f, smem);
    }
    this.driver.launch(f, g, [block, 1, 1], smem, this.stream, args);
    this.count("cuda.launch");
  }

  /** The stream every op of this backend is queued on (extension ops that copy use it too). */
  get streamHandle(): number {
    return this.stream;
  }

  /** Blocks for a grid-stride kernel over n elements. */
  private grid1d(n: number): number {
    return Math.min(Math.ceil(n / BLOCK), MAX_BLOCKS);
  }

  /** Address of element `offset` of b. */
  private at(b: CudaBuffer, offset: number): KernelArg {
    return { ptr: b.ptr + offset * ELEM_BYTES[b.dtype] };
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
  captureGraph(body: () => void): { replay: () => void; destroy: () => void } {
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
    invariant(isCount(offset) && isCount(length) && offset + length <= b.length, () => `view: [${offset}, ${offset + length}) is outside a buffer of ${b.length}`);
    return new CudaBuffer(this, dt, length, b.ptr + offset * ELEM_BYTES[b.dtype], b.parent ?? b);
  }

  /**
   * pages[slots[r], :] = src[r, :] for r < rows (rows of rowSize elements); a negative slot writes
   * nothing. The paged KV write of the decode graphs: slots are read on the device, so a graph
   * replays with new ones. Not a Backend primitive.
   */
  scatterRows(src: DeviceBuffer, slots: DeviceBuffer, pages: DeviceBuffer, p: { rows: number; rowSize: number }): void {
    this.chk.dims("scatterRows", p);
    const S = this.chk.ints("scatterRows", "slots", slots, p.rows);
    const [[X, P], dt] = this.chk.floats("scatterRows", [["src", src, p.rows * p.rowSize], ["pages", pages, 0]]);
    this.launch("nn.cu", "scatter_rows", dt, this.grid1d(p.rows * p.rowSize), BLOCK, [{ ptr: X.ptr }, { ptr: S.ptr }, { ptr: P.ptr }, { i64: p.rows }, { i64: p.rowSize }]);
    this.count("scatterRows");
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
    invariant(isCount(offset) && isCount(n) && offset + n <= b.length, () => `read: [${offset}, ${offset + n}) is outside a buffer of ${b.length}`);
    const out =
      b.dtype === "f32" ? new Float32Array(n) : b.dtype === "f64" ? new Float64Array(n) : b.dtype === "bf16" ? new Uint16Array(n) : new Int32Array(n);
    if (n > 0) this.driver.dtoh(out, b.ptr + offset * ELEM_BYTES[b.dtype], out.byteLength);
    this.checkKernelErrors();
    return out;
  }

  counters(): Readonly<Record<string, number>> {
    return { ...this.calls };
  }

  // ---------------------------------------------------------------- memory

  fill(out: DeviceBuffer, value: number): void {
    const o = this.chk.live("fill", "out", out);
    if (o.dtype === "f64") {
      this.launch("elementwise.cu", "fill", "f64", this.grid1d(o.length), BLOCK, [{ ptr: o.ptr }, { i64: o.length }, { f64: value }]);
    } else if (o.dtype === "bf16") {
      if (o.length > 0) this.driver.memsetD16Async(o.ptr, f32ToBf16Bits(value), o.length, this.stream);
      this.count("cuda.memset");
    } else if (o.length > 0) {
      // f32 and i32 fills are a 32-bit pattern: no kernel needed.
      const bits = new DataView(new ArrayBuffer(4));
      if (o.dtype === "f32") bits.setFloat32(0, value, true);
      else bits.setInt32(0, value, true);
      this.driver.memsetD32Async(o.ptr, bits.getUint32(0, true), o.length, this.stream);
      this.count("cuda.memset");
    }
    this.count("fill");
  }

  copy(src: DeviceBuffer, out: DeviceBuffer, p: CopyParams): void {
    const op = "copy";
    invariant(p.srcStrides.length === p.shape.length, () => `copy: srcStrides has ${p.srcStrides.length} entries for a rank-${p.shape.length} shape`);
    this.chk.dims(op, { srcOffset: p.srcOffset, dstOffset: p.dstOffset });
    p.shape.forEach((d, i) => this.chk.dims(op, { [`shape[${i}]`]: d, [`srcStrides[${i}]`]: p.srcStrides[i] }));
    const n = numel(p.shape);
    const s = this.chk.sized(op, "src", src, stridedExtent(p.shape, p.srcStrides, p.srcOffset));
    const o = this.chk.sized(op, "out", out, p.dstOffset + n);
    invariant(s.dtype === o.dtype, () => `copy: src is ${s.dtype} but out is ${o.dtype}`);
    // A contiguous region is one device-to-device copy; anything else the gather kernel. The f32
    // kernel moves i32 elements too (same width, bits kept).
    const c = collapseDims(p.shape, [p.srcStrides]);
    const bytes = ELEM_BYTES[s.dtype];
    if (n > 0 && c.shape.length === 1 && c.strides[0][0] === 1) {
      this.driver.dtodAsync(o.ptr + p.dstOffset * bytes, s.ptr + p.srcOffset * bytes, n * bytes, this.stream);
      this.count("cuda.memcpy");
    } else if (n > 0 && s.dtype === "bf16") {
      // No 16-bit gather kernel: a strided bf16 copy (rare: weights and activations are
      // contiguous) runs through f32 temporaries; this call is then counted by the inner copy.
      runViaF32(this, "copy", [src, out, p], (...a) => this.copy(...(a as [DeviceBuffer, DeviceBuffer, CopyParams])));
      return;
    } else if (n > 0) {
      const dt: KernelDType = s.dtype === "f64" ? "f64" : "f32";
      const desc = this.chk.strided(op, p.shape, p.srcStrides, p.srcStrides);
      this.launch("elementwise.cu", "copy", dt, this.grid1d(n), BLOCK, [{ ptr: s.ptr }, { ptr: o.ptr }, desc, { i64: n }, { i64: p.srcOffset }, { i64: p.dstOffset }]);
    }
    this.count(op);
  }

  /** Float conversion (types.ts); kernels in convert.cu, a plain device copy for the same dtype. */
  cast(x: DeviceBuffer, out: DeviceBuffer): void {
    const n = out.length;
    const o = this.chk.live("cast", "out", out);
    const s = this.chk.sized("cast", "x", x, n);
    for (const [arg, b] of [["x", s], ["out", o]] as const) {
      invariant(b.dtype !== "i32", () => `cast: ${arg} is i32, expected f32, f64 or bf16`);
    }
    const args = [{ ptr: s.ptr }, { ptr: o.ptr }, { i64: n }];
    const grid = this.grid1d(n);
    if (n === 0) {
      // nothing to convert
    } else if (s.dtype === o.dtype) {
      this.driver.dtodAsync(o.ptr, s.ptr, n * ELEM_BYTES[s.dtype], this.stream);
      this.count("cuda.memcpy");
    } else if (o.dtype === "bf16") {
      this.launch("convert.cu", "cast_to_bf16", s.dtype as KernelDType, grid, BLOCK, args);
    } else if (s.dtype === "bf16") {
      this.launch("convert.cu", "cast_from_bf16", o.dtype as KernelDType, grid, BLOCK, args);
    } else if (s.dtype === "f32") {
      this.launch("convert.cu", "cast_from_f32", "f64", grid, BLOCK, args); // f32 -> f64
    } else {
      this.launch("convert.cu", "cast_to_f32", "f64", grid, BLOCK, args); // f64 -> f32
    }
    this.count("cast");
  }

  // ---------------------------------------------------------------- elementwise

  unary(op: UnaryOp, x: DeviceBuffer, out: DeviceBuffer): void {
    invariant(UNARY_OPS.includes(op), () => `unary: unknown op ${op}`);
    const n = out.length;
    const [[O, X], dt] = this.chk.floats(`unary(${op})`, [["out", out, n], ["x", x, n]]);
    this.launch("elementwise.cu", "unary", dt, this.grid1d(n), BLOCK, [{ ptr: X.ptr }, { ptr: O.ptr }, { i64: n }, { i32: UNARY_OPS.indexOf(op) }]);
    this.count("unary");
  }

  unaryBackward(op: UnaryOp, x: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer): void {
    invariant(UNARY_OPS.includes(op), () => `unaryBackward: unknown op ${op}`);
    const n = dx.length;
    const usesY = op === "exp" || op === "sqrt" || op === "rsqrt" || op === "sigmoid";
    // Only the operand the derivative reads is checked and passed (as both x and y).
    const [[DX, DY, IN], dt] = this.chk.floats(`unaryBackward(${op})`, [["dx", dx, n], ["dy", dy, n], usesY ? ["y", y, n] : ["x", x, n]]);
    this.launch("elementwise.cu", "unary_backward", dt, this.grid1d(n), BLOCK, [
      { ptr: IN.ptr }, { ptr: IN.ptr }, { ptr: DY.ptr }, { ptr: DX.ptr }, { i64: n }, { i32: UNARY_OPS.indexOf(op) },
    ]);
    this.count("unaryBackward");
  }

  binary(op: BinaryOp, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: BinaryParams): void {
    const name = `binary(${op})`;
    invariant(BINARY_OPS.includes(op), () => `binary: unknown op ${op}`);
    const rank = p.shape.length;
    invariant(p.aStrides.length === rank && p.bStrides.length === rank, () => `${name}: aStrides/bStrides have ${p.aStrides.length}/${p.bStrides.length} entries for rank ${rank}`);
    p.shape.forEach((d, i) => this.chk.dims(name, { [`shape[${i}]`]: d, [`aStrides[${i}]`]: p.aStrides[i], [`bStrides[${i}]`]: p.bStrides[i] }));
    const n = numel(p.shape);
    const [[A, B, O], dt] = this.chk.floats(name, [["a", a, stridedExtent(p.shape, p.aStrides)], ["b", b, stridedExtent(p.shape, p.bStrides)], ["out", out, n]]);
    if (n > 0) {
      this.launch("elementwise.cu", "binary", dt, this.grid1d(n), BLOCK, [
        { ptr: A.ptr }, { ptr: B.ptr }, { ptr: O.ptr }, this.chk.strided(name, p.shape, p.aStrides, p.bStrides), { i64: n }, { i32: BINARY_OPS.indexOf(op) },
      ]);
    }
    this.count("binary");
  }

  scalar(op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void {
    invariant(SCALAR_OPS.includes(op), () => `scalar: unknown op ${op}`);
    const n = out.length;
    const [[O, X], dt] = this.chk.floats(`scalar(${op})`, [["out", out, n], ["x", x, n]]);
    this.launch("elementwise.cu", "scalar", dt, this.grid1d(n), BLOCK, [
      { ptr: X.ptr }, { ptr: O.ptr }, { i64: n }, { i32: SCALAR_OPS.indexOf(op) }, dt === "f32" ? { f32: value } : { f64: value },
    ]);
    this.count("scalar");
  }

  swiglu(gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void {
    const n = out.length;
    const [[O, G, U], dt] = this.chk.floats("swiglu", [["out", out, n], ["gate", gate, n], ["up", up, n]]);
    this.launch("elementwise.cu", "swiglu", dt, this.grid1d(n), BLOCK, [{ ptr: G.ptr }, { ptr: U.ptr }, { ptr: O.ptr }, { i64: n }]);
    this.count("swiglu");
  }

  swigluBackward(gate: DeviceBuffer, up: DeviceBuffer, dy: DeviceBuffer, dGate: DeviceBuffer, dUp: DeviceBuffer): void {
    const n = dGate.length;
    const [[DG, DU, G, U, DY], dt] = this.chk.floats("swigluBackward", [["dGate", dGate, n], ["dUp", dUp, n], ["gate", gate, n], ["up", up, n], ["dy", dy, n]]);
    this.launch("elementwise.cu", "swiglu_backward", dt, this.grid1d(n), BLOCK, [
      { ptr: G.ptr }, { ptr: U.ptr }, { ptr: DY.ptr }, { ptr: DG.ptr }, { ptr: DU.ptr }, { i64: n },
    ]);
    this.count("swigluBackward");
  }

  // ---------------------------------------------------------------- reduce

  reduceSum(x: DeviceBuffer, out: DeviceBuffer, p: ReduceParams): void {
    this.chk.dims("reduceSum", { outer: p.outer, reduce: p.reduce, inner: p.inner });
    const [[X, O], dt] = this.chk.floats("reduceSum", [["x", x, p.outer * p.reduce * p.inner], ["out", out, p.outer * p.inner]]);
    if (p.inner === 1 && p.reduce >= 1024) {
      // Long rows: a block per row keeps the GPU busy where one thread per output would not.
      this.launch("elementwise.cu", "reduce_sum_rows", dt, p.outer, BLOCK, [{ ptr: X.ptr }, { ptr: O.ptr }, { i64: p.reduce }]);
    } else {
      this.launch("elementwise.cu", "reduce_sum", dt, this.grid1d(p.outer * p.inner), BLOCK, [
        { ptr: X.ptr }, { ptr: O.ptr }, { i64: p.outer }, { i64: p.reduce }, { i64: p.inner },
      ]);
    }
    this.count("reduceSum");
  }

  // ---------------------------------------------------------------- gemm

  matmul(a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, p: MatmulParams): void {
    const { batch, m, n, k } = p;
    const { offA, offB, offC, needA, needB, needC } = matmulExtents(p);
    this.chk.dims("matmul", { batch, m, n, k, strideA: p.strideA, strideB: p.strideB, strideC: p.strideC, offsetA: offA, offsetB: offB, offsetC: offC });
    const sizes = [["a", a, needA], ["b", b, needB], ["c", c, needC]] as const;
    let A: CudaBuffer, B: CudaBuffer, C: CudaBuffer;
    let type: "f32" | "f64" | "bf16";
    if (a.dtype === "bf16") {
      // Mixed precision (dtypes checked by the bf16 wrapper): bf16 A, B; f32 or bf16 C; fp32 accumulation.
      [A, B, C] = sizes.map(([name, buf, min]) => this.chk.sized("matmul", name, buf, min));
      type = "bf16";
    } else {
      let dt: KernelDType;
      [[A, B, C], dt] = this.chk.floats("matmul", sizes);
      type = dt;
    }
    // Offsets become address arithmetic; cuBLAS sees each operand from its item 0.
    const bytes = ELEM_BYTES[A.dtype];
    const cBytes = ELEM_BYTES[C.dtype];
    const aPtr = A.ptr + offA * bytes;
    const bPtr = B.ptr + offB * bytes;
    if (type === "bf16" && C.dtype === "f32" && batch === 1 && !p.transA && p.transB && m > 0 && m <= this.gemvMaxRows &&
      k % 8 === 0 && aPtr % 16 === 0 && bPtr % 16 === 0) {
      // Decode-sized rows: the weight-streaming GEMV (16-byte loads need k % 8 == 0 and aligned rows).
      const M = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16;
      // Warps per column: wide matrices (lm_head, MLP up) have columns enough to fill the SMs
      // one warp each; narrow ones (k/v projections) split k over up to 8 warps.
      const split = n >= 8192 ? 1 : n >= 4096 ? 2 : n >= 2048 ? 4 : 8;
      this.launch("convert.cu", `gemv_bf16_m${M}`, "f32", Math.ceil(n / (GEMV_WARPS / split)), 32 * GEMV_WARPS, [
        { ptr: aPtr }, { ptr: bPtr }, { ptr: C.ptr + offC * cBytes }, { i64: m }, { i64: n }, { i64: k },
        { f32: p.alpha ?? 1 }, { f32: p.beta ?? 0 }, { i32: split },
      ]);
      this.count("matmul");
      this.count("cuda.gemv");
      return;
    }
    this.cublas.gemm({
      type, cType: C.dtype === "f32" ? "f32" : type, batch, m, n, k, transA: p.transA, transB: p.transB,
      a: A.ptr + offA * bytes, b: B.ptr + offB * bytes, c: C.ptr + offC * cBytes,
      strideA: p.strideA, strideB: p.strideB, strideC: p.strideC,
      alpha: p.alpha ?? 1, beta: p.beta ?? 0,
    });
    this.count("matmul");
    this.count("cublas.gemm");
  }

  // ---------------------------------------------------------------- nn

  embedding(table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void {
    this.chk.dims("embedding", p);
    const I = this.chk.ints("embedding", "ids", ids, p.n);
    // A bf16 table (into an f32 out, the only bf16 call that reaches here) has its own kernel.
    const bf16 = table.dtype === "bf16";
    const [T, O] = bf16 ? [this.chk.live("embedding", "table", table), this.chk.sized("embedding", "out", out, p.n * p.dim)] : this.chk.floats("embedding", [["table", table, 0], ["out", out, p.n * p.dim]])[0];
    const dt = O.dtype as KernelDType;
    // The table's row count comes from its length (the contract passes none); the kernel
    // range-checks ids against it.
    const V = p.dim === 0 ? 0 : Math.floor(T.length / p.dim);
    const args = [{ ptr: T.ptr }, { ptr: I.ptr }, { ptr: O.ptr }, { i64: p.dim }, { i64: V }, { ptr: this.err }];
    if (bf16) this.launch("convert.cu", "embedding_bf16", dt, p.n, BLOCK, args);
    else this.launch("nn.cu", "embedding", dt, p.n, BLOCK, args);
    this.count("embedding");
  }

  embeddingBackward(dOut: DeviceBuffer, ids: DeviceBuffer, dTable: DeviceBuffer, p: { n: number; dim: number }): void {
    this.chk.dims("embeddingBackward", p);
    const I = this.chk.ints("embeddingBackward", "ids", ids, p.n);
    const [[DO, DT], dt] = this.chk.floats("embeddingBackward", [["dOut", dOut, p.n * p.dim], ["dTable", dTable, 0]]);
    const V = p.dim === 0 ? 0 : Math.floor(DT.length / p.dim);
    this.launch("nn.cu", "embedding_backward", dt, p.n, BLOCK, [{ ptr: DO.ptr }, { ptr: I.ptr }, { ptr: DT.ptr }, { i64: p.dim }, { i64: V }, { ptr: this.err }]);
    this.count("embeddingBackward");
  }

  rmsnorm(x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void {
    const { rows, dim } = p;
    this.chk.dims("rmsnorm", { rows, dim });
    const [[X, W, O, R], dt] = this.chk.floats("rmsnorm", [["x", x, rows * dim], ["w", w, dim], ["out", out, rows * dim], ["rstd", rstd, rows]]);
    this.launch("nn.cu", "rmsnorm", dt, rows, BLOCK, [{ ptr: X.ptr }, { ptr: W.ptr }, { ptr: O.ptr }, { ptr: R.ptr }, { i64: dim }, { f64: p.eps }]);
    this.count("rmsnorm");
  }

  rmsnormBackward(x: DeviceBuffer, w: DeviceBuffer, rstd: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, dw: DeviceBuffer, p: RmsNormParams): void {
    const { rows, dim } = p;
    this.chk.dims("rmsnormBackward", { rows, dim });
    const [[X, W, R, DY, DX, DW], dt] = this.chk.floats("rmsnormBackward", [
      ["x", x, rows * dim], ["w", w, dim], ["rstd", rstd, rows], ["dy", dy, rows * dim], ["dx", dx, rows * dim], ["dw", dw, dim],
    ]);
    this.launch("nn.cu", "rmsnorm_backward_dx", dt, rows, BLOCK, [{ ptr: X.ptr }, { ptr: W.ptr }, { ptr: R.ptr }, { ptr: DY.ptr }, { ptr: DX.ptr }, { i64: dim }]);
    this.rmsnormDw(X, R, DY, DW, rows, dim, dt);
    this.count("rmsnormBackward");
  }

  /**
   * dw of RMSNorm: a sum over all rows per column, split over (32-column tile, chunk of rows)
   * blocks into double partials, then summed per column in chunk order (nn.cu). About
   * DW_TARGET_BLOCKS blocks whatever the shape: the q/k norms have 128 columns and 71,680 rows,
   * the layer norms 1024 columns and 4,480 rows (the Qwen3-0.6B training bench).
   */
  private rmsnormDw(X: CudaBuffer, R: CudaBuffer, DY: CudaBuffer, DW: CudaBuffer, rows: number, dim: number, dt: KernelDType): void {
    if (dim === 0) return;
    const tiles = Math.ceil(dim / 32);
    // At least 32 rows per chunk (4 per warp), at most 65535 chunks (grid y limit).
    const chunksWanted = Math.min(Math.max(1, Math.ceil(DW_TARGET_BLOCKS / tiles)), Math.max(1, Math.ceil(rows / 32)));
    const rowsPerChunk = Math.max(1, Math.ceil(rows / chunksWanted), Math.ceil(rows / 65535));
    const chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
    const part = this.alloc("f64", chunks * dim);
    this.driver.launch(this.fn("nn.cu", "rmsnorm_backward_dw_partial", dt), [tiles, chunks, 1], [BLOCK, 1, 1], 0, this.stream, [
      { ptr: X.ptr }, { ptr: R.ptr }, { ptr: DY.ptr }, { ptr: part.ptr }, { i64: rows }, { i64: dim }, { i64: rowsPerChunk },
    ]);
    this.count("cuda.launch");
    this.launch("nn.cu", "rmsnorm_backward_dw_sum", dt, Math.ceil(dim / BLOCK), BLOCK, [{ ptr: part.ptr }, { ptr: DW.ptr }, { i64: chunks }, { i64: dim }]);
    this.free(part);
  }

  /**
   * The f64 table theta^(2j/dim), j < dim/2, of one (theta, dim), made on the host once and kept on
   * the device: the kernel divides positions by it, so angles match the references exactly.
   */
  private ropeTable(theta: number, dim: number): number {
    const key = `${theta}/${dim}`;
    let t = this.ropeTables.get(key);
    if (!t) {
      const half = dim / 2;
      const denom = Float64Array.from({ length: half }, (_, j) => theta ** ((2 * j) / dim));
      t = this.alloc("f64", Math.max(1, half));
      this.write(t, denom);
      this.ropeTables.set(key, t);
    }
    return t.ptr;
  }

  rope(x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void {
    const { tokens, heads, dim } = p;
    this.chk.dims("rope", { tokens, heads, dim });
    invariant(dim % 2 === 0, () => `rope: dim ${dim} is odd; rotate-half needs an even head dim`);
    const P = this.chk.ints("rope", "positions", positions, tokens);
    const [[X, O], dt] = this.chk.floats("rope", [["x", x, tokens * heads * dim], ["out", out, tokens * heads * dim]]);
    const pairs = (tokens * heads * dim) / 2;
    this.launch("nn.cu", "rope", dt, Math.ceil(pairs / BLOCK), BLOCK, [
      { ptr: X.ptr }, { ptr: P.ptr }, { ptr: O.ptr }, { i64: tokens }, { i64: heads }, { i64: dim }, { ptr: this.ropeTable(p.theta, dim) }, { f64: p.inverse ? -1 : 1 },
    ]);
    this.count("rope");
  }

  /** A row kernel: one block per row over [rows, cols] float arguments given as name, buffer pairs. */
  private rowKernel(prim: PrimitiveName, kernel: string, p: RowsParams, args: Array<[string, DeviceBuffer]>): void {
    this.chk.dims(prim, { rows: p.rows, cols: p.cols });
    const [bufs, dt] = this.chk.floats(prim, args.map(([name, b]) => [name, b, p.rows * p.cols] as const));
    this.launch("nn.cu", kernel, dt, p.rows, BLOCK, [...bufs.map((b) => ({ ptr: b.ptr })), { i64: p.cols }]);
    this.count(prim);
  }

  softmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    this.rowKernel("softmax", "softmax", p, [["x", x], ["out", out]]);
  }

  softmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    this.rowKernel("softmaxBackward", "softmax_backward", p, [["y", y], ["dy", dy], ["dx", dx]]);
  }

  logSoftmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    this.rowKernel("logSoftmax", "log_softmax", p, [["x", x], ["out", out]]);
  }

  logSoftmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    this.rowKernel("logSoftmaxBackward", "log_softmax_backward", p, [["y", y], ["dy", dy], ["dx", dx]]);
  }

  logprobGather(logits: DeviceBuffer, targets: DeviceBuffer, logp: DeviceBuffer, lse: DeviceBuffer, p: LogprobParams): void {
    const { rows, cols } = p;
    this.chk.dims("logprobGather", { rows, cols });
    const TG = this.chk.ints("logprobGather", "targets", targets, rows);
    const [[L, LP, LSE], dt] = this.chk.floats("logprobGather", [["logits", logits, rows * cols], ["logp", logp, rows], ["lse", lse, rows]]);
    this.launch("nn.cu", "logprob_gather", dt, rows, BLOCK, [
      { ptr: L.ptr }, { ptr: TG.ptr }, { ptr: LP.ptr }, { ptr: LSE.ptr }, { i64: cols }, { i32: p.ignoreIndex }, { ptr: this.err },
    ]);
    this.count("logprobGather");
  }

  logprobGatherBackward(logits: DeviceBuffer, targets: DeviceBuffer, lse: DeviceBuffer, dLogp: DeviceBuffer, dLogits: DeviceBuffer, p: LogprobParams): void {
    const { rows, cols } = p;
    this.chk.dims("logprobGatherBackward", { rows, cols });
    const TG = this.chk.ints("logprobGatherBackward", "targets", targets, rows);
    const [[L, LSE, DLP, DL], dt] = this.chk.floats("logprobGatherBackward", [
      ["logits", logits, rows * cols], ["lse", lse, rows], ["dLogp", dLogp, rows], ["dLogits", dLogits, rows * cols],
    ]);
    this.launch("nn.cu", "logprob_gather_backward", dt, rows, BLOCK, [
      { ptr: L.ptr }, { ptr: TG.ptr }, { ptr: LSE.ptr }, { ptr: DLP.ptr }, { ptr: DL.ptr }, { i64: cols }, { i32: p.ignoreIndex }, { ptr: this.err },
    ]);
    this.count("logprobGatherBackward");
  }

  attention(q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, seg: AttentionSegments, out: DeviceBuffer, lse: DeviceBuffer, p: AttentionParams): void {
    attentionForward(this, q, k, v, seg, out, lse, p);
  }

  attentionBackward(
    q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, seg: AttentionSegments, out: DeviceBuffer, lse: DeviceBuffer,
    dOut: DeviceBuffer, dq: DeviceBuffer, dk: DeviceBuffer, dv: DeviceBuffer, p: AttentionParams,
  ): void {
    attentionBackward(this, q, k, v, seg, out, lse, dOut, dq, dk, dv, p);
  }

  // ---------------------------------------------------------------- optim

  adamw(param: DeviceBuffer, grad: DeviceBuffer, m: DeviceBuffer, v: DeviceBuffer, p: AdamWParams): void {
    this.chk.dims("adamw", { n: p.n });
    invariant(Number.isInteger(p.step) && p.step >= 1, () => `adamw: step ${p.step} must be a 1-based integer`);
    const [[P, G, M, V], dt] = this.chk.floats("adamw", [["param", param, p.n], ["grad", grad, p.n], ["m", m, p.n], ["v", v, p.n]]);
    // Hyper-parameters go in the buffers' dtype; the bias corrections 1 - beta^step are made in
    // double on the host once per call rather than per element.
    const s = (x: number): KernelArg => (dt === "f32" ? { f32: x } : { f64: x });
    this.launch("elementwise.cu", "adamw", dt, this.grid1d(p.n), BLOCK, [
      { ptr: P.ptr }, { ptr: G.ptr }, { ptr: M.ptr }, { ptr: V.ptr }, { i64: p.n },
      s(p.lr), s(p.beta1), s(p.beta2), s(p.eps), s(p.weightDecay), s(1 - Math.pow(p.beta1, p.step)), s(1 - Math.pow(p.beta2, p.step)),
    ]);
    this.count("adamw");
  }

  // ---------------------------------------------------------------- fused decode ops (decode.ts)

  /** Launch shape of decodeGemv (0 = automatic; benchmarks sweep it). */
  decodeTuning: fusedDecode.DecodeTuning = { unroll: 0, warps: 0 };
  /** out16 [rows, dim] bf16 = bf16(rmsnorm(x, w)), x f32: the norm and the GEMM input's cast in one kernel. */
  decodeRmsnorm(x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: { rows: number; dim: number; eps: number }): void {
    fusedDecode.decodeRmsnorm(this, x, w, out16, p);
  }

  /** Several bf16 matrices times the same <= 16 rows in one launch, with a fused epilogue (decode.ts). */
  decodeGemv(x: DeviceBuffer, mats: readonly fusedDecode.GemvTarget[], p: fusedDecode.GemvParams): void {
    fusedDecode.decodeGemv(this, x, mats, p, this.decodeTuning);
  }

  /** q/k RMSNorm per head + RoPE at each row's position, k and v written into their page slots. */
  decodeQkNormRope(
    q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, qNorm: DeviceBuffer, kNorm: DeviceBuffer,
    positions: DeviceBuffer, slots: DeviceBuffer, keys: DeviceBuffer, values: DeviceBuffer, p: fusedDecode.QkNormRopeParams,
  ): void {
    fusedDecode.decodeQkNormRope(this, q, k, v, qNorm, kNorm, positions, slots, keys, values, p);
  }

  // ---------------------------------------------------------------- decode attention (decode-attention.ts)

  /**
   * Paged decode attention over a packed work plan (engine/attention-plan.ts): every key read once
   * per step for all rows that see it, long rows split over many blocks. Sizes and layouts in
   * decode-attention.ts; capturable (reads the plan on the device).
   */
  decodeAttention(
    q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, plan: DeviceBuffer, scratch: DeviceBuffer,
    out: DeviceBuffer, lse: DeviceBuffer, p: DecodeAttentionParams,
  ): void {
    decodeAttention(this, q, k, v, plan, scratch, out, lse, p);
  }

  /** Float elements of decodeAttention's scratch at this capacity (the engine sizes it without importing cuda/). */
  decodeAttentionScratchLength(cap: DecodeAttentionCapacity, heads: number, headDim: number): number {
    return decodeAttentionScratchLength(cap, heads, headDim);
  }

  // ---------------------------------------------------------------- on-device sampling (sampling.ts)

  /**
   * Samples rows of a [rows, vocab] logits buffer on the device with the host sampler's
   * processors; `packed` is made by the engine's DeviceSampler (layout in sampling.ts and
   * sample.cu). Returns ids [B] and float64 log-probs [B]; synchronizes.
   */
  sampleRows(logits: DeviceBuffer, packed: Int32Array, p: { batch: number; vocab: number }): { ids: Int32Array; logprobs: Float64Array } {
    return sampleRows(this, logits, packed, p);
  }
}
