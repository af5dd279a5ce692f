/**
 * Tests for tensor/dtype.ts: every bf16 and f16 bit pattern, round-to-nearest-even ties, f16
 * subnormals and overflow, f64 inputs that would double-round through f32, and random floats
 * against an independent slow reference built from Math.log2 / powers of two (no bit tricks).
 * Also the bulk decode/encode paths for every storage dtype, against the scalar functions.
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  bf16BitsToF32,
  decodeToFloat,
  decodeToInt32,
  encodeFloat,
  encodeInt,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
} from "../../src/tensor/dtype.ts";
import { DataFormatError, InvariantError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";

/** A binary floating-point format described by its field widths, for the slow reference. */
interface Fmt {
  name: string;
  expBits: number;
  manBits: number;
}
const BF16: Fmt = { name: "bf16", expBits: 8, manBits: 7 };
const F16: Fmt = { name: "f16", expBits: 5, manBits: 10 };

/** Value of a bit pattern from the IEEE field formula, with powers of two only. */
function refDecode(fmt: Fmt, bits: number): number {
  const bias = 2 ** (fmt.expBits - 1) - 1;
  const sign = bits >>> (fmt.expBits + fmt.manBits) ? -1 : 1;
  const exp = (bits >>> fmt.manBits) & (2 ** fmt.expBits - 1);
  const man = bits & (2 ** fmt.manBits - 1);
  if (exp === 2 ** fmt.expBits - 1) return man === 0 ? sign * Infinity : NaN;
  if (exp === 0) return sign * man * 2 ** (1 - bias - fmt.manBits);
  return sign * (1 + man / 2 ** fmt.manBits) * 2 ** (exp - bias);
}

/**
 * Round a finite or infinite double to `fmt` (nearest, ties to even) the slow way: find the binade
 * with Math.log2, scale to an integer significand, round by comparing the remainder with 1/2, and
 * assemble the fields arithmetically. Independent of the bit-twiddling under test.
 */
function refEncode(fmt: Fmt, x: number): number {
  const signBit = x < 0 || Object.is(x, -0) ? 2 ** (fmt.expBits + fmt.manBits) : 0;
  const infBits = signBit + (2 ** fmt.expBits - 1) * 2 ** fmt.manBits;
  const a = Math.abs(x);
  if (a === Infinity) return infBits;
  if (a === 0) return signBit;
  const bias = 2 ** (fmt.expBits - 1) - 1;
  const emin = 1 - bias;
  let e = Math.floor(Math.log2(a));
  // Math.log2 may be off by one next to powers of two; settle it exactly.
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  if (e < emin) e = emin; // subnormal range shares the least normal's spacing
  const ulp = 2 ** (e - fmt.manBits);
  const q = a / ulp; // exact: division by a power of two in range
  let n = Math.floor(q);
  const r = q - n;
  if (r > 0.5 || (r === 0.5 && n % 2 === 1)) n += 1;
  // n in [0, 2^(manBits+1)]; n == 2^(manBits+1) carried into the next binade.
  let expField: number;
  let man: number;
  if (n >= 2 ** (fmt.manBits + 1)) {
    e += 1;
    n /= 2;
  }
  if (n < 2 ** fmt.manBits) {
    expField = 0; // subnormal (only reachable at e == emin)
    man = n;
  } else {
    expField = e + bias;
    man = n - 2 ** fmt.manBits;
  }
  if (expField >= 2 ** fmt.expBits - 1) return infBits;
  return signBit + expField * 2 ** fmt.manBits + man;
}

function isNaNBits(fmt: Fmt, bits: number): boolean {
  const exp = (bits >>> fmt.manBits) & (2 ** fmt.expBits - 1);
  return exp === 2 ** fmt.expBits - 1 && (bits & (2 ** fmt.manBits - 1)) !== 0;
}

/** The f32 neighbour of the f32 value x in direction dir (x finite, nonzero or moving up). */
function nextF32(x: number, dir: 1 | -1): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  if (x === 0) return dir * 2 ** -149;
  u[0] += x > 0 === dir > 0 ? 1 : -1;
  return f[0];
}

const hex = (v: number): string => "0x" + v.toString(16).padStart(4, "0");

