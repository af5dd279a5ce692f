/**
 * Optimization: AdamW (decoupled weight decay, bias-corrected moments; one backend primitive per
 * parameter), global-norm gradient clipping, and learning-rate schedules (constant; linear
 * warm-up then cosine decay to a min-lr ratio, as verl's `get_cosine_schedule_with_warmup`).
 * This file knows tensors and the backend contract, nothing about models or runs.
 */
import type { DeviceBuffer } from "./backend/types.ts";
import { Tensor } from "./tensor.ts";
import { noGrad } from "./autograd.ts";
import { invariant } from "../util/index.ts";

export interface AdamWOptions {
  lr: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Serializable optimizer state (moments as host arrays, in parameter order). */
export interface AdamWState {
  step: number;
  m: Array<Float32Array | Float64Array>;
  v: Array<Float32Array | Float64Array>;
}

export class AdamW {
  readonly params: readonly Tensor[];
  lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** Number of steps taken (the next one is numSteps + 1, for bias correction). */
  numSteps = 0;
  private readonly m: DeviceBuffer[];
  private readonly v: DeviceBuffer[];

  constructor(params: readonly Tensor[], opts: AdamWOptions) {
    this.params = params;
    this.lr = opts.lr;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    for (const p of params) {
      invariant(p.offset === 0 && p.isContiguous(), "AdamW: parameters must be contiguous tensors");
      invariant(p.dtype !== "i32", "AdamW: integer parameter");
    }
    this.m = params.map((p) => zeroed(p));
    this.v = params.map((p) => zeroed(p));
  }

  /** One update of every parameter that has a gradient, at `lr` (default: the current `this.lr`). */
  step(lr = this.lr): void {
    this.numSteps += 1;
    noGrad(() => {
      this.params.forEach((p, i) => {
        if (!p.grad) return;
        const g = p.grad.contiguous();
        p.backend.adamw(p.buffer, g.buffer, this.m[i]!, this.v[i]!, {
          n: p.size,
          lr,
          beta1: this.beta1,
          beta2: this.beta2,
          eps: this.eps,
          weightDecay: this.weightDecay,
          step: this.numSteps,
        });
      });
    });
  }

  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }

  state(): AdamWState {
    return {
      step: this.numSteps,
      m: this.params.map((p, i) => p.backend.read(this.m[i]!) as Float32Array | Float64Array),
      v: this.params.map((p, i) => p.backend.read(this.v[i]!) as Float32Array | Float64Array),
    };
  }

  loadState(state: AdamWState): void {
    invariant(
      state.m.length === this.params.length && state.v.length === this.params.length,
      () => `optimizer state has ${state.m.length} moments for ${this.params.length} parameters`,
    );
    this.numSteps = state.step;
    this.params.forEach((p, i) => {
      invariant(state.m[i]!.length === p.size, () => `optimizer moment ${i} has ${state.m[i]!.length} values, parameter ${p.size}`);
      p.backend.write(this.m[i]!, state.m[i]!);
      p.backend.write(this.v[i]!, state.v[i]!);
    });
  }
}

function zeroed(p: Tensor): DeviceBuffer {
  const buf = p.backend.alloc(p.dtype, p.size);
  p.backend.fill(buf, 0);
  return buf;
}

/**
 * Scales every gradient so that their global L2 norm is at most maxNorm (as torch's
 * clip_grad_norm_); returns the norm before clipping. Non-finite norms leave gradients as they are.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  const norm = gradNorm(params);
  if (Number.isFinite(norm) && norm > maxNorm) {
    const scale = maxNorm / (norm + 1e-6);
    for (const p of params) {
      if (!p.grad) continue;
      const g = p.grad.contiguous();
      g.backend.scalar("mul", g.buffer, scale, g.buffer);
      p.grad = g;
    }
  }
  return norm;
}

/** Global L2 norm of all gradients. */
export function gradNorm(params: readonly Tensor[]): number {
  let total = 0;
  noGrad(() => {
    for (const p of params) {
      if (!p.grad) continue;
      const g = p.grad.contiguous();
      const sq = Tensor.empty(g.shape, { backend: g.backend, dtype: g.dtype });
      g.backend.unary("square", g.buffer, sq.buffer);
      const s = Tensor.empty([1], { backend: g.backend, dtype: g.dtype });
      g.backend.reduceSum(sq.buffer, s.buffer, { outer: 1, reduce: g.size, inner: 1 });
      total += s.item();
    }
  });
  return Math.sqrt(total);
}

/** A learning rate as a function of the 0-based step. */
export type LrSchedule = (step: number) => number;

export function constantLr(lr: number): LrSchedule {
  return () => lr;
}

export interface CosineOptions {
  lr: number;
  totalSteps: number;
  warmupSteps?: number;
  /** The floor as a fraction of lr (verl's min_lr_ratio). */
  minLrRatio?: number;
  /** Number of cosine half-periods... as verl: 0.5 means decay once from lr to the floor. */
  numCycles?: number;
}

/**
 * Linear warm-up from 0 to lr over warmupSteps, then cosine decay to minLrRatio * lr at
 * totalSteps (verl `get_cosine_schedule_with_warmup`).
 */
export function cosineLr(opts: CosineOptions): LrSchedule {
  const warmup = opts.warmupSteps ?? 0;
  const minRatio = opts.minLrRatio ?? 0;
  const cycles = opts.numCycles ?? 0.5;
  invariant(opts.totalSteps > 0, "cosineLr: totalSteps must be positive");
  return (step) => {
    if (step < warmup) return (opts.lr * step) / Math.max(1, warmup);
    const progress = Math.min(1, (step - warmup) / Math.max(1, opts.totalSteps - warmup));
    const x = 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress));
    return opts.lr * Math.max(0, x * (1 - minRatio) + minRatio);
  };
}
