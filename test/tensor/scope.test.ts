/**
 * Tidy scopes (src/tensor/scope.ts) on the CPU backend, where free() marks a buffer freed and any
 * later use throws: what a tidy frees (every temporary), what it keeps (returned tensors, views'
 * owners, keep()'d tensors, parameters and their gradients), nesting, errors, and backward inside
 * a scope or after one with keepGraph. Values are checked against the same computation outside
 * any scope, so a scope that freed too much or changed a result fails.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { CpuBackend, CpuBuffer } from "../../src/tensor/backend/cpu/index.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import * as F from "../../src/tensor/ops.ts";
import { isBufferReleased, isReleased, keep, scopeDepth, tidy } from "../../src/tensor/scope.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkClose, formatStats } from "../util/check-close.ts";

const backend = new CpuBackend({ useBlas: false, threads: 1 });

function randT(rng: Rng, shape: number[], requiresGrad = false): Tensor {
  return Tensor.randn(shape, rng, { backend, dtype: "f64", requiresGrad });
}

function freed(t: Tensor): boolean {
  return (t.buffer as CpuBuffer).freed;
}

/** Bit-equal comparison with the stats printed: a scope must not change any value. */
function same(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  console.log(formatStats(label, checkClose(label, actual, expected, { atol: 0, rtol: 0 })));
}

test("tidy frees every temporary, keeps the returned tensor, and leaves inputs from outside alone", () => {
  const rng = new Rng(11);
  const a = randT(rng, [3, 4]);
  const b = randT(rng, [4, 5]);
  const want = F.sum(F.exp(F.mul(F.matmul(a, b), F.matmul(a, b))), 1).toArray();
  const temps: Tensor[] = [];
  const out = tidy(() => {
    const ab = F.matmul(a, b);
    const sq = F.mul(ab, ab);
    const e = F.exp(sq);
    temps.push(ab, sq, e);
    return F.sum(e, 1);
  });
  assert.ok(temps.every(freed), "every intermediate buffer is freed");
  assert.ok(!freed(a) && !freed(b) && !freed(out), "inputs and the result stay live");
  same("tidy result vs unscoped", out.toArray(), want);
  // A use after the scope freed it is an error naming the freed buffer, not garbage.
  assert.throws(
    () => temps[0]!.toArray(),
    (e: unknown) => e instanceof InvariantError && /used after free/.test(e.message),
  );
  assert.throws(() => F.add(temps[1]!, temps[1]!), InvariantError);
  assert.equal(scopeDepth(), 0);
});

test("a returned view keeps its owner's buffer; views never free buffers born outside the scope", () => {
  const rng = new Rng(12);
  const x = randT(rng, [2, 6]);
  let owner: Tensor | null = null;
  const v = tidy(() => {
    owner = F.addScalar(x, 1);
    return owner.reshape([3, 4]).transpose(0, 1); // a view of owner's buffer
  });
  assert.ok(!freed(owner!), "the view's buffer survives");
  const host = x.toArray();
  const got = v.contiguous().toArray();
  // v[j][i] = x.flat[i * 4 + j] + 1
  for (let i = 0; i < 3; i++) for (let j = 0; j < 4; j++) assert.equal(got[j * 3 + i], host[i * 4 + j]! + 1);
  // Views and fromBuffer wrappers of an outside buffer made inside a scope do not own it.
  const raw = backend.alloc("f64", 12);
  backend.write(
    raw,
    Float64Array.from({ length: 12 }, () => rng.normal()),
  );
  tidy(() => {
    Tensor.fromBuffer(backend, raw, [3, 4]).reshape([12]);
    x.reshape([12]).detach();
  });
  assert.ok(!(raw as CpuBuffer).freed && !freed(x));
});

