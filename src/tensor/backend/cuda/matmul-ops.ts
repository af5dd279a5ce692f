/**
 * GEMMs on the CUDA backend: the contract's strided-batched matmul in f32, f64 or mixed precision
 * (bf16 A and B, f32 or bf16 C, fp32 accumulation) through cuBLAS, and the weight-streaming decode
 * GEMV of convert.cu for the few-row bf16 products a decode step makes when `gemvMaxRows` allows.
 * CudaBackend.matmul delegates here (the fused decode step has its own GEMVs: decode.ts).
 * Knows the contract's matmul semantics and the launch shapes; nothing of models.
 */
import { matmulExtents } from "../extents.ts";
import type { DeviceBuffer, MatmulParams } from "../types.ts";
import { ELEM_BYTES, type CudaBuffer } from "./buffers.ts";
import type { KernelDType } from "./compile.ts";
import type { Cublas } from "./ffi/cublas.ts";
import type { CudaBackend } from "./index.ts";

/** Warps (= output columns) per block of the decode GEMV (convert.cu gemv_bf16_m*). */
const GEMV_WARPS = 8;

export function matmul(be: CudaBackend, blas: Cublas, a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, p: MatmulParams): void {
  const { batch, m, n, k } = p;
  const { offA, offB, offC, needA, needB, needC } = matmulExtents(p);
  be.checks.dims("matmul", {
    batch,
    m,
    n,
    k,
    strideA: p.strideA,
    strideB: p.strideB,
    strideC: p.strideC,
    offsetA: offA,
    offsetB: offB,
    offsetC: offC,
  });
  const sizes = [
    ["a", a, needA],
    ["b", b, needB],
    ["c", c, needC],
  ] as const;
  let A: CudaBuffer, B: CudaBuffer, C: CudaBuffer;
  let type: "f32" | "f64" | "bf16";
  if (a.dtype === "bf16") {
    // Mixed precision (dtypes checked by the bf16 wrapper): bf16 A, B; f32 or bf16 C; fp32 accumulation.
    [A, B, C] = sizes.map(([name, buf, min]) => be.checks.sized("matmul", name, buf, min));
    type = "bf16";
  } else {
    let dt: KernelDType;
    [[A, B, C], dt] = be.checks.floats("matmul", sizes);
    type = dt;
  }
  // Offsets become address arithmetic; cuBLAS sees each operand from its item 0.
  const bytes = ELEM_BYTES[A.dtype];
  const cBytes = ELEM_BYTES[C.dtype];
  const aPtr = A.ptr + offA * bytes;
  const bPtr = B.ptr + offB * bytes;
  if (
    type === "bf16" &&
    C.dtype === "f32" &&
    batch === 1 &&
    !p.transA &&
    p.transB &&
    m > 0 &&
    m <= be.gemvMaxRows &&
    k % 8 === 0 &&
    aPtr % 16 === 0 &&
    bPtr % 16 === 0
  ) {
    // Decode-sized rows: the weight-streaming GEMV (16-byte loads need k % 8 == 0 and aligned rows).
    const M = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16;
    // Warps per column: wide matrices (lm_head, MLP up) have columns enough to fill the SMs
    // one warp each; narrow ones (k/v projections) split k over up to 8 warps.
    const split = n >= 8192 ? 1 : n >= 4096 ? 2 : n >= 2048 ? 4 : 8;
    be.launchKernel("convert.cu", `gemv_bf16_m${M}`, "f32", Math.ceil(n / (GEMV_WARPS / split)), 32 * GEMV_WARPS, [
      { ptr: aPtr },
      { ptr: bPtr },
      { ptr: C.ptr + offC * cBytes },
      { i64: m },
      { i64: n },
      { i64: k },
      { f32: p.alpha ?? 1 },
      { f32: p.beta ?? 0 },
      { i32: split },
    ]);
    be.countCall("matmul");
    be.countCall("cuda.gemv");
    return;
  }
  blas.gemm({
    type,
    cType: C.dtype === "f32" ? "f32" : type,
    batch,
    m,
    n,
    k,
    transA: p.transA,
    transB: p.transB,
    a: A.ptr + offA * bytes,
    b: B.ptr + offB * bytes,
    c: C.ptr + offC * cBytes,
    strideA: p.strideA,
    strideB: p.strideB,
    strideC: p.strideC,
    alpha: p.alpha ?? 1,
    beta: p.beta ?? 0,
  });
  be.countCall("matmul");
  be.countCall("cublas.gemm");
}
