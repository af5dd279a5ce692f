/**
 * Buffer extents implied by op parameters, shared by every backend's argument checks so a size
 * rule is written once. Pure arithmetic over the contract's parameter types; no buffers, no
 * backend.
 */
import type { MatmulParams } from "./types.ts";

/** Offsets of a strided-batch GEMM (defaults filled) and the element count each operand must hold. */
export interface MatmulExtents {
  offA: number;
  offB: number;
  offC: number;
  /** Elements a, b and c must hold: the last batch item's matrix must fit (strides are >= 0). */
  needA: number;
  needB: number;
  needC: number;
}

export function matmulExtents(p: MatmulParams): MatmulExtents {
  const { batch, m, n, k } = p;
  const offA = p.offsetA ?? 0;
  const offB = p.offsetB ?? 0;
  const offC = p.offsetC ?? 0;
  const need = (off: number, stride: number, size: number): number =>
    batch === 0 || size === 0 ? 0 : off + (batch - 1) * stride + size;
  return {
    offA, offB, offC,
    needA: need(offA, p.strideA, m * k),
    needB: need(offB, p.strideB, k * n),
    needC: need(offC, p.strideC, m * n),
  };
}
