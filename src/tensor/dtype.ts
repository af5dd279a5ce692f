/**
 * Exact conversions between storage formats (the little-endian bytes of a safetensors tensor:
 * F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL) and the compute arrays npr works in
 * (Float32Array, Float64Array, Int32Array). Float narrowing rounds to nearest, ties to even,
 * from the exact input value; overflow gives inf; NaN stays NaN.
 *
 * This file knows bytes and numbers only: no Tensor, no file, no safetensors header (format/
 * hands bytes up; the model layer calls these to make arrays). It assumes a little-endian host.
 */

import { DataFormatError, InvariantError, invariant } from "../util/index.ts";

// Typed-array views use host byte order, and safetensors is little-endian: on a big-endian host
// every multi-byte path below would silently byte-swap, so refuse to run there at all.
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
invariant(HOST_IS_LITTLE_ENDIAN, "npr's dtype conversions assume a little-endian host (x86-64 or arm64)");

/** Shared one-element scratch for the scalar bit casts (f32 <-> u32). */
const SCRATCH_F32 = new Float32Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_F32.buffer);

/** Elements per chunk when a 16-bit format is widened to f64 through an f32 scratch. */
const WIDEN_CHUNK = 1 << 16;

// ---------------------------------------------------------------------------------------------
// Scalar bit-level conversions
// ---------------------------------------------------------------------------------------------

/**
 * The f32 bit pattern of x rounded *to odd*: x itself when x is an f32 value, otherwise the one of
 * its two f32 neighbours whose last mantissa bit is 1 (beyond the f32 range this gives +-FLT_MAX).
 *
 * Why: narrowing an f64 to bf16/f16 through an f32 rounded to nearest can round twice (1 + 2^-8 +
 * 2^-40 becomes 1 + 2^-8 in f32, a tie, then 1 in bf16, where the right answer is 1 + 2^-7).
 * Rounding to odd into a format with at least two more significand bits than the target, then to
 * nearest-even into the target, equals a single correct rounding (Boldo & Melquiond, "Emulation
 * of FMA and correctly-rounded sums: proved algorithms using rounding to odd", 2008). f32 has 16
 * more bits than bf16 and 13 more than f16, over an exponent range covering both targets'.
 */
function roundToOddF32Bits(x: number): number {
  SCRATCH_F32[0] = x; // round to nearest even (the JS spec's ToFloat32)
  const f = SCRATCH_F32[0];
  let u = SCRATCH_U32[0];
  // f !== x: inexact (NaN also compares unequal, but f === f filters it out).
  if (f !== x && f === f && (u & 1) === 0) {
    // x lies strictly between f and the neighbour on x's side; that neighbour has the odd last
    // bit. Sign-magnitude bit patterns step across binades (and from 0 to the least subnormal)
    // by +-1 on the magnitude.
    u = Math.abs(x) > Math.abs(f) ? u + 1 : u - 1;
  }
  return u >>> 0;
}

/** f32 bits -> bf16 bits, round to nearest even; NaN keeps its sign and top payload, made quiet. */
function f32BitsToBf16Bits(u: number): number {
  if ((u & 0x7fffffff) >>> 0 > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  // Adding 0x7fff plus the lowest kept bit rounds the dropped half-word to nearest even; a carry
  // out of the mantissa bumps the exponent, and past the largest finite value that lands on inf.
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 bits -> f16 bits, round to nearest even, with subnormals, overflow to inf and quiet NaN. */
function f32BitsToF16Bits(u: number): number {
  const sign = (u >>> 16) & 0x8000;
  const a = (u & 0x7fffffff) >>> 0;
  if (a >= 0x7f800000) {
    if (a === 0x7f800000) return sign | 0x7c00;
    return sign | 0x7e00 | ((a >>> 13) & 0x03ff); // NaN: quiet bit set, top payload kept
  }
  // 65520 = 65504 + half an ulp is the tie between the largest f16 (odd mantissa) and 2^16, so it
  // and everything above round to inf.
  if (a >= 0x477ff000) return sign | 0x7c00;
  if (a >= 0x38800000) {
    // Normal in f16 (|x| >= 2^-14): rebias the exponent by 127 - 15 = 112 and drop 13 bits.
    return sign | ((a + 0x0fff + ((a >>> 13) & 1) - 0x38000000) >>> 13);
  }
  // Subnormal or zero in f16: the result is round(|x| * 2^24) as an integer in [0, 1024]; 1024
  // is the least normal, whose bit pattern is exactly 0x0400, so no special case is needed.
  const e = a >>> 23;
  const shift = 126 - e; // |x| * 2^24 = m * 2^-shift with m the 24-bit significand
  if (e === 0 || shift > 24) return sign; // below 2^-25: rounds to zero (2^-25 itself ties to 0)
  const m = (a & 0x7fffff) | 0x800000;
  let q = m >>> shift;
  const rem = m & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (q & 1) === 1)) q += 1;
  return sign | q;
}

