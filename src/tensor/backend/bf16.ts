/**
 * bf16 as a buffer dtype, the generic way (types.ts: bf16 is storage, computed in f32). A primitive
 * called with bf16 buffers runs as its f32 version on upcast temporaries, then each bf16 output is
 * rounded back from its temporary (nearest even, through the backend's own `cast`). One wrapper
 * serves every op: the CPU backend (the reference) uses it for all of them, the CUDA backend for
 * the ops that have no native bf16 kernel. This file also says which dtype mixes the contract
 * allows. Knows the Backend contract only: no typed arrays, no device memory.
 */
import { invariant } from "../../util/index.ts";
import type { Backend, DeviceBuffer, PrimitiveName } from "./types.ts";
import { PRIMITIVES } from "./types.ts";

/**
 * Positions (in the method's argument list) of each primitive's output buffers: the ones rounded
 * back to bf16 after the f32 run. Inputs are upcast only (they are never written, so nothing needs
 * to come back). Outputs are upcast too, since some ops read them (matmul with beta != 0,
 * embeddingBackward and adamw accumulate) and elementwise outputs may alias inputs.
 */
const OUTPUTS: Record<Exclude<PrimitiveName, "cast">, readonly number[]> = {
  fill: [0],
  copy: [1],
  unary: [2], // (op, x, out)
  unaryBackward: [4], // (op, x, y, dy, dx)
  binary: [3], // (op, a, b, out, p)
  where: [3], // (mask, a, b, out, p): a bf16 mask is upcast like any input, an i32 one passes through
  scalar: [3], // (op, x, value, out)
  swiglu: [2],
  swigluBackward: [3, 4],
  reduceSum: [1],
  matmul: [2],
  embedding: [2],
  embeddingBackward: [2],
  rmsnorm: [2, 3],
  rmsnormBackward: [4, 5],
  rope: [2],
  softmax: [1],
  softmaxBackward: [2],
  logSoftmax: [1],
  logSoftmaxBackward: [2],
  logprobGather: [2, 3],
  logprobGatherBackward: [4],
  attention: [4, 5],
  attentionBackward: [7, 8, 9],
  adamw: [0, 2, 3],
};

function isBuffer(a: unknown): a is DeviceBuffer {
  return typeof a === "object" && a !== null && "dtype" in a && "length" in a;
}

/** Does any argument of a call hold bf16? */
export function hasBf16(args: readonly unknown[]): boolean {
  return args.some((a) => isBuffer(a) && a.dtype === "bf16");
}

/**
 * Checks the float dtypes of a call that has bf16 buffers. All float buffers must be bf16, with
 * two exceptions: matmul (bf16 A and B into an f32 C) and embedding (a bf16 table into an f32
 * out). Anything else (f64 beside bf16, an f32 operand of a bf16 op) is a bug in the caller.
 */
export function checkBf16Mix(op: PrimitiveName, args: readonly unknown[]): void {
  if (op === "matmul") {
    const [a, b, c] = args as DeviceBuffer[];
    invariant(a.dtype === "bf16" && b.dtype === "bf16", () => `matmul: a is ${a.dtype} and b is ${b.dtype}; a bf16 GEMM needs both bf16`);
    invariant(c.dtype === "bf16" || c.dtype === "f32", () => `matmul: c is ${c.dtype}; bf16 inputs accumulate into f32 or bf16`);
    return;
  }
  if (op === "embedding") {
    const [table, , out] = args as DeviceBuffer[];
    invariant(
      table.dtype === "bf16" && (out.dtype === "bf16" || out.dtype === "f32"),
      () => `embedding: table is ${table.dtype} and out ${out.dtype}; a bf16 table gathers into f32 or bf16`,
    );
    return;
  }
  args.forEach((a, i) => {
    invariant(
      !isBuffer(a) || a.dtype === "bf16" || a.dtype === "i32",
      () => `${op}: argument ${i} is ${(a as DeviceBuffer).dtype} beside bf16 ones (float args must share one dtype; cast first)`,
    );
  });
}

/** What the wrapper needs from a backend: buffers and the cast primitive. */
type CastingBackend = Pick<Backend, "alloc" | "free" | "cast">;

/**
 * Runs `run` (the op's f32 implementation) with every bf16 buffer of `args` replaced by an f32
 * temporary holding its exact values; then rounds the op's outputs back into their bf16 buffers.
 * A buffer passed twice (an output aliasing an input) gets one temporary.
 */
export function runViaF32(be: CastingBackend, op: Exclude<PrimitiveName, "cast">, args: unknown[], run: (...a: unknown[]) => void): void {
  checkBf16Mix(op, args);
  const temps = new Map<DeviceBuffer, DeviceBuffer>();
  const mapped = args.map((a) => {
    if (!isBuffer(a) || a.dtype !== "bf16") return a;
    let t = temps.get(a);
    if (!t) {
      t = be.alloc("f32", a.length);
      be.cast(a, t);
      temps.set(a, t);
    }
    return t;
  });
  try {
    run(...mapped);
    for (const i of OUTPUTS[op]) {
      const orig = args[i];
      if (isBuffer(orig) && orig.dtype === "bf16") be.cast(temps.get(orig)!, orig);
    }
  } finally {
    for (const t of temps.values()) be.free(t);
  }
}

/**
 * Routes every primitive of `backend` (cast excepted) through runViaF32 when a call has bf16
 * buffers, unless `native(op, args)` says the backend handles that call itself. Installed once,
 * in the backend's constructor; calls without bf16 go straight to the method.
 */
export function installBf16(backend: Backend, native: (op: PrimitiveName, args: readonly unknown[]) => boolean = () => false): void {
  const methods = backend as unknown as Record<string, (...a: unknown[]) => void>;
  for (const group of Object.values(PRIMITIVES)) {
    for (const op of group) {
      if (op === "cast") continue;
      const orig = methods[op].bind(backend);
      methods[op] = (...args: unknown[]) => {
        if (!hasBf16(args)) return orig(...args);
        if (native(op, args)) {
          checkBf16Mix(op, args);
          return orig(...args);
        }
        return runViaF32(backend, op, args, orig);
      };
    }
  }
}