test("keep() and parameters survive; dispose inside a scope is not freed twice; nested scopes hand results up", () => {
  const rng = new Rng(13);
  const x = randT(rng, [4]);
  let kept: Tensor | null = null;
  let param: Tensor | null = null;
  let disposed: Tensor | null = null;
  let inner: Tensor | null = null;
  let innerTemp: Tensor | null = null;
  const outer = tidy(() => {
    kept = keep(F.neg(x));
    param = randT(rng, [4], true);
    disposed = F.exp(x);
    disposed.dispose();
    inner = tidy(() => {
      innerTemp = F.square(x);
      assert.equal(scopeDepth(), 2);
      return F.addScalar(innerTemp, 2);
    });
    assert.ok(freed(innerTemp!) && !freed(inner), "the inner scope frees its temporaries at once");
    return F.mulScalar(inner, 3);
  });
  assert.ok(!freed(kept!) && !freed(param!) && !freed(outer));
  assert.ok(freed(inner!), "a result handed to the outer scope is freed there when not returned again");
  assert.ok(isReleased(disposed!) && isReleased(inner!) && !isReleased(outer));
  assert.ok(isBufferReleased(inner!.buffer) && !isBufferReleased(kept!.buffer));
  assert.throws(() => disposed!.dispose(), InvariantError, "a second dispose is a bug");
  const xs = x.toArray();
  const got = outer.toArray();
  for (let i = 0; i < 4; i++) assert.equal(got[i], (xs[i]! * xs[i]! + 2) * 3);
});

test("fn throwing frees what it created and rethrows", () => {
  const rng = new Rng(14);
  const x = randT(rng, [5]);
  let made: Tensor | null = null;
  assert.throws(
    () =>
      tidy(() => {
        made = F.exp(x);
        throw new Error("boom");
      }),
    /boom/,
  );
  assert.ok(freed(made!) && !freed(x));
  assert.equal(scopeDepth(), 0);
});

test("backward inside a tidy: activations freed, gradients equal the unscoped ones and stay live", () => {
  const rng = new Rng(15);
  const w = randT(rng, [6, 3], true);
  const xs = randT(rng, [4, 6]);
  const loss = () => F.sum(F.square(F.matmul(F.exp(F.mulScalar(xs, 0.3)), w)));
  loss().backward();
  const want = w.grad!.toArray();
  w.grad = null;
  let act: Tensor | null = null;
  tidy(() => {
    const l = loss();
    act = l.node!.inputs[0]!; // square's output, an activation
    l.backward();
  });
  assert.ok(freed(act!), "activations are freed");
  const g = w.grad as Tensor | null; // set by backward inside the closure
  assert.ok(g && !freed(g) && !freed(w));
  same("grad in tidy vs unscoped", g.toArray(), want);
});

test("keepGraph lets backward run after the scope; without it the graph is freed", () => {
  const rng = new Rng(16);
  const w = randT(rng, [5], true);
  const x = randT(rng, [5]);
  const f = () => F.sum(F.mul(F.sigmoid(F.mul(x, w)), x));
  f().backward();
  const want = w.grad!.toArray();
  w.grad = null;
  const l = tidy(f, { keepGraph: true });
  l.backward();
  same("grad after keepGraph tidy vs unscoped", w.grad!.toArray(), want);
  w.grad = null;
  const broken = tidy(f);
  assert.throws(
    () => broken.backward(),
    (e: unknown) => e instanceof InvariantError && /used after free/.test(e.message),
  );
});

test("tidy returns containers: tensors in arrays, objects and maps are kept, others freed", () => {
  const rng = new Rng(17);
  const x = randT(rng, [3]);
  let dropped: Tensor | null = null;
  const r = tidy(() => {
    dropped = F.neg(x);
    return { a: [F.exp(x)], b: new Map([["k", F.square(x)]]), n: 3, host: F.neg(x).toArray() };
  });
  assert.ok(freed(dropped!));
  assert.ok(!freed(r.a[0]!) && !freed(r.b.get("k")!));
  assert.equal(r.n, 3);
  const xs = x.toArray();
  assert.deepEqual(
    Array.from(r.host),
    Array.from(xs, (v) => -v),
  );
});
