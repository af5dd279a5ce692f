/**
 * The autograd tape: ops record a GradNode on their output (`record`), and `backward` walks the
 * recorded graph in reverse topological order, asking the rule table (gradients.ts: one local
 * rule per op) for each node's input gradients. Broadcast reduction happens in exactly one place,
 * `sumToShape`, when a gradient is handed to an input. Gradients are not themselves
 * differentiable (no double backward): the walk runs with recording off. Nodes hold their saved
 * tensors by reference, so backward must run inside the tidy scope that built the graph, or that
 * scope must keep it (scope.ts, `keepGraph`).
 */
import type { Tensor } from "./tensor.ts";
import { invariant } from "../util/index.ts";
import { RULES } from "./gradients.ts";
import { keep } from "./scope.ts";

/** What an op leaves behind for its backward rule. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /** Whatever the rule needs: saved tensors (the output, lse, rstd...) and attributes. */
  readonly saved: Readonly<Record<string, unknown>>;
  /** The tensor this node produced. */
  readonly out: Tensor;
}

/** A backward rule: the gradients of an op's inputs (null where none) from its output's gradient. */
export type GradRule = (node: GradNode, dOut: Tensor) => Array<Tensor | null>;

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with recording off (inference, optimizer updates, backward itself). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/**
 * Marks `out` as produced by `op` from `inputs` when any input requires a gradient (and recording
 * is on); returns `out` for chaining.
 */
export function record(op: string, out: Tensor, inputs: readonly Tensor[], saved: Record<string, unknown> = {}): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return out;
  invariant(op in RULES, () => `op "${op}" has no gradient rule: add one to tensor/gradients.ts`);
  out.requiresGrad = true;
  out.node = { op, inputs, saved, out };
  return out;
}

/** Tensors reachable from root through recorded nodes, inputs before the tensors made from them. */
function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS (graphs of deep models overflow a recursive walk).
  const stack: Array<[Tensor, number]> = [[root, 0]];
  seen.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1] = i + 1;
      const child = inputs[i]!;
      if (child.requiresGrad && !seen.has(child)) {
        seen.add(child);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order;
}

/**
 * Backpropagates from `root`. Without `grad`, root must hold one element and gets gradient 1.
 * Leaves that require a gradient accumulate into `.grad` (so several backward calls sum, as for
 * gradient accumulation); each leaf's `.grad` owns its buffer.
 */
export function backward(root: Tensor, grad?: Tensor): void {
  invariant(root.requiresGrad, "backward() on a tensor that does not require a gradient");
  if (!grad) {
    invariant(root.size === 1, () => `backward() without a gradient needs a scalar, got [${root.shape}]`);
  }
  noGrad(() => {
    const seed = grad ?? fullLike(root, 1);
    invariant(sameShape(seed.shape, root.shape), () => `backward: gradient [${seed.shape}] for [${root.shape}]`);
    const grads = new Map<Tensor, Tensor>([[root, seed]]);
    const order = topoOrder(root);
    for (let i = order.length - 1; i >= 0; i--) {
      const t = order[i]!;
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t); // free as we go
      const node = t.node;
      if (!node) {
        // Kept: a tidy around backward frees the activations, never the leaves' gradients.
        t.grad = keep(t.grad ? addRaw(t.grad, g) : cloneRaw(g));
        continue;
      }
      const rule = RULES[node.op]!;
      const inputGrads = rule(node, g);
      invariant(inputGrads.length === node.inputs.length, () => `rule for "${node.op}" returned a wrong count`);
      for (let j = 0; j < node.inputs.length; j++) {
        const input = node.inputs[j]!;
        const gi = inputGrads[j];
        if (!gi || !input.requiresGrad) continue;
        const reduced = sumToShape(gi, input.shape);
        const prev = grads.get(input);
        grads.set(input, prev ? addRaw(prev, reduced) : reduced);
      }
    }
  });
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function fullLike(t: Tensor, value: number): Tensor {
  const buf = t.backend.alloc(t.dtype, t.size);
  t.backend.fill(buf, value);
  return new (t.constructor as typeof Tensor)(t.backend, buf, t.shape);
}

/** A contiguous copy with its own buffer. */
function cloneRaw(t: Tensor): Tensor {
  const buf = t.backend.alloc(t.dtype, t.size);
  t.backend.copy(t.buffer, buf, { shape: t.shape, srcStrides: t.strides, srcOffset: t.offset, dstOffset: 0 });
  return new (t.constructor as typeof Tensor)(t.backend, buf, t.shape);
}

function contiguousRaw(t: Tensor): Tensor {
  return t.offset === 0 && t.isContiguous() ? t : cloneRaw(t);
}

/** a + b for equal shapes, into a new buffer. */
function addRaw(a: Tensor, b: Tensor): Tensor {
  invariant(sameShape(a.shape, b.shape), () => `gradient shapes differ: [${a.shape}] vs [${b.shape}]`);
  const ac = contiguousRaw(a);
  const bc = contiguousRaw(b);
  const out = a.backend.alloc(a.dtype, a.size);
  const strides = ac.strides;
  a.backend.binary("add", ac.buffer, bc.buffer, out, { shape: a.shape, aStrides: strides, bStrides: strides });
  return new (a.constructor as typeof Tensor)(a.backend, out, a.shape);
}

/** Sums axis `axis` of a contiguous tensor (keeping it as size 1 when keepdim). */
export function reduceAxisRaw(t: Tensor, axis: number, keepdim: boolean): Tensor {
  const c = contiguousRaw(t);
  const outer = c.shape.slice(0, axis).reduce((a, d) => a * d, 1);
  const inner = c.shape.slice(axis + 1).reduce((a, d) => a * d, 1);
  const shape = keepdim ? c.shape.map((d, i) => (i === axis ? 1 : d)) : c.shape.filter((_, i) => i !== axis);
  const out = c.backend.alloc(c.dtype, outer * inner);
  c.backend.reduceSum(c.buffer, out, { outer, reduce: c.shape[axis]!, inner });
  return new (c.constructor as typeof Tensor)(c.backend, out, shape);
}

/**
 * The one place broadcasting is undone: sums g over the dimensions that broadcasting added or
 * stretched, so the result has exactly `shape`.
 */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return g;
  let x = g;
  while (x.ndim > shape.length) x = reduceAxisRaw(x, 0, false);
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1 && x.shape[i] !== 1) x = reduceAxisRaw(x, i, true);
  }
  invariant(sameShape(x.shape, shape), () => `cannot reduce gradient [${g.shape}] to [${shape}]`);
  return x;
}
