/**
 * Qwen3Model.forward against the independent float64 oracle (reference-qwen3.ts): f32 compute to
 * 1e-3 relative error with identical argmax, f64 compute to ~1e-10; incremental decode with the
 * KV cache equals a full forward; packed and segment layouts equal separate forwards; the KV
 * cache refuses to overflow. Weights come straight from the oracle's generator, in memory.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { KVCacheFullError } from "../../src/model/kv-cache.ts";
import { causalLayout, packedCausalLayout, segmentLayout } from "../../src/util/layout.ts";
import { noGrad } from "../../src/tensor/index.ts";
import { UsageError } from "../../src/util/errors.ts";
import { randomWeights, referenceLogits } from "./reference-qwen3.ts";
import { PARITY_CONFIGS, argmaxRows, cpu, diff, fmt, modelFromWeights, rawConfig, tokens } from "./helpers.ts";

const T = 9;

for (const [name, cfg] of Object.entries(PARITY_CONFIGS)) {
  test(`f32 and f64 logits match the float64 reference: ${name}`, () => {
    const { weights } = randomWeights(cfg, { seed: 11, roundTo: "F32" });
    const ids = tokens(T, cfg.vocab_size, 5);
    const ref = referenceLogits(cfg, weights, ids);

    const m32 = modelFromWeights(cfg, weights, { dtype: "f32", backend: cpu });
    const out32 = noGrad(() => m32.forward(ids, causalLayout(T)));
    assert.deepEqual(out32.shape, [T, cfg.vocab_size]);
    const d32 = diff(out32.toArray(), ref);
    console.log(`  ${name} f32: ${fmt(d32)}`);
    assert.ok(d32.rel <= 1e-3, `f32 relative error ${d32.rel}`);
    assert.deepEqual(argmaxRows(out32.toArray(), cfg.vocab_size), argmaxRows(ref, cfg.vocab_size));

    const m64 = modelFromWeights(cfg, weights, { dtype: "f64", backend: cpu });
    const d64 = diff(noGrad(() => m64.forward(ids, causalLayout(T))).toArray(), ref);
    console.log(`  ${name} f64: ${fmt(d64)}`);
    assert.ok(d64.rel <= 1e-10, `f64 relative error ${d64.rel}`);
  });
}

test("logits depend on what they should: a changed earlier token changes later rows only", () => {
  // Guards the parity test against an oracle that shares a causality bug with the model.
  const cfg = rawConfig();
  const { weights } = randomWeights(cfg, { seed: 3, roundTo: "F32" });
  const m = modelFromWeights(cfg, weights, { dtype: "f64", backend: cpu });
  const a = tokens(6, cfg.vocab_size, 1);
  const b = a.slice();
  b[3] = (b[3]! + 1) % cfg.vocab_size;
  const la = noGrad(() => m.forward(a, causalLayout(6))).toArray();
  const lb = noGrad(() => m.forward(b, causalLayout(6))).toArray();
  const V = cfg.vocab_size;
  assert.equal(diff(la.subarray(0, 3 * V), lb.subarray(0, 3 * V)).maxAbs, 0);
  assert.ok(diff(la.subarray(3 * V), lb.subarray(3 * V)).maxAbs > 1e-3);
});

for (const dtype of ["f64", "f32"] as const) {
  test(`incremental decode with the KV cache equals a full forward (${dtype})`, () => {
    const cfg = PARITY_CONFIGS["gqa H4/Hkv2 D12 untied"]!;
    const { weights } = randomWeights(cfg, { seed: 21, roundTo: "F32" });
    const m = modelFromWeights(cfg, weights, { dtype, backend: cpu });
    const V = cfg.vocab_size;
    const n = 12;
    const ids = tokens(n, V, 8);
    const full = noGrad(() => m.forward(ids, causalLayout(n))).toArray();
    const tol = dtype === "f64" ? 1e-12 : 1e-5;

    // Prefill 5, then one token at a time.
    const kv = m.newKVCache(16);
    const rows: number[] = [];
    rows.push(...m.forward(ids.subarray(0, 5), causalLayout(5, 0), kv).toArray());
    for (let t = 5; t < n; t++) {
      assert.equal(kv.length, t);
      rows.push(...m.forward(ids.subarray(t, t + 1), causalLayout(1, t), kv).toArray());
    }
    assert.equal(kv.length, n);
    const d1 = diff(rows, full);
    console.log(`  ${dtype} prefill 5 + 1 at a time vs full: ${fmt(d1)}`);
    assert.ok(d1.rel <= tol, `decode differs: ${fmt(d1)}`);

    // Chunks of 3 + 4 + 5.
    const kv2 = m.newKVCache(n);
    const chunked: number[] = [];
    let past = 0;
    for (const len of [3, 4, 5]) {
      chunked.push(...m.forward(ids.subarray(past, past + len), causalLayout(len, past), kv2).toArray());
      past += len;
    }
    const d2 = diff(chunked, full);
    console.log(`  ${dtype} chunks 3+4+5 vs full: ${fmt(d2)}`);
    assert.ok(d2.rel <= tol, `chunked decode differs: ${fmt(d2)}`);

    // The cache is full now: one more token is a clear error and leaves the cache untouched.
    assert.throws(
      () => m.forward(ids.subarray(0, 1), causalLayout(1, n), kv2),
      (err: unknown) => {
        assert.ok(err instanceof KVCacheFullError);
        assert.equal(err.code, "kv_full");
        assert.match(err.message, /KV cache full: 12 tokens cached \+ 1 new > maxTokens 12/);
        return true;
      },
    );
    assert.equal(kv2.length, n);

    // Truncate and re-decode the last token: same row as before.
    kv.truncate(n - 1);
    const again = m.forward(ids.subarray(n - 1), causalLayout(1, n - 1), kv).toArray();
    assert.ok(diff(again, full.subarray((n - 1) * V)).rel <= tol);
  });
}

test("a packed layout of two sequences equals two separate forwards", () => {
  const cfg = PARITY_CONFIGS["gqa H4/Hkv1 D8 tied+bias"]!;
  const { weights } = randomWeights(cfg, { seed: 31, roundTo: "F32" });
  const m = modelFromWeights(cfg, weights, { dtype: "f64", backend: cpu });
  const a = tokens(5, cfg.vocab_size, 1);
  const b = tokens(7, cfg.vocab_size, 2);
  const packed = noGrad(() => m.forward(Int32Array.from([...a, ...b]), packedCausalLayout([5, 7]))).toArray();
  const sa = noGrad(() => m.forward(a, causalLayout(5))).toArray();
  const sb = noGrad(() => m.forward(b, causalLayout(7))).toArray();
  const d = diff(packed, [...sa, ...sb]);
  console.log(`  packed [5, 7] vs separate: ${fmt(d)}`);
  assert.ok(d.rel <= 1e-12);
});

test("a segment layout (shared prefix, two branches) matches the reference and separate forwards", () => {
  // Tokens 0-2: prefix; 3-5: branch A (sees prefix + A); 6-8: branch B (sees prefix + B).
  // Both branches sit at positions 3, 4, 5, as two parallel continuations of the prefix.
  const cfg = PARITY_CONFIGS["gqa H4/Hkv2 D12 untied"]!;
  const V = cfg.vocab_size;
  const { weights } = randomWeights(cfg, { seed: 41, roundTo: "F32" });
  const m = modelFromWeights(cfg, weights, { dtype: "f64", backend: cpu });
  const ids = tokens(9, V, 4);
  const positions = [0, 1, 2, 3, 4, 5, 3, 4, 5];
  const visible = Array.from(
    { length: 9 },
    (_, i): Array<[number, number]> =>
      i < 6
        ? [[0, i + 1]]
        : [
            [0, 3],
            [6, i + 1],
          ],
  );
  const layout = segmentLayout(positions, visible);
  const out = noGrad(() => m.forward(ids, layout)).toArray();
  const ref = referenceLogits(cfg, weights, ids, positions, (i, j) => visible[i]!.some(([s, e]) => j >= s && j < e));
  const dr = diff(out, ref);
  console.log(`  segment layout vs reference: ${fmt(dr)}`);
  assert.ok(dr.rel <= 1e-10);

  const seqB = Int32Array.from([...ids.subarray(0, 3), ...ids.subarray(6, 9)]);
  const sepB = noGrad(() => m.forward(seqB, causalLayout(6))).toArray();
  const dB = diff(out.subarray(6 * V), sepB.subarray(3 * V));
  console.log(`  branch B vs its own sequence: ${fmt(dB)}`);
  assert.ok(dB.rel <= 1e-12);
});

test("token ids outside the vocabulary are a UsageError naming the token", () => {
  const cfg = rawConfig();
  const { weights } = randomWeights(cfg, { seed: 1, roundTo: "F32" });
  const m = modelFromWeights(cfg, weights, { dtype: "f32", backend: cpu });
  assert.throws(
    () => m.forward([1, 48], causalLayout(2)),
    (err: unknown) => {
      assert.ok(err instanceof UsageError);
      assert.equal(err.code, "bad_token");
      assert.match(err.message, /^token 1 is 48, outside the vocabulary \[0, 48\)/);
      return true;
    },
  );
});
