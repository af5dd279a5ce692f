/**
 * Tensor: a shape, strides and an offset over one backend buffer, plus the autograd fields
 * (`requiresGrad`, `grad`, the node that made it). Views (reshape of a contiguous tensor,
 * permute, transpose) share the buffer; every op that needs a contiguous operand calls
 * `contiguous()`, which copies only when it must. This file knows the backend contract, not any
 * particular backend's internals, and nothing about models or files.
 */
import type { Backend, DeviceBuffer, DType, HostArray } from "./backend/types.ts";
import { invariant } from "../util/index.ts";
import type { Rng } from "../util/index.ts";
import type { GradNode } from "./autograd.ts";
import { backward as runBackward, isGradEnabled, record } from "./autograd.ts";
import { adopt, markForeign, release } from "./scope.ts";

/**
 * How a new tensor is made. `backend` is required: there is no default backend (no module state),
 * so a process can hold a CPU backend for reference checks beside a CUDA one for the run, and a
 * tensor never lands on a backend its caller did not name. Ops take theirs from their inputs.
 */
export interface TensorOptions {
  backend: Backend;
  dtype?: DType;
  requiresGrad?: boolean;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Row-major strides of a contiguous tensor of this shape. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    invariant(Number.isInteger(d) && d >= 0, () => `bad tensor shape [${shape.join(", ")}]`);
  }
}

export class Tensor {
  readonly backend: Backend;
  readonly buffer: DeviceBuffer;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  /** Element offset of index [0, ..., 0] in the buffer. */
  readonly offset: number;
  readonly dtype: DType;
  requiresGrad: boolean;
  /** Accumulated gradient of a leaf after backward(). */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when it was recorded for autograd. */
  node: GradNode | null = null;

  constructor(
    backend: Backend,
    buffer: DeviceBuffer,
    shape: readonly number[],
    opts: { strides?: readonly number[]; offset?: number; requiresGrad?: boolean } = {},
  ) {
    checkShape(shape);
    this.backend = backend;
    this.buffer = buffer;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(opts.strides ? [...opts.strides] : contiguousStrides(shape));
    this.offset = opts.offset ?? 0;
    this.dtype = buffer.dtype;
    this.requiresGrad = opts.requiresGrad ?? false;
    invariant(this.strides.length === shape.length, "strides and shape differ in rank");
    adopt(this); // the first tensor over a fresh buffer owns it in the open tidy scope (scope.ts)
  }

  get size(): number {
    return numel(this.shape);
  }

  get ndim(): number {
    return this.shape.length;
  }

  // ---- construction

  static empty(shape: readonly number[], opts: TensorOptions): Tensor {
    const buf = opts.backend.alloc(opts.dtype ?? "f32", numel(shape));
    return new Tensor(opts.backend, buf, shape, { requiresGrad: opts.requiresGrad });
  }

  static zeros(shape: readonly number[], opts: TensorOptions): Tensor {
    const t = Tensor.empty(shape, opts);
    t.backend.fill(t.buffer, 0);
    return t;
  }

  static full(shape: readonly number[], value: number, opts: TensorOptions): Tensor {
    const t = Tensor.empty(shape, opts);
    t.backend.fill(t.buffer, value);
    return t;
  }

  static fromArray(data: ArrayLike<number>, shape: readonly number[], opts: TensorOptions): Tensor {
    const n = numel(shape);
    invariant(data.length === n, () => `fromArray: ${data.length} values for shape [${shape.join(", ")}] (${n})`);
    const dtype = opts.dtype ?? (data instanceof Float64Array ? "f64" : data instanceof Int32Array ? "i32" : "f32");
    const t = Tensor.empty(shape, { ...opts, dtype });
    const host = dtype === "f64" ? Float64Array.from(data) : dtype === "i32" ? Int32Array.from(data) : Float32Array.from(data);
    t.backend.write(t.buffer, host);
    return t;
  }

  static randn(shape: readonly number[], rng: Rng, opts: TensorOptions & { std?: number; mean?: number }): Tensor {
    const n = numel(shape);
    const std = opts.std ?? 1;
    const mean = opts.mean ?? 0;
    const host = opts.dtype === "f64" ? new Float64Array(n) : new Float32Array(n);
    for (let i = 0; i < n; i++) host[i] = mean + std * rng.normal();
    return Tensor.fromArray(host, shape, opts);
  }