for (const [fmt, toBits, fromBits, st] of [
  [BF16, f32ToBf16Bits, bf16BitsToF32, "BF16"],
  [F16, f32ToF16Bits, f16BitsToF32, "F16"],
] as const) {
  test(`${fmt.name}: all 65536 bit patterns decode to the field formula and round trip`, () => {
    let nans = 0;
    for (let b = 0; b < 65536; b++) {
      const v = fromBits(b);
      const ref = refDecode(fmt, b);
      if (isNaNBits(fmt, b)) {
        nans++;
        assert.ok(Number.isNaN(v), `${hex(b)} should decode to NaN, got ${v}`);
        // Scalar path: a JS number does not carry NaN payloads reliably, so NaN canonicalizes
        // to the quiet NaN; all that is promised is "still NaN".
        assert.ok(isNaNBits(fmt, toBits(v)), `${hex(b)}: NaN must stay NaN`);
        continue;
      }
      assert.ok(Object.is(v, ref), `${hex(b)} decodes to ${v}, field formula says ${ref}`);
      assert.equal(toBits(v), b, `${hex(b)} -> ${v} -> ${hex(toBits(v))}`);
    }
    assert.equal(nans, 2 * (2 ** fmt.manBits - 1));
  });

  test(`${fmt.name}: bulk decode/encode of all 65536 patterns keeps every bit (NaNs made quiet)`, () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const bytes = new Uint8Array(all.buffer);
    const f32 = decodeToFloat(bytes, st, "f32") as Float32Array;
    const back = new Uint16Array(encodeFloat(f32, st).slice().buffer);
    const quiet = 1 << (fmt.manBits - 1);
    let mismatches = 0;
    for (let b = 0; b < 65536; b++) {
      // The bulk path works on bit patterns: sign and payload survive, only the quiet bit is set.
      const want = isNaNBits(fmt, b) ? b | quiet : b;
      if (back[b] !== want) mismatches++;
    }
    assert.equal(mismatches, 0);
    // f64 output agrees with the scalar decoder, and re-encoding from f64 gives the same bits.
    const f64 = decodeToFloat(bytes, st, "f64") as Float64Array;
    const back64 = new Uint16Array(encodeFloat(f64, st).slice().buffer);
    for (let b = 0; b < 65536; b++) {
      if (isNaNBits(fmt, b)) {
        assert.ok(Number.isNaN(f64[b]) && isNaNBits(fmt, back64[b]));
        continue;
      }
      assert.ok(Object.is(f64[b], fromBits(b)), `${hex(b)}`);
      assert.equal(back64[b], b, `${hex(b)} via f64`);
    }
  });

  test(`${fmt.name}: every midpoint between neighbours ties to even; a hair off it rounds to the nearer`, () => {
    // For each pair of adjacent finite values (both signs), the exact midpoint and the f32 and f64
    // values just beside it, through the scalar path and the bulk f32 and f64 paths.
    const top = (2 ** fmt.expBits - 1) * 2 ** fmt.manBits - 1; // largest finite magnitude pattern
    const xs: number[] = [];
    const want: number[] = [];
    const signBit = 2 ** (fmt.expBits + fmt.manBits);
    for (let b = 0; b < top; b++) {
      const lo = fromBits(b);
      const hi = fromBits(b + 1);
      const mid = (lo + hi) / 2; // exact in f32 and f64
      const below32 = nextF32(mid, -1);
      const above32 = nextF32(mid, +1);
      const eps = (hi - lo) * 2 ** -30; // far below f32 resolution near mid
      for (const sign of [1, -1]) {
        const s = sign < 0 ? signBit : 0;
        xs.push(sign * mid, sign * below32, sign * above32, sign * (mid - eps), sign * (mid + eps));
        want.push(s + (b % 2 === 0 ? b : b + 1), s + b, s + b + 1, s + b, s + b + 1);
      }
    }
    const bulk64 = new Uint16Array(encodeFloat(new Float64Array(xs), st).slice().buffer);
    const f32Only = xs.filter((_, i) => i % 5 < 3);
    const bulk32 = new Uint16Array(encodeFloat(new Float32Array(f32Only), st).slice().buffer);
    let bad = 0;
    for (let i = 0; i < xs.length; i++) {
      if (toBits(xs[i]) !== want[i] || bulk64[i] !== want[i]) {
        if (bad++ < 5) console.log(`  ${fmt.name} x=${xs[i]} want ${hex(want[i])} scalar ${hex(toBits(xs[i]))} bulk64 ${hex(bulk64[i])}`);
      }
    }
    for (let i = 0, j = 0; i < xs.length; i++) {
      if (i % 5 >= 3) continue;
      if (bulk32[j++] !== want[i] && bad++ < 10) console.log(`  ${fmt.name} bulk f32 x=${xs[i]} want ${hex(want[i])}`);
    }
    console.log(`  ${fmt.name}: ${xs.length} values at and beside ${2 * top} midpoints, ${bad} wrong`);
    assert.equal(bad, 0);
  });

  test(`${fmt.name}: random floats round like the Math.log2 reference (scalar, bulk f32, bulk f64)`, () => {
    const rng = new Rng(fmt.manBits * 1000 + 7);
    const n = 100_000;
    const xs = new Float64Array(n);
    const maxExp = fmt === BF16 ? 130 : 17; // a little past each format's range, to hit overflow
    const minExp = fmt === BF16 ? -140 : -27; // a little below the least subnormal
    for (let i = 0; i < n; i++) {
      const mag = 2 ** rng.uniform(minExp, maxExp);
      const sign = rng.next() < 0.5 ? -1 : 1;
      // Half the samples are f32 values (the usual case), half arbitrary doubles (f64 inputs).
      xs[i] = i % 2 === 0 ? Math.fround(sign * mag) : sign * mag;
    }
    // Random f32 bit patterns too (all exponents, NaN excluded), for the bf16 bit trick.
    const u = new Uint32Array(n);
    for (let i = 0; i < n; i++) u[i] = rng.nextU32();
    const f32FromBits = new Float32Array(u.buffer);

    const bulk64 = new Uint16Array(encodeFloat(xs, st).slice().buffer);
    const xs32 = new Float32Array(xs.filter((_, i) => i % 2 === 0));
    const bulk32 = new Uint16Array(encodeFloat(xs32, st).slice().buffer);
    const bulkBits = new Uint16Array(encodeFloat(f32FromBits, st).slice().buffer);
    let bad = 0;
    let maxRelErr = 0;
    for (let i = 0; i < n; i++) {
      const want = refEncode(fmt, xs[i]);
      const got = toBits(xs[i]);
      if (got !== want || bulk64[i] !== want || (i % 2 === 0 && bulk32[i / 2] !== want)) {
        if (bad++ < 5) console.log(`  ${fmt.name} x=${xs[i]} ref=${hex(want)} scalar=${hex(got)} bulk64=${hex(bulk64[i])}`);
      }
      const v = fromBits(got);
      if (Number.isFinite(v) && Math.abs(xs[i]) >= 2 ** (2 - 2 ** (fmt.expBits - 1))) {
        maxRelErr = Math.max(maxRelErr, Math.abs(v - xs[i]) / Math.abs(xs[i]));
      }
    }
    for (let i = 0; i < n; i++) {
      const x = f32FromBits[i];
      if (Number.isNaN(x)) continue;
      const want = refEncode(fmt, x);
      if (toBits(x) !== want || bulkBits[i] !== want) {
        if (bad++ < 10) console.log(`  ${fmt.name} f32 bits ${u[i].toString(16)} ref=${hex(want)} got=${hex(toBits(x))}`);
      }
    }
    // Normal-range relative error is at most half an ulp: 2^-(manBits+1).
    console.log(
      `  ${fmt.name}: ${2 * n} samples, ${bad} mismatches, max rel err ${maxRelErr.toExponential(3)} (bound ${2 ** -(fmt.manBits + 1)})`,
    );
    assert.equal(bad, 0);
    assert.ok(maxRelErr <= 2 ** -(fmt.manBits + 1));
  });
}

