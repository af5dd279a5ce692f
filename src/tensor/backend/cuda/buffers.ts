/**
 * CUDA buffers and the host-side argument checks of the CUDA backend. A CudaBuffer is a device
 * address plus dtype and length; ArgChecks validates an op's buffers (ownership, use after free,
 * dtype agreement, minimum sizes) and sizes before anything is queued, with the CPU backend's
 * messages, so a bug in the tensor layer reads the same whichever backend caught it. Also packs
 * strided views into the `Strided` struct of kernels/common.cuh.
 *
 * Knows no CUDA calls (the addresses are opaque numbers here) and nothing about Tensors.
 */
import { invariant } from "../../../util/index.ts";
import { collapseDims } from "../extents.ts";
import type { DeviceBuffer, DType } from "../types.ts";
import type { KernelDType } from "./compile.ts";
import type { KernelArg } from "./ffi/driver.ts";

export const ELEM_BYTES: Record<DType, number> = { f32: 4, f64: 8, i32: 4, bf16: 2 };
/** MAX_RANK in common.cuh: strided views deeper than this (after collapsing) are refused. */
const MAX_RANK = 8;

export class CudaBuffer implements DeviceBuffer {
  readonly dtype: DType;
  readonly length: number;
  /** Device address of element 0. */
  readonly ptr: number;
  /** The backend that allocated it (buffers never cross backends, nor devices). */
  readonly owner: object;
  /**
   * The allocation a view lies in (CudaBackend.view), or null for an allocation of its own. A
   * view is never freed itself and dies with its parent.
   */
  readonly parent: CudaBuffer | null;
  private dead = false;
  constructor(owner: object, dtype: DType, length: number, ptr: number, parent: CudaBuffer | null = null) {
    this.owner = owner;
    this.dtype = dtype;
    this.length = length;
    this.ptr = ptr;
    this.parent = parent;
  }

  get freed(): boolean {
    return this.dead || (this.parent !== null && this.parent.freed);
  }

  set freed(v: boolean) {
    this.dead = v;
  }
}

export function isCount(n: number): boolean {
  return Number.isInteger(n) && n >= 0;
}

/** One float argument of an op: [name, buffer, minimum number of elements]. */
export type FloatArg = readonly [name: string, buf: DeviceBuffer, minLength: number];

export class ArgChecks {
  private readonly owner: object;
  constructor(owner: object) {
    this.owner = owner;
  }

  live(op: string, arg: string, buf: DeviceBuffer): CudaBuffer {
    invariant(buf instanceof CudaBuffer && buf.owner === this.owner, () => `${op}: ${arg} is not a buffer of this cuda backend`);
    invariant(!buf.freed, () => `${op}: ${arg} was used after free (${buf.dtype}[${buf.length}])`);
    return buf;
  }

  sized(op: string, arg: string, buf: DeviceBuffer, minLength: number): CudaBuffer {
    const b = this.live(op, arg, buf);
    invariant(b.length >= minLength, () => `${op}: ${arg} has ${b.length} elements, the sizes given need at least ${minLength}`);
    return b;
  }

  /**
   * Float arguments that must share one dtype (f32 or f64) and hold enough elements; returns the
   * buffers and that dtype, which picks the kernel instance (name_f32 / name_f64).
   */
  floats(op: string, args: readonly FloatArg[]): [CudaBuffer[], KernelDType] {
    // The first argument fixes the dtype, so messages read "b is f64 but a is f32".
    const first = args[0];
    const dtype = this.live(op, first[0], first[1]).dtype;
    invariant(dtype === "f32" || dtype === "f64", () => `${op}: ${first[0]} is ${dtype}, expected f32 or f64`);
    const bufs = args.map(([arg, buf, min]) => {
      const b = this.sized(op, arg, buf, min);
      invariant(b.dtype === dtype, () => `${op}: ${arg} is ${b.dtype} but ${first[0]} is ${dtype} (float args must share one dtype)`);
      return b;
    });
    return [bufs, dtype];
  }

  ints(op: string, arg: string, buf: DeviceBuffer, minLength: number): CudaBuffer {
    const b = this.sized(op, arg, buf, minLength);
    invariant(b.dtype === "i32", () => `${op}: ${arg} is ${b.dtype}, expected i32`);
    return b;
  }

  dims(op: string, p: Record<string, number>): void {
    for (const [key, n] of Object.entries(p)) invariant(isCount(n), () => `${op}: ${key} = ${n} is not a non-negative integer`);
  }

  /**
   * Collapses a strided view (as the CPU backend does, so runs of contiguous dims cost one index
   * step) and packs it as a by-value struct of int64: rank, shape[8], then one [8] stride vector
   * per operand. Two operands make the `Strided` struct of common.cuh (rank, shape, sa, sb);
   * three make elementwise.cu's `Strided3` (rank, shape, sm, sa, sb).
   */
  strided(op: string, shape: readonly number[], ...strides: ReadonlyArray<readonly number[]>): KernelArg {
    const c = collapseDims(shape, strides);
    const rank = c.shape.length;
    invariant(rank <= MAX_RANK, () => `${op}: a view of rank ${rank} after collapsing exceeds ${MAX_RANK}`);
    const pad = (v: number[]) => [...v, ...new Array<number>(MAX_RANK - v.length).fill(0)];
    return { i64s: [rank, ...pad(c.shape), ...c.strides.flatMap(pad)] };
  }
}
