/**
 * Tensor lifetime scopes, like TF.js `tidy`: `tidy(fn)` frees the buffer of every tensor created
 * inside fn except those it returns (which move to the enclosing scope, if any), those kept with
 * `keep(t)`, and leaves that require a gradient (parameters). Views (reshape, permute, detach,
 * fromBuffer) never own a buffer: the first tensor to wrap a fresh buffer owns it, so freeing
 * follows buffers, not tensor objects. This file knows tensors and the Backend's `free` only;
 * nothing about ops, models or any particular backend.
 */
import type { DeviceBuffer } from "./backend/types.ts";
import { Tensor } from "./tensor.ts";
import { invariant } from "../util/index.ts";

/**
 * NOTE(lifetime): autograd nodes hold what they saved (inputs, outputs, lse, rstd...) by
 * reference, not by count. A loss built inside a tidy therefore has a graph of freed tensors once
 * the tidy returns: run backward inside the same tidy, or pass `{ keepGraph: true }` so every
 * tensor the returned values' graphs reach moves out with them. Gradients that backward writes
 * into leaves are kept (autograd.ts calls `keep`), so `tidy(() => { loss(...).backward(); })`
 * frees the activations and leaves the parameters' `.grad`.
 *
 * Buffers allocated with `backend.alloc` and never wrapped by a tensor (KV pages, optimizer
 * moments, scratch) are not tracked at all: their owners free them. So are lazily built caches
 * a model stores on itself: build them outside a tidy or `keep` them.
 */

/** The tensors created (as owners of a fresh buffer) while this scope was the innermost one. */
interface Scope {
  owned: Tensor[];
}

const scopes: Scope[] = [];
/** Every buffer some tensor has wrapped: a later tensor over it is a view, never its owner. */
const wrapped = new WeakSet<DeviceBuffer>();
/** Buffers already returned to their backend (by a scope or `dispose()`): never freed twice. */
const released = new WeakSet<DeviceBuffer>();
/** Buffers no scope may free (`keep`). */
const pinned = new WeakSet<DeviceBuffer>();

/** Anything tidy can return: the tensors found in it (arrays, plain objects, Map values) are kept. */
export type TensorContainer =
  | Tensor
  | readonly TensorContainer[]
  | { readonly [key: string]: TensorContainer }
  | ReadonlyMap<unknown, TensorContainer>
  | string
  | number
  | boolean
  | bigint
  | null
  | undefined
  | void
  | ArrayBufferView;

export interface TidyOptions {
  /**
   * Also keep every tensor that the autograd graphs of the returned tensors reach (node inputs
   * and saved tensors), so `backward()` can run after the tidy returns. Off by default.
   */
  keepGraph?: boolean;
}

/** Called by the Tensor constructor: the first tensor over a buffer owns it (in the innermost scope). */
export function adopt(t: Tensor): void {
  if (wrapped.has(t.buffer)) return;
  wrapped.add(t.buffer);
  const top = scopes[scopes.length - 1];
  if (top) top.owned.push(t);
}

/** Marks a buffer as owned by someone else (Tensor.fromBuffer): no tensor over it owns it. */
export function markForeign(buf: DeviceBuffer): void {
  wrapped.add(buf);
}

/** Returns t's buffer to its backend unless a scope or dispose() already did. */
export function release(t: Tensor): void {
  invariant(!released.has(t.buffer), () => `dispose() of ${t} whose buffer was already freed`);
  released.add(t.buffer);
  t.backend.free(t.buffer);
}

/** True once t's buffer has been freed through a scope or dispose(). */
export function isReleased(t: Tensor): boolean {
  return released.has(t.buffer);
}

/**
 * The same for a bare buffer: what any other freeing path (a backend's GC-driven finalizer) must
 * check first, since a buffer must never be freed twice.
 */
export function isBufferReleased(buf: DeviceBuffer): boolean {
  return released.has(buf);
}

/** Exempts t's buffer from every scope (it is freed only by an explicit dispose()). Returns t. */
export function keep<T extends Tensor>(t: T): T {
  pinned.add(t.buffer);
  return t;
}

/** Number of nested tidy scopes currently open (0 outside any). */
export function scopeDepth(): number {
  return scopes.length;
}

/**
 * Runs fn and frees every buffer owned by a tensor created inside it, except the tensors fn
 * returns (found in arrays, plain objects and Map values), kept ones and leaves requiring a
 * gradient. If fn throws, everything it created is freed and the error propagates. fn must be
 * synchronous: a scope spans one call stack, not an await.
 */
export function tidy<T extends TensorContainer>(fn: () => T, opts: TidyOptions = {}): T {
  const scope: Scope = { owned: [] };
  scopes.push(scope);
  let result: T | undefined;
  let threw = true;
  try {
    result = fn();
    invariant(!(result instanceof Promise), "tidy(fn): fn returned a Promise; a scope cannot span an await");
    threw = false;
  } finally {
    const popped = scopes.pop();
    invariant(popped === scope, "tidy scopes closed out of order");
    const keepBufs = threw ? new Set<DeviceBuffer>() : returnedBuffers(result, opts.keepGraph ?? false);
    const parent = scopes[scopes.length - 1];
    const freedHere = new Set<DeviceBuffer>();
    for (const t of scope.owned) {
      const buf = t.buffer;
      if (released.has(buf) || pinned.has(buf) || freedHere.has(buf)) continue;
      if (t.requiresGrad && t.node === null) continue; // a parameter (or other leaf being trained)
      if (keepBufs.has(buf)) {
        parent?.owned.push(t);
        continue;
      }
      freedHere.add(buf);
      released.add(buf);
      t.backend.free(buf);
    }
  }
  return result as T;
}

/** The buffers of the tensors in a returned value (and, with keepGraph, of their graphs). */
function returnedBuffers(value: unknown, keepGraph: boolean): Set<DeviceBuffer> {
  const bufs = new Set<DeviceBuffer>();
  const seen = new Set<unknown>();
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== "object" || seen.has(v)) continue;
    seen.add(v);
    if (v instanceof Tensor) {
      bufs.add(v.buffer);
      if (keepGraph && v.node) stack.push(...v.node.inputs, ...Object.values(v.node.saved));
    } else if (Array.isArray(v)) {
      stack.push(...v);
    } else if (v instanceof Map) {
      stack.push(...v.values());
    } else if (Object.getPrototypeOf(v) === Object.prototype) {
      stack.push(...Object.values(v));
    }
  }
  return bufs;
}