  /**
   * A view of the first prod(shape) elements of an existing buffer (no copy, no grad). The buffer
   * stays its allocator's: no tidy scope frees it.
   */
  static fromBuffer(backend: Backend, buffer: DeviceBuffer, shape: readonly number[]): Tensor {
    invariant(numel(shape) <= buffer.length, () => `fromBuffer: shape [${shape}] exceeds buffer of ${buffer.length}`);
    markForeign(buffer);
    return new Tensor(backend, buffer, shape);
  }

  // ---- host access

  /** A contiguous host copy of the tensor's elements. */
  toArray(): HostArray {
    const c = this.contiguous();
    return c.backend.read(c.buffer, c.offset, c.size);
  }

  /** The value of a one-element tensor. */
  item(): number {
    invariant(this.size === 1, () => `item() on a tensor of shape [${this.shape.join(", ")}]`);
    return this.backend.read(this.buffer, this.offset, 1)[0]!;
  }

  // ---- views

  isContiguous(): boolean {
    const want = contiguousStrides(this.shape);
    for (let i = 0; i < this.shape.length; i++) {
      if (this.shape[i]! > 1 && this.strides[i] !== want[i]) return false;
    }
    return true;
  }

  /** This tensor if it is contiguous from element 0 of its buffer, else a contiguous copy (differentiable). */
  contiguous(): Tensor {
    if (this.offset === 0 && this.isContiguous()) return this;
    const out = Tensor.empty(this.shape, { backend: this.backend, dtype: this.dtype });
    this.backend.copy(this.buffer, out.buffer, {
      shape: this.shape,
      srcStrides: this.strides,
      srcOffset: this.offset,
      dstOffset: 0,
    });
    return record("contiguous", out, [this]);
  }

  /** Same elements, new shape (one dimension may be -1). Copies first if not contiguous. */
  reshape(shape: readonly number[]): Tensor {
    const resolved = resolveShape(shape, this.size);
    const src = this.isContiguous() ? this : this.contiguous();
    const out = new Tensor(src.backend, src.buffer, resolved, { offset: src.offset });
    return record("reshape", out, [src]);
  }

  permute(dims: readonly number[]): Tensor {
    invariant(
      dims.length === this.ndim && [...dims].sort((a, b) => a - b).every((d, i) => d === i),
      () => `permute: [${dims}] is not a permutation of ${this.ndim} dims`,
    );
    const out = new Tensor(
      this.backend,
      this.buffer,
      dims.map((d) => this.shape[d]!),
      {
        strides: dims.map((d) => this.strides[d]!),
        offset: this.offset,
      },
    );
    return record("permute", out, [this], { dims });
  }

  transpose(a: number, b: number): Tensor {
    const dims = [...Array(this.ndim).keys()];
    const ia = a < 0 ? a + this.ndim : a;
    const ib = b < 0 ? b + this.ndim : b;
    [dims[ia], dims[ib]] = [dims[ib]!, dims[ia]!];
    return this.permute(dims);
  }

  /** The same storage, cut off from the graph. */
  detach(): Tensor {
    return new Tensor(this.backend, this.buffer, this.shape, { strides: this.strides, offset: this.offset });
  }

  // ---- autograd and lifetime

  /** Backpropagates from this tensor (a scalar unless `grad` is given) into every leaf's `.grad`. */
  backward(grad?: Tensor): void {
    runBackward(this, grad);
  }

  /**
   * Returns the buffer to the backend. The tensor (and every view of it) must not be used after;
   * a second dispose, or one after a tidy scope freed the buffer, is an InvariantError.
   */
  dispose(): void {
    release(this);
  }

  toString(): string {
    return `Tensor(shape=[${this.shape.join(", ")}], dtype=${this.dtype}, backend=${this.backend.name})`;
  }
}

/** Resolves one -1 in a requested shape against a known element count. */
export function resolveShape(shape: readonly number[], size: number): number[] {
  const out = [...shape];
  const free = out.indexOf(-1);
  if (free >= 0) {
    const known = out.reduce((a, d, i) => (i === free ? a : a * d), 1);
    invariant(known > 0 && size % known === 0, () => `reshape: cannot infer -1 in [${shape}] for ${size} elements`);
    out[free] = size / known;
  }
  invariant(numel(out) === size, () => `reshape: [${shape}] does not hold ${size} elements`);
  return out;
}

/** True when new tensors from ops on these inputs must be recorded for autograd. */
export function needsGrad(...inputs: Array<Tensor | null | undefined>): boolean {
  return isGradEnabled() && inputs.some((t) => t?.requiresGrad);
}