test("bf16: ties round to even, and f64 inputs round once (no double rounding via f32)", () => {
  assert.equal(f32ToBf16Bits(1), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80); // tie, 0x3f80 is even
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82); // tie, rounds up to even
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -23), 0x3f81); // just above the tie (an f32 value)
  // 1 + 2^-8 + 2^-40 is a tie in f32 but above it in truth: the correct answer is 0x3f81.
  assert.equal(Math.fround(1 + 2 ** -8 + 2 ** -40), 1 + 2 ** -8);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8 + 2 ** -40), 0x3f81);
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8 - 2 ** -40), 0x3f81);
  const viaBulk = new Uint16Array(
    encodeFloat(new Float64Array([1 + 2 ** -8 + 2 ** -40, -(1 + 2 ** -8 + 2 ** -40)]), "BF16").slice().buffer,
  );
  assert.deepEqual([...viaBulk], [0x3f81, 0xbf81]);
  // Special values.
  assert.equal(f32ToBf16Bits(-0), 0x8000);
  assert.equal(f32ToBf16Bits(0), 0x0000);
  assert.equal(f32ToBf16Bits(Infinity), 0x7f80);
  assert.equal(f32ToBf16Bits(-Infinity), 0xff80);
  assert.equal(f32ToBf16Bits(NaN), 0x7fc0);
  assert.equal(f32ToBf16Bits(3.3895313892515355e38), 0x7f7f); // largest bf16
  assert.equal(f32ToBf16Bits(3.4028234663852886e38), 0x7f80); // FLT_MAX is past the bf16 tie: inf
  assert.equal(f32ToBf16Bits(-1e39), 0xff80); // beyond f32 too
  assert.equal(f32ToBf16Bits(2 ** -133), 0x0001); // least bf16 subnormal
  assert.equal(f32ToBf16Bits(2 ** -134), 0x0000); // tie with 0, to even
  assert.equal(f32ToBf16Bits(2 ** -134 + 2 ** -160), 0x0001); // above the tie (not an f32 value)
  assert.equal(f32ToBf16Bits(1e-300), 0x0000);
  assert.equal(f32ToBf16Bits(-1e-300), 0x8000);
});