/**
 * x rounded to bf16, as its 16-bit pattern. Rounding is to nearest even from the exact value of x:
 * for an f32 value that is the usual f32 -> bf16 rounding; for any other double it is one correct
 * rounding (no double rounding through f32). Overflow gives +-inf; NaN gives the quiet NaN 0x7fc0
 * (a JS number does not carry NaN sign or payload reliably; the bulk paths keep them).
 */
export function f32ToBf16Bits(x: number): number {
  return f32BitsToBf16Bits(roundToOddF32Bits(x));
}

/** The value of a bf16 bit pattern (exact: bf16 is the top half of an f32). */
export function bf16BitsToF32(bits: number): number {
  SCRATCH_U32[0] = (bits & 0xffff) << 16;
  return SCRATCH_F32[0];
}

/**
 * x rounded to f16 (IEEE binary16), as its 16-bit pattern: round to nearest even from the exact
 * value of x, gradual underflow to subnormals (least 2^-24), overflow to +-inf (from 65520 up),
 * -0 kept, NaN gives the quiet NaN 0x7e00.
 */
export function f32ToF16Bits(x: number): number {
  return f32BitsToF16Bits(roundToOddF32Bits(x));
}

/** The value of an f16 bit pattern (exact). */
export function f16BitsToF32(bits: number): number {
  return f16Table().f32[bits & 0xffff];
}

/** f16 bits -> f32 bits, computed once for all 65536 patterns (256 KiB) and shared. */
let F16_TABLE: { u32: Uint32Array; f32: Float32Array } | null = null;

function f16Table(): { u32: Uint32Array; f32: Float32Array } {
  if (F16_TABLE !== null) return F16_TABLE;
  const u32 = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    const man = h & 0x03ff;
    let bits: number;
    if (exp === 0x1f) {
      bits = 0x7f800000 | (man << 13); // inf, or NaN with its payload (quiet bit maps to quiet bit)
    } else if (exp !== 0) {
      bits = ((exp + 112) << 23) | (man << 13);
    } else if (man === 0) {
      bits = 0;
    } else {
      // Subnormal f16 = man * 2^-24: normalize the mantissa into an f32 normal.
      let e = -14;
      let m = man;
      while ((m & 0x0400) === 0) {
        m <<= 1;
        e -= 1;
      }
      bits = ((e + 127) << 23) | ((m & 0x03ff) << 13);
    }
    u32[h] = (sign | bits) >>> 0;
  }
  F16_TABLE = { u32, f32: new Float32Array(u32.buffer) };
  return F16_TABLE;
}

// ---------------------------------------------------------------------------------------------
// Bulk decode: storage bytes -> compute arrays
// ---------------------------------------------------------------------------------------------

/** Bytes per element. Mirrors format/safetensors.ts DTYPE_BYTES, which tensor/ may not import. */
const ELEMENT_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/**
 * `bytes` itself when its offset is a multiple of `align`, else a copy at offset 0: typed-array
 * views need aligned offsets, and Node Buffers from the shared pool often are not.
 */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : bytes.slice();
}

function elementCount(bytes: Uint8Array, dtype: string, fn: string): number {
  const size = ELEMENT_BYTES[dtype];
  if (size === undefined) {
    throw new DataFormatError(`${fn}: unknown storage dtype "${dtype}"`, {
      code: "unsupported_dtype",
      param: dtype,
      hint: `npr reads ${Object.keys(ELEMENT_BYTES).join(", ")}`,
    });
  }
  invariant(
    bytes.byteLength % size === 0,
    () => `${fn}: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements (${size} bytes each)`,
  );
  return bytes.byteLength / size;
}

/** Values of little-endian I64 words as numbers; |v| > 2^53 cannot be held exactly, so it is refused. */
function decodeI64(bytes: Uint8Array, n: number, into: Float32Array | Float64Array | Int32Array, intRange: boolean): void {
  const b = aligned(bytes, 4);
  const w = new Int32Array(b.buffer, b.byteOffset, 2 * n);
  const lo32 = new Uint32Array(w.buffer, w.byteOffset, 2 * n);
  for (let i = 0; i < n; i++) {
    const v = w[2 * i + 1] * 4294967296 + lo32[2 * i]; // hi (signed) * 2^32 + lo (unsigned), exact here
    const ok = intRange ? v >= -2147483648 && v <= 2147483647 : Math.abs(v) <= 9007199254740992;
    if (!ok) {
      const range = intRange ? "int32" : "exactly (|v| <= 2^53)";
      throw new DataFormatError(`I64 element ${i} is ${v}, outside what npr can hold ${range}`, {
        code: "out_of_range",
        param: "I64",
        hint: "this tensor's values do not fit the compute dtype; check that the right tensor is loaded",
      });
    }
    into[i] = v;
  }
}

