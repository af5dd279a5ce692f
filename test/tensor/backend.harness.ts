/**
 * The harness of the backend conformance suite: the case registry the case files fill
 * (backend-elementwise.case.ts, backend.case.ts) and `runBackendSuite`, which runs every case on
 * a backend once per dtype; per-op tolerances by dtype, the seed of each case, and `Harness`,
 * which allocates a case's buffers (inputs rounded to the case's dtype, outputs pre-filled with
 * garbage), compares them with a float64 reference and frees everything at the end. Knows only
 * the Backend API (and tensor/dtype.ts for bf16 bit patterns); no primitive's semantics.
 */
import { describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import type { Backend, DeviceBuffer, PrimitiveName } from "../../src/tensor/backend/types.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats, type Tolerance } from "../util/check-close.ts";
import { bf16BitsToF32, bf16BitsToF32Array, f32ToBf16Bits, toBf16Bits } from "../../src/tensor/dtype.ts";
import type { FloatDType } from "./backend.reference.ts";

/** Per-op tolerance for each dtype: |actual - expected| <= atol + rtol |expected|. */
export interface OpTol {
  f32: Tolerance;
  f64: Tolerance;
  bf16: Tolerance;
}

/**
 * bf16 outputs are f32 results rounded once to 8 significant bits (half an ulp: 2^-9 relative),
 * but backward cases also take forward results (y, lse, out) as bf16 inputs, each rounded once
 * and amplified by the op's conditioning, and adamw rounds its state three steps in a row: rtol
 * 2^-6 (four half ulps) covers those, and is still ~100x below what a wrong formula gives. atol
 * is the f32 case's, scaled by 256 (floor 1e-3), only where nonzero: exact cases stay exact.
 */
const BF16_RTOL = 2 ** -6;

export function tol(f32atol: number, f32rtol: number, f64atol = 1e-12, f64rtol = 1e-12): OpTol {
  return {
    f32: { atol: f32atol, rtol: f32rtol },
    f64: { atol: f64atol, rtol: f64rtol },
    bf16: {
      atol: f32atol === 0 && f32rtol === 0 ? 0 : Math.max(f32atol * 256, 1e-3),
      rtol: f32atol === 0 && f32rtol === 0 ? 0 : BF16_RTOL,
    },
  };
}

/** Single rounding of an f64 result: within an ulp or two of f32. */
export const TOL_POINTWISE = tol(1e-6, 1e-5);
/** Short reductions (rows of tens to hundreds of terms). */
export const TOL_REDUCE = tol(1e-5, 1e-5);
/** GEMM with k up to ~130 (OpenBLAS and cuBLAS accumulate in f32). */
export const TOL_MATMUL = tol(1e-4, 1e-5);
/** Attention forward and backward (softmax over tens of keys, gradients summed over tokens and heads). */
export const TOL_ATTENTION = tol(3e-5, 1e-4, 1e-12, 1e-11);

/** FNV-1a, so each case's seed comes from its name and the cases stay independent. */
export function seedOf(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Buffers, inputs and comparisons for one case; frees everything it allocated at the end. */
export class Harness {
  readonly be: Backend;
  readonly dtype: FloatDType;
  readonly rng: Rng;
  private readonly t: TestContext;
  private readonly prim: PrimitiveName;
  private readonly owned: DeviceBuffer[] = [];

  constructor(be: Backend, dtype: FloatDType, rng: Rng, t: TestContext, prim: PrimitiveName) {
    this.be = be;
    this.dtype = dtype;
    this.rng = rng;
    this.t = t;
    this.prim = prim;
  }

  /** x as the backend's dtype stores it; references run on these rounded values. */
  round(x: number): number {
    return this.dtype === "f32" ? Math.fround(x) : this.dtype === "bf16" ? bf16BitsToF32(f32ToBf16Bits(x)) : x;
  }

  randn(n: number, scale = 1): Float64Array {
    return Float64Array.from({ length: n }, () => this.round(this.rng.normal() * scale));
  }

  uniform(n: number, lo: number, hi: number): Float64Array {
    return Float64Array.from({ length: n }, () => this.round(this.rng.uniform(lo, hi)));
  }

  /** A float buffer of the case's dtype holding values (rounded to the dtype). */
  buf(values: ArrayLike<number>): DeviceBuffer {
    const b = this.be.alloc(this.dtype, values.length);
    this.owned.push(b);
    this.be.write(
      b,
      this.dtype === "f32"
        ? Float32Array.from(values)
        : this.dtype === "bf16"
          ? toBf16Bits(Float64Array.from(values))
          : Float64Array.from(values),
    );
    return b;
  }

  /** A float buffer of any dtype holding values (rounded to it), for the dtype-mix cases. */
  bufAs(dtype: FloatDType, values: ArrayLike<number>): DeviceBuffer {
    const b = this.be.alloc(dtype, values.length);
    this.owned.push(b);
    const v = Float64Array.from(values);
    this.be.write(b, dtype === "f32" ? Float32Array.from(v) : dtype === "bf16" ? toBf16Bits(v) : v);
    return b;
  }

  ibuf(values: ArrayLike<number>): DeviceBuffer {
    const b = this.be.alloc("i32", values.length);
    this.owned.push(b);
    this.be.write(b, Int32Array.from(values));
    return b;
  }

  /** An output buffer of n elements pre-filled with garbage, so an op must overwrite it. */
  out(n: number, fillValue?: number): DeviceBuffer {
    return this.buf(fillValue === undefined ? this.randn(n, 100) : new Float64Array(n).fill(fillValue));
  }

  /** A buffer's values as float64 (bf16 bit patterns widened). */
  get(b: DeviceBuffer): Float64Array {
    const host = this.be.read(b);
    return Float64Array.from(b.dtype === "bf16" ? bf16BitsToF32Array(host as Uint16Array) : host);
  }

  /** checkClose against the reference, with the max/mean diff written to the test report. */
  close(label: string, actual: DeviceBuffer | ArrayLike<number>, expected: ArrayLike<number>, t: OpTol): void {
    const a = ArrayBuffer.isView(actual) || Array.isArray(actual) ? (actual as ArrayLike<number>) : this.get(actual as DeviceBuffer);
    const stats = checkClose(`${this.prim} ${this.dtype}: ${label}`, a, expected, t[this.dtype]);
    this.t.diagnostic(formatStats(label, stats));
  }

  dispose(): void {
    for (const b of this.owned) this.be.free(b);
  }
}

// ---------------------------------------------------------------- the case registry

export interface BackendSuiteOptions {
  /** Primitives this backend cannot run yet, each with the reason printed in the report. */
  skip?: Partial<Record<PrimitiveName, string>>;
  /** Float dtypes to run every case in (default all three). */
  dtypes?: FloatDType[];
}

interface Case {
  prim: PrimitiveName;
  name: string;
  run: (h: Harness) => void;
}

/** Every registered case, in registration order (the case files register at import). */
const CASES: Case[] = [];

/** Registers a case of primitive `prim`; the suite asserts prim's counter rose while it ran. */
export function addCase(prim: PrimitiveName, name: string, run: (h: Harness) => void): void {
  CASES.push({ prim, name, run });
}

/**
 * Registers every case as a node:test test, once per dtype, under `describe(name dtype)`.
 * makeBackend is called once, lazily, by the first case that runs. Each case asserts the
 * backend's counter for its primitive rose, so a silent fallback cannot pass.
 */
export function runBackendSuite(name: string, makeBackend: () => Backend, opts: BackendSuiteOptions = {}): void {
  let backend: Backend | undefined;
  const get = (): Backend => (backend ??= makeBackend());
  for (const dtype of opts.dtypes ?? (["f32", "f64", "bf16"] as const)) {
    describe(`${name} [${dtype}]`, () => {
      for (const c of CASES) {
        const skip = opts.skip?.[c.prim];
        test(`${c.prim}: ${c.name}`, skip ? { skip } : {}, (t) => {
          const be = get();
          const h = new Harness(be, dtype, new Rng(seedOf(`${c.prim}/${c.name}/${dtype}`)), t, c.prim);
          const before = be.counters()[c.prim] ?? 0;
          try {
            c.run(h);
          } finally {
            h.dispose();
          }
          const after = be.counters()[c.prim] ?? 0;
          assert.ok(after > before, `${c.prim}: counter did not rise (${before} -> ${after}): did the op run at all?`);
        });
      }
    });
  }
}
