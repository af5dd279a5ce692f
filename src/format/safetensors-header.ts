/**
 * The safetensors byte layout of a file's header, both ways: the dtypes and their sizes, parsing
 * and validating a header read from disk (every entry's dtype, shape and offsets, overlaps,
 * truncation), and encoding one exactly as safetensors-rs writes it. Bytes only: no tensor data
 * is read or written here (safetensors.ts does that), no Tensor, no math.
 *
 * File layout (https://github.com/huggingface/safetensors, README "Format"):
 *
 *   [ u64 LE: N ][ N bytes of JSON header, space-padded to a multiple of 8 ][ data section ... ]
 *   header = { "__metadata__"?: {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]} }
 *   offsets are relative to the first byte of the data section.
 */

import fs from "node:fs";
import { CheckpointFormatError } from "../util/index.ts";

export type StDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<StDType, number> = {
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
 * The order of safetensors-rs's `Dtype` enum ("in increasing alignment order"), restricted to the
 * dtypes npr reads. The writer sorts by it (descending), then by name, exactly as
 * safetensors-rs `prepare()` does, so every tensor starts at a multiple of its element size.
 */
const RS_DTYPE_ORDER: readonly StDType[] = ["BOOL", "U8", "I8", "I16", "F16", "BF16", "I32", "F32", "F64", "I64"];

/** safetensors-rs refuses headers above 100 MB; a bigger length means a corrupt or foreign file. */
const MAX_HEADER_BYTES = 100_000_000;

/** Largest single read or write handed to the OS: Linux moves at most ~2 GiB per call. */
export const IO_CHUNK = 1 << 30;

const TRUNCATED_HINT = "the file may be truncated (an interrupted download or save): re-download or re-save it";
const CORRUPT_HINT = "the file is not a valid safetensors file: re-download or re-save it";

export interface TensorEntry {
  name: string;
  dtype: StDType;
  shape: number[];
  /** The file holding the tensor. */
  file: string;
  /** Absolute byte offset in `file` of the tensor's first byte. */
  offset: number;
  byteLength: number;
}

/** What the header says of a tensor to write (its bytes are the writer's business). */
export interface HeaderEntry {
  name: string;
  dtype: StDType;
  shape: number[];
}

// Validation helpers, shared with the writers and the index reader of safetensors.ts.

export function isStDType(s: unknown): s is StDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_BYTES, s);
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function elements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Bytes a tensor of this dtype and shape holds. */
export function byteLengthOf(e: { dtype: StDType; shape: readonly number[] }): number {
  return elements(e.shape) * DTYPE_BYTES[e.dtype];
}

/** Reads exactly `out.byteLength` bytes at `position`; a short file is a truncation error. */
export function readFully(fd: number, out: Uint8Array, position: number, file: string, what: string): void {
  let done = 0;
  while (done < out.byteLength) {
    const n = fs.readSync(fd, out, done, Math.min(IO_CHUNK, out.byteLength - done), position + done);
    if (n === 0) {
      throw new CheckpointFormatError(
        `safetensors file ${file}: ${what} needs bytes [${position}, ${position + out.byteLength}) ` +
          `but the file ends at ${position + done}`,
        { code: "truncated", param: file, hint: TRUNCATED_HINT },
      );
    }
    done += n;
  }
}

/**
 * Reads and validates the header of an open file: every entry's dtype, shape and offsets, sizes
 * against shapes, overlaps, and the data section's length against the largest end offset.
 *
 * NOTE: safetensors-rs additionally requires the tensors to tile the data section exactly (no gap,
 * no trailing byte). npr reads gaps and trailing bytes without complaint, since they cannot make
 * a tensor wrong; it refuses overlaps, which can.
 */
