/**
 * The CPU backend's GEMM dispatcher: validates a strided-batch `MatmulParams` against the typed
 * arrays it addresses, then runs every batch item through OpenBLAS (openblas.ts) when it loaded,
 * or through the blocked TypeScript kernel (gemm-ts.ts) otherwise. Which path an instance takes
 * is fixed at construction and reported, so a silent fallback is visible.
 *
 * It knows typed arrays and `MatmulParams` only: no DeviceBuffer, no counters, no Tensor.
 */

import { invariant } from "../../../util/index.ts";
import type { MatmulParams } from "../types.ts";
import { GemmTs, scaleC } from "./gemm-ts.ts";
import type { GemmTsCall } from "./gemm-ts.ts";
import { loadOpenBlas } from "./openblas.ts";
import type { OpenBlas } from "./openblas.ts";

export type GemmPath = "openblas" | "typescript";

export interface CpuGemmOptions {
  /** Try OpenBLAS (false: always the TypeScript kernel, as with NPR_BLAS=0). */
  useBlas: boolean;
  /** Library path or soname (default libopenblas.so.0 on the loader's path). */
  openblasPath?: string | null;
  /** Threads for one product: OpenBLAS's count (process-wide) and the TypeScript kernel's. */
  threads?: number | null;
}

type Floats = Float32Array | Float64Array;

// CBLAS takes 32-bit ints for sizes and leading dimensions.
const INT32_MAX = 2 ** 31 - 1;

export class CpuGemm {
  /** Which path this instance uses. */
  readonly path: GemmPath;
  /** When path is "typescript": why (forced off, or the load error); null on the OpenBLAS path. */
  readonly whyNoBlas: string | null;
  private readonly blas: OpenBlas | null;
  private readonly ts: GemmTs;

  constructor(opts: CpuGemmOptions) {
    if (opts.useBlas) {
      const loaded = loadOpenBlas({ path: opts.openblasPath, threads: opts.threads });
      this.blas = loaded.blas;
      this.whyNoBlas = loaded.why;
    } else {
      this.blas = null;
      this.whyNoBlas = "OpenBLAS turned off (useBlas: false, e.g. NPR_BLAS=0)";
    }
    this.path = this.blas ? "openblas" : "typescript";
    // Workers start only on the first large product, so this costs nothing on the BLAS path.
    this.ts = new GemmTs({ threads: opts.threads });
  }

  /**
   * Runs fn with OpenBLAS at n threads, restoring its count after (the count is process-wide).
   * Kernels that call OpenBLAS from several threads of their own run under n = 1, so concurrent
   * calls do not contend for OpenBLAS's thread pool. On the TypeScript path it just runs fn.
   */
  withBlasThreads<T>(n: number, fn: () => T): T {
    const before = this.blas?.getThreads() ?? null;
    if (this.blas === null || before === null || before === n) return fn();
    this.blas.setThreads(n);
    try {
      return fn();
    } finally {
      this.blas.setThreads(before);
    }
  }