/**
 * Decodes little-endian storage bytes to a float array. Widening is exact; narrowing (F64 -> f32,
 * I32/I64 -> f32 beyond 2^24) rounds to nearest even. F16/BF16 -> f32 copy bit patterns, so NaN
 * payloads survive. NOTE: when the storage format already is the output format (F32 -> f32,
 * F64 -> f64) and `bytes` is aligned, the result is a view sharing memory with `bytes`, so a
 * multi-gigabyte checkpoint is not copied twice.
 */
export function decodeToFloat(bytes: Uint8Array, dtype: string, out: "f32" | "f64"): Float32Array | Float64Array {
  const n = elementCount(bytes, dtype, "decodeToFloat");
  const make = (src: Int32Array | Int16Array | Int8Array | Uint8Array): Float32Array | Float64Array =>
    out === "f32" ? new Float32Array(src) : new Float64Array(src);
  switch (dtype) {
    case "F32": {
      const b = aligned(bytes, 4);
      const v = new Float32Array(b.buffer, b.byteOffset, n);
      return out === "f32" ? v : new Float64Array(v);
    }
    case "F64": {
      const b = aligned(bytes, 8);
      const v = new Float64Array(b.buffer, b.byteOffset, n);
      return out === "f64" ? v : new Float32Array(v); // Float32Array conversion rounds to nearest even
    }
    case "BF16":
    case "F16": {
      const b = aligned(bytes, 2);
      const src = new Uint16Array(b.buffer, b.byteOffset, n);
      if (out === "f32") {
        const dst = new Uint32Array(n);
        widen16(src, dst, dtype);
        return new Float32Array(dst.buffer);
      }
      // f64: widen chunk by chunk through an f32 scratch, so the peak is the output plus 256 KiB.
      const dst = new Float64Array(n);
      const scratch = new Uint32Array(Math.min(n, WIDEN_CHUNK));
      const scratchF32 = new Float32Array(scratch.buffer);
      for (let start = 0; start < n; start += WIDEN_CHUNK) {
        const len = Math.min(WIDEN_CHUNK, n - start);
        widen16(src.subarray(start, start + len), scratch, dtype);
        dst.set(len === scratch.length ? scratchF32 : scratchF32.subarray(0, len), start);
      }
      return dst;
    }
    case "I64": {
      const dst = out === "f32" ? new Float32Array(n) : new Float64Array(n);
      decodeI64(bytes, n, dst, false); // exact integer, then one rounding into f32
      return dst;
    }
    case "I32": {
      const b = aligned(bytes, 4);
      return make(new Int32Array(b.buffer, b.byteOffset, n));
    }
    case "I16": {
      const b = aligned(bytes, 2);
      return make(new Int16Array(b.buffer, b.byteOffset, n));
    }
    case "I8":
      return make(new Int8Array(bytes.buffer, bytes.byteOffset, n));
    case "U8":
      return make(bytes);
    case "BOOL": {
      // Any nonzero byte is true (numpy and torch write 0/1, but read leniently).
      const dst = out === "f32" ? new Float32Array(n) : new Float64Array(n);
      for (let i = 0; i < n; i++) dst[i] = bytes[i] !== 0 ? 1 : 0;
      return dst;
    }
  }
  throw new InvariantError(`decodeToFloat: dtype ${dtype} has a size but no decoder`);
}

/** 16-bit float patterns -> f32 patterns (bf16: shift; f16: table). */
function widen16(src: Uint16Array, dst: Uint32Array, dtype: "BF16" | "F16"): void {
  const n = src.length;
  if (dtype === "BF16") {
    for (let i = 0; i < n; i++) dst[i] = src[i] << 16;
  } else {
    const table = f16Table().u32;
    for (let i = 0; i < n; i++) dst[i] = table[src[i]];
  }
}

/**
 * Decodes integer storage bytes (I64 within int32, I32, I16, I8, U8, BOOL as 0/1) to an Int32Array.
 * Float dtypes are refused: ids and positions must be stored as integers. I32 aligned input is
 * returned as a view sharing memory with `bytes`.
 */