test("f16: ties, subnormals, overflow, -0, inf, NaN", () => {
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie to even
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f32ToF16Bits(1 + 2 ** -11 + 2 ** -40), 0x3c01); // f64 input, no double rounding
  // Subnormals: least 2^-24; 2^-25 ties to 0; 3 * 2^-25 ties to 2 (even).
  assert.equal(f32ToF16Bits(2 ** -24), 0x0001);
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000);
  assert.equal(f32ToF16Bits(2 ** -25 * 1.0000001), 0x0001);
  assert.equal(f32ToF16Bits(3 * 2 ** -25), 0x0002);
  assert.equal(f32ToF16Bits(5 * 2 ** -25), 0x0002);
  assert.equal(f32ToF16Bits(-(2 ** -24)), 0x8001);
  assert.equal(f32ToF16Bits(1023 * 2 ** -24), 0x03ff); // largest subnormal
  assert.equal(f32ToF16Bits(1023.5 * 2 ** -24), 0x0400); // ties up into the least normal (even)
  assert.equal(f32ToF16Bits(2 ** -14), 0x0400);
  assert.equal(f16BitsToF32(0x0001), 2 ** -24);
  assert.equal(f16BitsToF32(0x03ff), 1023 * 2 ** -24);
  // Overflow: 65504 is the largest; 65520 is the tie with 2^16 and goes to inf.
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65519.99), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00);
  assert.equal(f32ToF16Bits(-1e6), 0xfc00);
  assert.equal(f32ToF16Bits(1e300), 0x7c00);
  assert.equal(f32ToF16Bits(-0), 0x8000);
  assert.equal(f32ToF16Bits(Infinity), 0x7c00);
  assert.equal(f32ToF16Bits(-Infinity), 0xfc00);
  assert.equal(f32ToF16Bits(NaN), 0x7e00);
  assert.ok(Object.is(f16BitsToF32(0x8000), -0));
  assert.equal(f16BitsToF32(0x7c00), Infinity);
});

