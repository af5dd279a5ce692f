/**
 * The gradient rule table: one local rule per recorded op, read by autograd.ts's backward walk.
 * A rule gets the op's node (inputs, saved values, output) and the output's gradient, and returns
 * one gradient per input (null where an input needs none), shaped like the op's output where
 * broadcasting happened: autograd's sumToShape reduces them. Rules run with recording off, so
 * they may freely use the ops. Composite ops (crossEntropy, mean) have no rule.
 */
import type { GradNode, GradRule } from "./autograd.ts";
import type { AttentionParams, AttentionSegments, FloatDType, LogprobParams, UnaryOp } from "./backend/types.ts";
import { Tensor, numel } from "./tensor.ts";
import * as F from "./ops.ts";

function empty(like: Tensor, shape: readonly number[] = like.shape): Tensor {
  return Tensor.empty(shape, { backend: like.backend, dtype: like.dtype });
}

/** Does input i of this node need a gradient at all? */
function wants(node: GradNode, i: number): boolean {
  return node.inputs[i]!.requiresGrad;
}

const unaryRule: GradRule = (node, dOut) => {
  const x = node.inputs[0]!;
  const g = dOut.contiguous();
  const dx = empty(x);
  x.backend.unaryBackward(node.saved["unary"] as UnaryOp, x.buffer, node.out.buffer, g.buffer, dx.buffer);
  return [dx];
};

/** Gradient of a matmul-shaped product C = op(A) op(B) with respect to A and B. */
const matmulRule: GradRule = (node, dOut) => {
  const [a, b] = node.inputs as [Tensor, Tensor];
  const g = dOut.contiguous();
  const batch = a.ndim === 3 ? a.shape[0]! : 1;
  const [m, k] = a.shape.slice(-2) as [number, number];
  const n = b.shape[b.ndim - 1]!;
  const be = a.backend;
  let dA: Tensor | null = null;
  let dB: Tensor | null = null;
  if (wants(node, 0)) {
    // dA[m, k] = dC[m, n] @ B[k, n]^T
    dA = empty(a);
    be.matmul(g.buffer, b.buffer, dA.buffer, {
      batch,
      m,
      n: k,
      k: n,
      transA: false,
      transB: true,
      strideA: m * n,
      strideB: b.ndim === 3 ? k * n : 0,
      strideC: m * k,
    });
  }
  if (wants(node, 1)) {
    dB = empty(b);
    if (b.ndim === 3 || batch === 1) {
      // dB[k, n] = A[m, k]^T @ dC[m, n], per batch item
      be.matmul(a.buffer, g.buffer, dB.buffer, {
        batch,
        m: k,
        n,
        k: m,
        transA: true,
        transB: false,
        strideA: m * k,
        strideB: m * n,
        strideC: k * n,
      });
    } else {
      // B was shared by every batch item: one GEMM over the stacked rows sums the items.
      be.matmul(a.buffer, g.buffer, dB.buffer, {
        batch: 1,
        m: k,
        n,
        k: batch * m,
        transA: true,
        transB: false,
        strideA: 0,
        strideB: 0,
        strideC: 0,
      });
    }
  }
  return [dA, dB];
};

/**
 * y[rows, out] = x[rows, in] @ w[out, in]^T. In the mixed-precision form (bf16 x and w, f32 y)
 * the f32 gradient is cast to bf16 and dx, dw come out bf16, as the inputs are.
 */
const linearRule: GradRule = (node, dOut) => {
  const [x, w] = node.inputs as [Tensor, Tensor];
  const g = x.dtype === "bf16" ? F.cast(dOut, "bf16") : dOut.contiguous();
  const [nOut, nIn] = w.shape as [number, number];
  const rows = x.size / nIn;
  const be = x.backend;
  let dx: Tensor | null = null;
  let dw: Tensor | null = null;
  if (wants(node, 0)) {
    dx = empty(x); // dx[rows, in] = g[rows, out] @ w[out, in]
    be.matmul(g.buffer, w.buffer, dx.buffer, {
      batch: 1,
      m: rows,
      n: nIn,
      k: nOut,
      transA: false,
      transB: false,
      strideA: 0,
      strideB: 0,
      strideC: 0,
    });
  }
  if (wants(node, 1)) {
    dw = empty(w); // dw[out, in] = g[rows, out]^T @ x[rows, in]
    be.matmul(g.buffer, x.buffer, dw.buffer, {
      batch: 1,
      m: nOut,
      n: nIn,
      k: rows,
      transA: true,
      transB: false,
      strideA: 0,
      strideB: 0,
      strideC: 0,
    });
  }
  return [dx, dw];
};