export function decodeToInt32(bytes: Uint8Array, dtype: string): Int32Array {
  const n = elementCount(bytes, dtype, "decodeToInt32");
  switch (dtype) {
    case "I32": {
      const b = aligned(bytes, 4);
      return new Int32Array(b.buffer, b.byteOffset, n);
    }
    case "I64": {
      const dst = new Int32Array(n);
      decodeI64(bytes, n, dst, true);
      return dst;
    }
    case "I16": {
      const b = aligned(bytes, 2);
      return new Int32Array(new Int16Array(b.buffer, b.byteOffset, n));
    }
    case "I8":
      return new Int32Array(new Int8Array(bytes.buffer, bytes.byteOffset, n));
    case "U8":
      return new Int32Array(bytes);
    case "BOOL": {
      const dst = new Int32Array(n);
      for (let i = 0; i < n; i++) dst[i] = bytes[i] !== 0 ? 1 : 0;
      return dst;
    }
  }
  throw new DataFormatError(`decodeToInt32: dtype ${dtype} is a float format, not an integer one`, {
    code: "unsupported_dtype",
    param: dtype,
    hint: "integer data (ids, positions, masks) must be stored as I64, I32, I16, I8, U8 or BOOL",
  });
}

// ---------------------------------------------------------------------------------------------
// Bulk encode: compute arrays -> storage bytes
// ---------------------------------------------------------------------------------------------

function bytesOf(v: ArrayBufferView): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Encodes floats to little-endian storage bytes, rounding to nearest even from the exact input
 * value. From f32, BF16/F16 work on bit patterns (NaN sign and payload kept, made quiet); from
 * f64, each element is rounded to odd into f32 first (see roundToOddF32Bits), which makes the
 * f64 -> BF16/F16 result a single correct rounding. F32 from f32 and F64 from f64 return a view
 * sharing memory with `data` (no copy).
 */
export function encodeFloat(data: Float32Array | Float64Array, dtype: "F32" | "F16" | "BF16" | "F64"): Uint8Array {
  const n = data.length;
  const isF32 = data instanceof Float32Array;
  switch (dtype) {
    case "F32":
      return bytesOf(isF32 ? data : new Float32Array(data));
    case "F64":
      return bytesOf(isF32 ? new Float64Array(data) : data);
    case "BF16":
    case "F16": {
      const dst = new Uint16Array(n);
      const narrow = dtype === "BF16" ? f32BitsToBf16Bits : f32BitsToF16Bits;
      if (isF32) {
        // A Float32Array's byteOffset is always a multiple of 4, so a u32 view is legal.
        const src = new Uint32Array(data.buffer, data.byteOffset, n);
        if (dtype === "BF16") {
          // Hot path (a 4B-parameter model is 8 GB of bf16): the rounding inlined.
          for (let i = 0; i < n; i++) {
            const u = src[i];
            dst[i] = (u & 0x7fffffff) >>> 0 > 0x7f800000 ? (u >>> 16) | 0x0040 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
          }
        } else {
          for (let i = 0; i < n; i++) dst[i] = narrow(src[i]);
        }
      } else {
        for (let i = 0; i < n; i++) dst[i] = narrow(roundToOddF32Bits(data[i]));
      }
      return bytesOf(dst);
    }
  }
  throw new InvariantError(`encodeFloat: unknown dtype ${String(dtype)}`);
}

/**
 * Encodes int32 values to little-endian storage bytes. U8 refuses values outside [0, 255]. I32
 * returns a view sharing memory with `data`.
 */
export function encodeInt(data: Int32Array, dtype: "I32" | "I64" | "U8"): Uint8Array {
  const n = data.length;
  switch (dtype) {
    case "I32":
      return bytesOf(data); // a view: the storage format is the compute format
    case "I64": {
      // Little-endian: low word first, high word is the sign extension.
      const w = new Int32Array(2 * n);
      for (let i = 0; i < n; i++) {
        w[2 * i] = data[i];
        w[2 * i + 1] = data[i] < 0 ? -1 : 0;
      }
      return bytesOf(w);
    }
    case "U8": {
      const dst = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const v = data[i];
        invariant(v >= 0 && v <= 255, () => `encodeInt: element ${i} is ${v}, which U8 cannot hold`);
        dst[i] = v;
      }
      return dst;
    }
  }
  throw new InvariantError(`encodeInt: unknown dtype ${String(dtype)}`);
}

// ---------------------------------------------------------------------------------------------
// bf16 compute buffers: the host side of a "bf16" DeviceBuffer is a Uint16Array of bit patterns
// ---------------------------------------------------------------------------------------------

/**
 * f32 or f64 values rounded to bf16, as bit patterns: nearest even from the exact value (one
 * rounding for f64 input, see encodeFloat). What the backends' bf16 outputs and casts must equal.
 */
export function toBf16Bits(data: Float32Array | Float64Array): Uint16Array {
  const bytes = encodeFloat(data, "BF16");
  return new Uint16Array(bytes.buffer, bytes.byteOffset, data.length);
}

/** bf16 bit patterns widened to f32 (exact: a bf16 is the top half of an f32). */
export function bf16BitsToF32Array(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  invariant(out.length >= src.length, () => `bf16BitsToF32Array: out holds ${out.length}, need ${src.length}`);
  const u = new Uint32Array(out.buffer, out.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return out;
}