test("decodeToFloat / decodeToInt32: every integer and float storage dtype, aligned or not", () => {
  const rng = new Rng(42);
  const n = 257;
  const i32 = new Int32Array(n).map(() => rng.nextU32() | 0);
  const f64 = new Float64Array(n).map(() => rng.normal() * 1e3);
  const cases: Array<[string, Uint8Array, (i: number) => number]> = [
    ["F64", new Uint8Array(f64.buffer), (i) => f64[i]],
    ["F32", new Uint8Array(new Float32Array(f64).buffer), (i) => Math.fround(f64[i])],
    ["I32", new Uint8Array(i32.buffer), (i) => i32[i]],
    ["I16", new Uint8Array(new Int16Array(i32).buffer), (i) => (i32[i] << 16) >> 16],
    ["I8", new Uint8Array(new Int8Array(i32).buffer), (i) => (i32[i] << 24) >> 24],
    ["U8", new Uint8Array(i32.map((v) => v & 0xff)), (i) => i32[i] & 0xff],
    ["BOOL", new Uint8Array(i32.map((v) => ((v & 3) === 0 ? 0 : 1))), (i) => ((i32[i] & 3) === 0 ? 0 : 1)],
    ["I64", new Uint8Array(new BigInt64Array(Array.from(i32, (v) => BigInt(v) * 1000n)).buffer), (i) => i32[i] * 1000],
  ];
  for (const [dtype, raw, want] of cases) {
    // Misalign on purpose: views need aligned offsets, so the decoder must copy.
    const buf = new Uint8Array(raw.byteLength + 1);
    buf.set(raw, 1);
    for (const bytes of [raw, buf.subarray(1)]) {
      const a64 = decodeToFloat(bytes, dtype, "f64");
      const a32 = decodeToFloat(bytes, dtype, "f32");
      assert.ok(a64 instanceof Float64Array && a32 instanceof Float32Array);
      for (let i = 0; i < n; i++) {
        assert.equal(a64[i], want(i), `${dtype}[${i}] f64`);
        assert.equal(a32[i], Math.fround(want(i)), `${dtype}[${i}] f32`);
      }
      // (I64 here holds values * 1000, beyond int32: its int path is checked below.)
      if (!dtype.startsWith("F") && dtype !== "I64") {
        assert.deepEqual(
          [...decodeToInt32(bytes, dtype)],
          Array.from({ length: n }, (_, i) => want(i)),
          `${dtype} int32`,
        );
      }
    }
  }
  // I64 beyond int32 is refused by decodeToInt32; beyond 2^53 by decodeToFloat.
  const big = new Uint8Array(new BigInt64Array([1n, 2n ** 40n, -3n]).buffer);
  assert.throws(
    () => decodeToInt32(big, "I64"),
    (e: unknown) => e instanceof DataFormatError && e.code === "out_of_range",
  );
  assert.deepEqual([...decodeToFloat(big, "I64", "f64")], [1, 2 ** 40, -3]);
  const huge = new Uint8Array(new BigInt64Array([2n ** 60n]).buffer);
  assert.throws(
    () => decodeToFloat(huge, "I64", "f64"),
    (e: unknown) => e instanceof DataFormatError && e.code === "out_of_range",
  );
  assert.deepEqual([...decodeToInt32(new Uint8Array(new BigInt64Array([-5n, 2147483647n]).buffer), "I64")], [-5, 2147483647]);
  // Float dtypes are not integer storage; unknown dtypes are named.
  assert.throws(
    () => decodeToInt32(new Uint8Array(4), "F32"),
    (e: unknown) => e instanceof DataFormatError && e.code === "unsupported_dtype",
  );
  assert.throws(() => decodeToFloat(new Uint8Array(4), "Q4_K", "f32"), /Q4_K/);
  assert.throws(() => decodeToFloat(new Uint8Array(3), "F16", "f32"), InvariantError);
});

test("encodeFloat / encodeInt round trip through the decoders", () => {
  const rng = new Rng(7);
  const f64 = new Float64Array(1000).map(() => rng.normal() * 2 ** rng.uniform(-20, 20));
  const f32 = new Float32Array(f64);
  assert.deepEqual(decodeToFloat(encodeFloat(f64, "F64"), "F64", "f64"), f64);
  assert.deepEqual(decodeToFloat(encodeFloat(f32, "F32"), "F32", "f32"), f32);
  assert.deepEqual(decodeToFloat(encodeFloat(f64, "F32"), "F32", "f32"), f32); // f64 -> F32 rounds like Math.fround
  assert.deepEqual(decodeToFloat(encodeFloat(f32, "F64"), "F64", "f32"), f32);
  // 16-bit: decode(encode(x)) equals the scalar rounding of x.
  let maxAbs = 0;
  let sumAbs = 0;
  const bf = decodeToFloat(encodeFloat(f32, "BF16"), "BF16", "f32");
  const hf = decodeToFloat(encodeFloat(f64, "F16"), "F16", "f64");
  for (let i = 0; i < f32.length; i++) {
    assert.equal(bf[i], bf16BitsToF32(f32ToBf16Bits(f32[i])));
    assert.equal(hf[i], f16BitsToF32(f32ToF16Bits(f64[i])));
    maxAbs = Math.max(maxAbs, Math.abs(bf[i] - f32[i]) / Math.abs(f32[i]));
    sumAbs += Math.abs(bf[i] - f32[i]) / Math.abs(f32[i]);
  }
  console.log(`  bf16 relative error: max ${maxAbs.toExponential(3)}, mean ${(sumAbs / f32.length).toExponential(3)}`);
  assert.ok(maxAbs <= 2 ** -8 && maxAbs > 0);

  const ints = new Int32Array(500).map(() => rng.nextU32() | 0);
  assert.deepEqual(decodeToInt32(encodeInt(ints, "I32"), "I32"), ints);
  assert.deepEqual(decodeToInt32(encodeInt(ints, "I64"), "I64"), ints);
  const i64 = new BigInt64Array(encodeInt(ints, "I64").slice().buffer);
  assert.deepEqual(
    [...i64],
    Array.from(ints, (v) => BigInt(v)),
  );
  const small = ints.map((v) => v & 0xff);
  assert.deepEqual(decodeToInt32(encodeInt(small, "U8"), "U8"), small);
  assert.throws(() => encodeInt(new Int32Array([256]), "U8"), InvariantError);
});
