/**
 * cuBLAS (libcublas.so.13) through koffi: one handle bound to our stream, and the strided-batched
 * GEMM in f32, f64 and bf16 (bf16 inputs, bf16 or f32 output, fp32 accumulation), all through
 * cublasGemmStridedBatchedEx. The row-major to column-major translation is done here, once:
 * C = op(A) op(B) in row-major is C^T = op(B)^T op(A)^T in column-major, so cuBLAS gets B first.
 *
 * cuBLASLt is not bound yet: cublasGemmStridedBatchedEx reaches the same Hopper kernels for the
 * shapes used so far (DESIGN.md: 793 TFLOP/s bf16); Lt becomes worth it with fused epilogues.
 * Knows GEMM shapes and device addresses; nothing about buffers or dtypes of the contract.
 */
import type * as Koffi from "koffi";
import { type CFunction, CUDA_ENV, check, openLibrary, toNumber } from "./libs.ts";

/** cudaDataType_t (library_types.h). */
export const CUDA_R_32F = 0;
export const CUDA_R_64F = 1;
export const CUDA_R_16BF = 14;
/** cublasComputeType_t: plain fp32 (no TF32 shortcut, so f32 results match the CPU reference) and fp64. */
const CUBLAS_COMPUTE_32F = 68;
const CUBLAS_COMPUTE_64F = 70;
const CUBLAS_GEMM_DEFAULT = -1;
const CUBLAS_OP_N = 0;
const CUBLAS_OP_T = 1;

export type GemmType = "f32" | "f64" | "bf16";

export const CUBLAS_SONAMES = ["libcublas.so.13", "libcublas.so.12", "libcublas.so"];

/** A row-major strided-batched GEMM on device addresses (element strides, like MatmulParams). */
export interface RowMajorGemm {
  /** Type of A and B (and of C unless cType says otherwise). */
  type: GemmType;
  /** Type of C when it differs: only "f32" with bf16 inputs (fp32 accumulation, fp32 out). */
  cType?: GemmType;
  batch: number;
  m: number;
  n: number;
  k: number;
  transA: boolean;
  transB: boolean;
  a: number;
  b: number;
  c: number;
  strideA: number;
  strideB: number;
  strideC: number;
  alpha: number;
  beta: number;
}

export class Cublas {
  readonly libraryPath: string;
  private readonly f: Record<string, CFunction>;
  private readonly handle: number;
  private readonly scalars32 = new Float32Array(2);
  private readonly scalars64 = new Float64Array(2);

  static load(stream: number): { cublas: Cublas; why: null } | { cublas: null; why: string } {
    const l = openLibrary("cuBLAS library", CUDA_ENV.libcublas, CUBLAS_SONAMES, "NPR_LIBCUBLAS");
    if (!l.lib) return { cublas: null, why: l.why };
    return { cublas: new Cublas(l.lib, l.path, stream), why: null };
  }

  private constructor(lib: Koffi.LibraryHandle, libraryPath: string, stream: number) {
    this.libraryPath = libraryPath;
    const u64 = "uint64_t";
    this.f = {
      cublasCreate_v2: lib.func("cublasCreate_v2", "int", ["void *"]),
      cublasDestroy_v2: lib.func("cublasDestroy_v2", "int", [u64]),
      cublasSetStream_v2: lib.func("cublasSetStream_v2", "int", [u64, u64]),
      cublasGetStatusName: lib.func("cublasGetStatusName", "const char *", ["int"]),
      cublasGemmStridedBatchedEx: lib.func("cublasGemmStridedBatchedEx", "int", [
        u64,
        "int",
        "int",
        "int",
        "int",
        "int",
        "void *",
        u64,
        "int",
        "int",
        "int64_t",
        u64,
        "int",
        "int",
        "int64_t",
        "void *",
        u64,
        "int",
        "int",
        "int64_t",
        "int",
        "int",
        "int",
      ]),
    };
    const out = new BigUint64Array(1);
    this.call("cublasCreate_v2", out);
    this.handle = toNumber(out[0]);
    this.call("cublasSetStream_v2", this.handle, stream);
  }

  readonly statusName = (s: number): string => (this.f["cublasGetStatusName"](s) as string | null) ?? `CUBLAS status ${s}`;

  private call(name: string, ...args: unknown[]): void {
    check(name, this.f[name](...args) as number, this.statusName);
  }

  /**
   * C = alpha op(A) op(B) + beta C, row-major, for each batch item. beta 0 never reads C
   * (cuBLAS's documented behaviour), so C may hold NaN.
   */
  gemm(g: RowMajorGemm): void {
    if (g.batch === 0 || g.m === 0 || g.n === 0) return;
    const typeOf = (t: GemmType) => (t === "f64" ? CUDA_R_64F : t === "bf16" ? CUDA_R_16BF : CUDA_R_32F);
    const dt = typeOf(g.type);
    const ct = typeOf(g.cType ?? g.type);
    const compute = g.type === "f64" ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
    // Scalars are host memory in the compute type (CUBLAS_POINTER_MODE_HOST, the default).
    const sc = g.type === "f64" ? this.scalars64 : this.scalars32;
    sc[0] = g.alpha;
    sc[1] = g.beta;
    const alpha = sc.subarray(0, 1);
    const beta = sc.subarray(1, 2);
    // Row-major leading dimensions; max(1, .) because cuBLAS rejects ld 0 even for empty k.
    const lda = Math.max(1, g.transA ? g.m : g.k);
    const ldb = Math.max(1, g.transB ? g.k : g.n);
    const ldc = Math.max(1, g.n);
    this.call(
      "cublasGemmStridedBatchedEx",
      this.handle,
      g.transB ? CUBLAS_OP_T : CUBLAS_OP_N,
      g.transA ? CUBLAS_OP_T : CUBLAS_OP_N,
      g.n,
      g.m,
      g.k,
      alpha,
      g.b,
      dt,
      ldb,
      g.strideB,
      g.a,
      dt,
      lda,
      g.strideA,
      beta,
      g.c,
      ct,
      ldc,
      g.strideC,
      g.batch,
      compute,
      CUBLAS_GEMM_DEFAULT,
    );
  }

  destroy(): void {
    this.call("cublasDestroy_v2", this.handle);
  }
}