export function parseHeader(file: string, fd: number): { metadata: Record<string, string> | null; entries: TensorEntry[] } {
  const fileSize = fs.fstatSync(fd).size;
  const fail = (code: string, what: string, param = file, hint = CORRUPT_HINT): CheckpointFormatError =>
    new CheckpointFormatError(`safetensors file ${file}: ${what}`, { code, param, hint });

  if (fileSize < 8) {
    throw fail("file_too_short", `is ${fileSize} bytes, shorter than the 8-byte header length`, file, TRUNCATED_HINT);
  }
  const lenBytes = new Uint8Array(8);
  readFully(fd, lenBytes, 0, file, "the header length");
  const lenView = new DataView(lenBytes.buffer);
  const headerLen = lenView.getUint32(4, true) * 4294967296 + lenView.getUint32(0, true);
  if (headerLen > MAX_HEADER_BYTES) {
    throw fail(
      "header_too_large",
      `header length is ${headerLen} bytes, above the ${MAX_HEADER_BYTES}-byte limit: ` +
        "this is not a safetensors file, or its first 8 bytes are corrupt",
    );
  }
  if (8 + headerLen > fileSize) {
    const what = `header length is ${headerLen} bytes but only ${fileSize - 8} bytes follow the length`;
    throw fail("header_out_of_bounds", what, file, TRUNCATED_HINT);
  }
  const headerBytes = new Uint8Array(headerLen);
  readFully(fd, headerBytes, 8, file, "the header");
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw fail("header_not_json", `header (${headerLen} bytes) is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  if (!isObject(header)) throw fail("header_invalid", "header is not a JSON object");

  let metadata: Record<string, string> | null = null;
  const dataStart = 8 + headerLen;
  // Offsets in messages are relative to the data section, as the header writes them.
  const span = (e: TensorEntry): string => `[${e.offset - dataStart}, ${e.offset - dataStart + e.byteLength})`;
  const entries: TensorEntry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (!isObject(info) || !Object.values(info).every((v) => typeof v === "string")) {
        const got = JSON.stringify(info).slice(0, 200);
        throw fail("header_invalid", `"__metadata__" must map strings to strings, got ${got}`, name);
      }
      metadata = info as Record<string, string>;
      continue;
    }
    const at = `tensor "${name}"`;
    if (!isObject(info)) throw fail("header_invalid", `${at}: entry is not an object`, name);
    const dtype = info["dtype"];
    if (!isStDType(dtype)) {
      const known = Object.keys(DTYPE_BYTES).join(", ");
      throw fail(
        "unknown_dtype",
        `${at}: dtype ${JSON.stringify(dtype)} is not one npr reads (${known})`,
        name,
        "quantized or exotic dtypes are not supported: convert the checkpoint to bf16, f16 or f32",
      );
    }
    const shape = info["shape"];
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      throw fail("header_invalid", `${at}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`, name);
    }
    const offsets = info["data_offsets"];
    const [begin, end] = Array.isArray(offsets) && offsets.length === 2 ? offsets : [];
    if (!isCount(begin) || !isCount(end) || begin > end) {
      const got = JSON.stringify(offsets);
      throw fail("offsets_invalid", `${at}: data_offsets ${got} is not [begin, end] with 0 <= begin <= end`, name);
    }
    const expected = elements(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      const what = `${dtype} [${shape.join(", ")}] needs ${expected} bytes, data_offsets [${begin}, ${end}] span ${end - begin}`;
      throw fail("size_mismatch", `${at}: ${what}`, name);
    }
    entries.push(Object.freeze({ name, dtype, shape: [...shape], file, offset: dataStart + begin, byteLength: expected }));
  }

  entries.sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  // Overlaps: in start order, each non-empty tensor must start at or after the furthest end so far.
  let furthest: TensorEntry | null = null;
  for (const e of entries) {
    if (e.byteLength === 0) continue; // owns no bytes, overlaps nothing
    if (furthest !== null && e.offset < furthest.offset + furthest.byteLength) {
      const what = `tensor "${e.name}" (data bytes ${span(e)}) overlaps tensor "${furthest.name}" (data bytes ${span(furthest)})`;
      throw fail("offsets_overlap", what, e.name);
    }
    if (furthest === null || e.offset + e.byteLength > furthest.offset + furthest.byteLength) furthest = e;
  }
  // Truncation: name the first tensor (in file order) that runs past the end of the file.
  const cut = entries.filter((e) => e.offset + e.byteLength > fileSize);
  if (cut.length > 0) {
    const what =
      `tensor "${cut[0].name}" needs data bytes ${span(cut[0])} but the data section holds only ` +
      `${fileSize - dataStart} bytes (file size ${fileSize}); ${cut.length} tensor(s) are cut off`;
    throw fail("truncated", what, cut[0].name, TRUNCATED_HINT);
  }
  return { metadata, entries };
}

/**
 * The header safetensors-rs (Python's `save_file`) writes for these tensors, byte for byte, and
 * the order their data must follow it in: tensors sorted by dtype alignment (I64, F64, F32, I32,
 * BF16, F16, I16, I8, U8, BOOL) then by name, the header as compact JSON with "__metadata__"
 * first (only when given) and the tensors in data order, padded with spaces to a multiple of 8 so
 * every tensor is aligned to its element size. `head` is the u64 length plus the padded JSON.
 */
export function encodeHeader<E extends HeaderEntry>(
  entries: readonly E[],
  metadata?: Record<string, string>,
): { head: Uint8Array; sorted: E[] } {
  const rank = (d: StDType): number => RS_DTYPE_ORDER.indexOf(d);
  // Code-unit order, as Rust's byte-wise String order for the BMP (names are ASCII in practice).
  const byName = (a: E, b: E): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const sorted = [...entries].sort((a, b) => rank(b.dtype) - rank(a.dtype) || byName(a, b));

  // Built by hand rather than from one object: JS enumerates integer-like keys ("0", "12") first,
  // which would break the data order of the header.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta = Object.entries(metadata).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
    parts.push(`"__metadata__":{${meta.join(",")}}`);
  }
  let offset = 0;
  for (const e of sorted) {
    const n = byteLengthOf(e);
    const info = `{"dtype":"${e.dtype}","shape":[${e.shape.join(",")}],"data_offsets":[${offset},${offset + n}]}`;
    parts.push(`${JSON.stringify(e.name)}:${info}`);
    offset += n;
  }
  const json = new TextEncoder().encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { head, sorted };
}
