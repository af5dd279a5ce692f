/**
 * Buffer extents implied by op parameters, shared by every backend's argument checks so a size
 * rule is written once: GEMM operand extents, and the shape/stride arithmetic of strided and
 * broadcast views (numel, stridedExtent, collapseDims) that the CPU kernels and the CUDA launch
 * code both use. Pure arithmetic over the contract's parameter types; no buffers, no backend.
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
  const need = (off: number, stride: number, size: number): number => (batch === 0 || size === 0 ? 0 : off + (batch - 1) * stride + size);
  return {
    offA,
    offB,
    offC,
    needA: need(offA, p.strideA, m * k),
    needB: need(offB, p.strideB, k * n),
    needC: need(offC, p.strideC, m * n),
  };
}

// ---------------------------------------------------------------- strided views

/** Number of elements of a shape (1 for rank 0). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * One past the largest element index a strided view reads: offset + sum((shape[i]-1) * stride[i]) + 1,
 * or 0 for an empty view. Strides are non-negative (checked by the caller).
 */
export function stridedExtent(shape: readonly number[], strides: readonly number[], offset = 0): number {
  if (numel(shape) === 0) return 0;
  let last = offset;
  for (let i = 0; i < shape.length; i++) last += (shape[i] - 1) * strides[i];
  return last + 1;
}

/**
 * Merges adjacent dimensions that every operand walks contiguously relative to each other (the
 * output is always contiguous), and drops size-1 dimensions. A [R, C] op [C] broadcast stays
 * 2-D, a same-shape op becomes 1-D, so kernels see as few, as long rows as possible (the CPU's
 * row loops; the CUDA kernels' index arithmetic, whose rank the `Strided` structs cap).
 * Returns at least one dimension (a size-1 one for a single element).
 */
export function collapseDims(
  shape: readonly number[],
  strides: ReadonlyArray<readonly number[]>,
): { shape: number[]; strides: number[][] } {
  // Built innermost-first, then reversed.
  const outShape: number[] = [];
  const outStrides: number[][] = strides.map(() => []);
  for (let i = shape.length - 1; i >= 0; i--) {
    const size = shape[i];
    if (size === 1) continue;
    const last = outShape.length - 1;
    const mergeable = last >= 0 && strides.every((s, j) => s[i] === outStrides[j][last] * outShape[last]);
    if (mergeable) {
      outShape[last] *= size;
    } else {
      outShape.push(size);
      for (let j = 0; j < strides.length; j++) outStrides[j].push(strides[j][i]);
    }
  }
  if (outShape.length === 0) {
    outShape.push(1);
    for (const s of outStrides) s.push(0);
  }
  outShape.reverse();
  for (const s of outStrides) s.reverse();
  return { shape: outShape, strides: outStrides };
}