/** A one-element zero of g's dtype, broadcast by `where` wherever a gradient is cut. */
function zeroLike(g: Tensor): Tensor {
  return Tensor.zeros([1], { backend: g.backend, dtype: g.dtype });
}

/**
 * Routes g by a 0/1 mask: [where(mask, g, 0), where(mask, 0, g)], each only where wanted. This
 * is min's and max's rule: the output is one operand's value, so that operand takes the whole
 * gradient and the other none. The subgradient at a tie (a == b) is a choice; ours gives all of
 * it to a, the first operand (torch.minimum splits it half and half). Then clamp, built as
 * maximum(minimum(x, hi), lo), passes the gradient at both boundaries, as torch.clamp does.
 */
function routeByMask(node: GradNode, g: Tensor, mask: Tensor): Array<Tensor | null> {
  const zero = zeroLike(g);
  return [wants(node, 0) ? F.where(mask, g, zero) : null, wants(node, 1) ? F.where(mask, zero, g) : null];
}

export const RULES: Record<string, GradRule> = {
  // ---- dtype: the gradient goes back in the input's dtype
  cast: (node, g) => [F.cast(g, node.saved["from"] as FloatDType)],

  // ---- views and copies
  contiguous: (_node, g) => [g],
  reshape: (node, g) => [g.reshape(node.inputs[0]!.shape)],
  permute: (node, g) => {
    const dims = node.saved["dims"] as number[];
    const inverse = new Array<number>(dims.length);
    dims.forEach((d, i) => (inverse[d] = i));
    return [g.permute(inverse)];
  },

  // ---- elementwise binary (outputs have the broadcast shape; autograd reduces)
  add: (node, g) => [wants(node, 0) ? g : null, wants(node, 1) ? g : null],
  sub: (node, g) => [wants(node, 0) ? g : null, wants(node, 1) ? F.neg(g) : null],
  mul: (node, g) => {
    const [a, b] = node.inputs as [Tensor, Tensor];
    return [wants(node, 0) ? F.mul(g, b) : null, wants(node, 1) ? F.mul(g, a) : null];
  },
  div: (node, g) => {
    const [a, b] = node.inputs as [Tensor, Tensor];
    const ga = wants(node, 0) || wants(node, 1) ? F.div(g, b) : null;
    // d(a/b)/db = -(a/b) / b, reusing g/b: -(g/b) * (a/b)
    return [wants(node, 0) ? ga : null, wants(node, 1) ? F.neg(F.mul(ga!, node.out)) : null];
  },

  // d min(a, b) = g to a where a <= b (a tie included), else to b; d max(a, b) the same with
  // a >= b. A NaN operand sends the gradient to b (le is 0 there).
  min: (node, g) => {
    const [a, b] = node.inputs as [Tensor, Tensor];
    return routeByMask(node, g, F.lessEqual(a, b));
  },
  max: (node, g) => {
    const [a, b] = node.inputs as [Tensor, Tensor];
    return routeByMask(node, g, F.lessEqual(b, a));
  },
  // The mask gets no gradient; a and b get g where they were selected.
  where: (node, g) => {
    const [mask] = node.inputs as [Tensor];
    const zero = zeroLike(g);
    return [null, wants(node, 1) ? F.where(mask, g, zero) : null, wants(node, 2) ? F.where(mask, zero, g) : null];
  },

  // ---- tensor-scalar
  addScalar: (_node, g) => [g],
  mulScalar: (node, g) => [F.mulScalar(g, node.saved["s"] as number)],
  powScalar: (node, g) => {
    const s = node.saved["s"] as number;
    return [F.mul(g, F.mulScalar(F.powScalar(node.inputs[0]!, s - 1), s))];
  },

  // ---- elementwise unary: one backend primitive, dx = dy * f'(x)
  neg: unaryRule,
  exp: unaryRule,
  log: unaryRule,
  sqrt: unaryRule,
  rsqrt: unaryRule,
  silu: unaryRule,
  sigmoid: unaryRule,
  square: unaryRule,

  swiglu: (node, dOut) => {
    const [gate, up] = node.inputs as [Tensor, Tensor];
    const g = dOut.contiguous();
    const dGate = empty(gate);
    const dUp = empty(up);
    gate.backend.swigluBackward(gate.buffer, up.buffer, g.buffer, dGate.buffer, dUp.buffer);
    return [dGate, dUp];
  },

  // ---- reductions: broadcast the gradient back along the summed axis
  sum: (node, dOut) => {
    const x = node.inputs[0]!;
    const axis = node.saved["axis"] as number;
    const g = dOut.contiguous();
    const keptShape = x.shape.map((d, i) => (i === axis ? 1 : d));
    const strides = new Array<number>(x.ndim);
    let s = 1;
    for (let i = x.ndim - 1; i >= 0; i--) {
      strides[i] = i === axis ? 0 : s;
      s *= keptShape[i]!;
    }
    const dx = empty(x);
    x.backend.copy(g.buffer, dx.buffer, { shape: x.shape, srcStrides: strides, srcOffset: 0, dstOffset: 0 });
    return [dx];
  },

  // ---- gemm
  matmul: matmulRule,
  linear: linearRule,

  // ---- nn
  embedding: (node, dOut) => {
    const [table, ids] = node.inputs as [Tensor, Tensor];
    const g = dOut.contiguous();
    // A bf16 table (mixed precision) gathered into f32, so its gradient is summed in f32.
    const dTable = Tensor.zeros(table.shape, { backend: table.backend, dtype: table.dtype === "bf16" ? "f32" : table.dtype });
    table.backend.embeddingBackward(g.buffer, ids.buffer, dTable.buffer, { n: ids.size, dim: table.shape[1]! });
    return [dTable, null];
  },
  rmsnorm: (node, dOut) => {
    const [x, w] = node.inputs as [Tensor, Tensor];
    const g = dOut.contiguous();
    const dim = w.size;
    const dx = empty(x);
    const dw = empty(w);
    const rstd = node.saved["rstd"] as Tensor;
    x.backend.rmsnormBackward(x.buffer, w.buffer, rstd.buffer, g.buffer, dx.buffer, dw.buffer, {
      rows: x.size / dim,
      dim,
      eps: node.saved["eps"] as number,
    });
    return [dx, dw];
  },
  rope: (node, dOut) => {
    const [x, positions] = node.inputs as [Tensor, Tensor];
    const g = dOut.contiguous();
    const [T, H, D] = x.shape as [number, number, number];
    const dx = empty(x);
    x.backend.rope(g.buffer, positions.buffer, dx.buffer, {
      tokens: T,
      heads: H,
      dim: D,
      theta: node.saved["theta"] as number,
      inverse: true,
    });
    return [dx, null];
  },
  attention: (node, dOut) => {
    const [q, k, v] = node.inputs as [Tensor, Tensor, Tensor];
    const g = dOut.contiguous();
    const dq = empty(q);
    const dk = empty(k);
    const dv = empty(v);
    const seg = node.saved["seg"] as AttentionSegments;
    const params = node.saved["params"] as AttentionParams;
    const lse = node.saved["lse"] as Tensor;
    // Keys past layout.numKeys get no gradient: zero them (the kernel writes the first `keys` rows).
    if (params.keys < k.shape[0]!) {
      q.backend.fill(dk.buffer, 0);
      q.backend.fill(dv.buffer, 0);
    }
    q.backend.attentionBackward(
      q.buffer,
      k.buffer,
      v.buffer,
      seg,
      node.out.buffer,
      lse.buffer,
      g.buffer,
      dq.buffer,
      dk.buffer,
      dv.buffer,
      params,
    );
    return [dq, dk, dv];
  },
  softmax: (node, dOut) => {
    const x = node.inputs[0]!;
    const g = dOut.contiguous();
    const cols = x.shape[x.ndim - 1]!;
    const dx = empty(x);
    x.backend.softmaxBackward(node.out.buffer, g.buffer, dx.buffer, { rows: numel(x.shape) / cols, cols });
    return [dx];
  },
  logSoftmax: (node, dOut) => {
    const x = node.inputs[0]!;
    const g = dOut.contiguous();
    const cols = x.shape[x.ndim - 1]!;
    const dx = empty(x);
    x.backend.logSoftmaxBackward(node.out.buffer, g.buffer, dx.buffer, { rows: numel(x.shape) / cols, cols });
    return [dx];
  },
  logprobs: (node, dOut) => {
    const [logits, targets] = node.inputs as [Tensor, Tensor];
    const g = dOut.contiguous();
    const dLogits = empty(logits);
    const lse = node.saved["lse"] as Tensor;
    logits.backend.logprobGatherBackward(
      logits.buffer,
      targets.buffer,
      lse.buffer,
      g.buffer,
      dLogits.buffer,
      node.saved["params"] as LogprobParams,
    );
    return [dLogits, null];
  },
};