  /** C = alpha op(A) op(B) + beta C over a strided batch, row-major, f32 or f64 (all three same type). */
  run(a: Floats, b: Floats, c: Floats, p: MatmulParams): void {
    const { batch, m, n, k, transA, transB } = p;
    const offA = p.offsetA ?? 0;
    const offB = p.offsetB ?? 0;
    const offC = p.offsetC ?? 0;
    const alpha = p.alpha ?? 1;
    const beta = p.beta ?? 0;
    const what = () =>
      `matmul batch=${batch} m=${m} n=${n} k=${k} transA=${transA} transB=${transB} ` +
      `strides A/B/C=${p.strideA}/${p.strideB}/${p.strideC} offsets A/B/C=${offA}/${offB}/${offC}`;
    for (const [name, v] of Object.entries({
      batch,
      m,
      n,
      k,
      strideA: p.strideA,
      strideB: p.strideB,
      strideC: p.strideC,
      offA,
      offB,
      offC,
    })) {
      invariant(Number.isSafeInteger(v) && v >= 0, () => `${what()}: ${name} must be a non-negative integer, got ${v}`);
    }
    invariant(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX, () => `${what()}: a dimension exceeds 2^31 - 1`);
    invariant(Number.isFinite(alpha) && Number.isFinite(beta), () => `${what()}: alpha ${alpha} and beta ${beta} must be finite`);
    const f64 = c instanceof Float64Array;
    invariant(
      (c instanceof Float32Array || f64) && a.constructor === c.constructor && b.constructor === c.constructor,
      () =>
        `${what()}: A, B and C must all be Float32Array or all Float64Array, got ${a.constructor.name}, ${b.constructor.name}, ${c.constructor.name}`,
    );
    if (batch === 0 || m === 0 || n === 0) return;

    // Every element a product touches must lie inside its buffer: an out-of-range read of a typed
    // array is a silent NaN in TypeScript and a wild pointer in OpenBLAS.
    const readsAB = k > 0 && alpha !== 0;
    if (readsAB) {
      checkRange("A", a, offA, p.strideA, batch, m * k, () => `${what()}: A is op(A) [m=${m}, k=${k}] per item`);
      checkRange("B", b, offB, p.strideB, batch, k * n, () => `${what()}: B is op(B) [k=${k}, n=${n}] per item`);
    }
    checkRange("C", c, offC, p.strideC, batch, m * n, () => `${what()}: C is [m=${m}, n=${n}] per item`);
    // Items of C must not overlap (stride 0 would make the result depend on the order in which
    // items run, which a GPU backend does not promise), nor may C overlap A or B.
    invariant(batch === 1 || p.strideC >= m * n, () => `${what()}: batch items of C overlap (strideC < m*n)`);
    if (readsAB) {
      const cBytes = byteRange(c, offC, p.strideC, batch, m * n);
      invariant(!overlaps(cBytes, byteRange(a, offA, p.strideA, batch, m * k)), () => `${what()}: C overlaps A in memory`);
      invariant(!overlaps(cBytes, byteRange(b, offB, p.strideB, batch, k * n)), () => `${what()}: C overlaps B in memory`);
    }

    // Row-major leading dimensions of contiguous operands.
    const lda = transA ? m : k;
    const ldb = transB ? k : n;
    const ldc = n;
    for (let t = 0; t < batch; t++) {
      const oa = offA + t * p.strideA;
      const ob = offB + t * p.strideB;
      const oc = offC + t * p.strideC;
      if (this.blas && readsAB) {
        // A typed array passes as a pointer to its first element, so offsets become subarrays
        // (views, no copy). k = 0 and alpha = 0 never get here: CBLAS rejects lda = 0 (k = 0)
        // with a message on stderr, and both reduce to scaling C.
        const [A, B, C] = [a.subarray(oa), b.subarray(ob), c.subarray(oc)];
        if (f64) {
          this.blas.dgemm(transA, transB, m, n, k, alpha, A as Float64Array, lda, B as Float64Array, ldb, beta, C as Float64Array, ldc);
        } else {
          this.blas.sgemm(transA, transB, m, n, k, alpha, A as Float32Array, lda, B as Float32Array, ldb, beta, C as Float32Array, ldc);
        }
      } else if (!readsAB) {
        scaleC(c, oc, m * n, beta);
      } else {
        const call: GemmTsCall = { m, n, k, transA, transB, alpha, beta, a, offA: oa, lda, b, offB: ob, ldb, c, offC: oc, ldc };
        this.ts.run(call);
      }
    }
  }
}

/** Checks that items [0, batch) of `size` elements at off + t * stride all lie inside x. */
function checkRange(name: string, x: Floats, off: number, stride: number, batch: number, size: number, what: () => string): void {
  if (size === 0) return;
  const end = off + (batch - 1) * stride + size;
  invariant(end <= x.length, () => `${what()}: needs ${name}[${off} .. ${end}) but buffer ${name} has length ${x.length}`);
}

/** The bytes of x's underlying buffer that items [0, batch) span: [start, end) plus the buffer. */
function byteRange(x: Floats, off: number, stride: number, batch: number, size: number) {
  const bpe = x.BYTES_PER_ELEMENT;
  const start = x.byteOffset + off * bpe;
  return { buffer: x.buffer, start, end: start + ((batch - 1) * stride + size) * bpe };
}

function overlaps(p: ReturnType<typeof byteRange>, q: ReturnType<typeof byteRange>): boolean {
  return p.buffer === q.buffer && p.start < q.end && q.start < p.end && p.end > p.start && q.end > q.start;
}
