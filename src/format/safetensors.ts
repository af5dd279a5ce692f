/**
 * safetensors on disk: reading one file or a (sharded) checkpoint folder lazily, and writing files
 * and checkpoints tensor by tensor, atomically, in the byte layout Hugging Face's safetensors
 * library produces. Bytes only: this file hands back raw little-endian tensor bytes and never
 * interprets them (no Tensor, no math; tensor/dtype.ts converts). Offsets are JS numbers, exact to
 * 2^53, and every read and write is positioned, so files past 2 GB (a Buffer's limit) work.
 *
 * File layout (https://github.com/huggingface/safetensors, README "Format"):
 *
 *   [ u64 LE: N ][ N bytes of JSON header, space-padded to a multiple of 8 ][ data section ... ]
 *   header = { "__metadata__"?: {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]} }
 *   offsets are relative to the first byte of the data section.
 */

import fs from "node:fs";
import path from "node:path";
import { CheckpointFormatError, invariant } from "../util/errors.ts";

export type StDType = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<StDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
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
const IO_CHUNK = 1 << 30;

/** Hugging Face's default shard size ("5GB" in huggingface_hub counts 10^9 bytes per GB). */
const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

const SINGLE_FILE = "model.safetensors";
const INDEX_FILE = "model.safetensors.index.json";
/** Files a checkpoint write owns in its folder: stale ones from an earlier save are removed. */
const OWNED_FILE = /^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/;

const INDEX_HINT = "re-download or re-save the index file with its shards";
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

/** One tensor to write. A thunk is called when the writer reaches the tensor, one at a time. */
export interface WriteEntry {
  name: string;
  dtype: StDType;
  shape: number[];
  data: Uint8Array | (() => Uint8Array);
}

/** Where a checkpoint tensor lives. */
interface Located {
  file: SafetensorsFile;
  entry: TensorEntry;
}

function isStDType(s: unknown): s is StDType {
  return typeof s === "string" && Object.hasOwn(DTYPE_BYTES, s);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function elements(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Positioned I/O
// ---------------------------------------------------------------------------------------------

/** Reads exactly `out.byteLength` bytes at `position`; a short file is a truncation error. */
function readFully(fd: number, out: Uint8Array, position: number, file: string, what: string): void {
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

function writeFully(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.byteLength) {
    done += fs.writeSync(fd, data, done, Math.min(IO_CHUNK, data.byteLength - done), position + done);
  }
}

/** Writes `produce(fd)` into `target` through a sibling temp file renamed into place. */
function writeAtomically(target: string, produce: (fd: number) => void): void {
  const tmp = `${target}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w");
  try {
    produce(fd);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, target);
}

// ---------------------------------------------------------------------------------------------
// Reading one file
// ---------------------------------------------------------------------------------------------

/** One .safetensors file, opened lazily: only the header is read at open. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string> | null;
  private fd: number | null;
  /** Entries in data order (by offset). */
  private readonly ordered: TensorEntry[];
  private readonly byName: Map<string, TensorEntry>;

  private constructor(file: string, fd: number, metadata: Record<string, string> | null, ordered: TensorEntry[]) {
    this.path = file;
    this.fd = fd;
    this.metadata = metadata;
    this.ordered = ordered;
    this.byName = new Map(ordered.map((e) => [e.name, e]));
  }

  /** Opens `file` and validates its whole header against the file size; no tensor data is read. */
  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch (err) {
      throw new CheckpointFormatError(`safetensors file ${file} cannot be opened: ${(err as Error).message}`, {
        code: "not_found",
        param: file,
        hint: "check the path, and that the checkpoint download is complete",
        cause: err,
      });
    }
    try {
      const { metadata, entries } = parseHeader(file, fd);
      return new SafetensorsFile(file, fd, metadata, entries);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** All tensors, in the order their bytes lie in the file. */
  entries(): TensorEntry[] {
    return [...this.ordered];
  }

  get(name: string): TensorEntry | undefined {
    return this.byName.get(name);
  }

  /** The raw little-endian bytes of one tensor, read with one positioned read (never the whole file). */
  readBytes(name: string): Uint8Array {
    const entry = this.byName.get(name);
    if (entry === undefined) throw missingTensor(this.path, name);
    invariant(this.fd !== null, () => `SafetensorsFile ${this.path} was read after close()`);
    const out = new Uint8Array(entry.byteLength);
    readFully(this.fd, out, entry.offset, this.path, `tensor "${name}"`);
    return out;
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

function missingTensor(where: string, name: string): CheckpointFormatError {
  return new CheckpointFormatError(`${where} holds no tensor "${name}"`, {
    code: "missing_tensor",
    param: name,
    hint: "the checkpoint does not match what is being loaded (another model, or a different config?)",
  });
}

/**
 * Reads and validates the header of an open file: every entry's dtype, shape and offsets, sizes
 * against shapes, overlaps, and the data section's length against the largest end offset.
 *
 * NOTE: safetensors-rs additionally requires the tensors to tile the data section exactly (no gap,
 * no trailing byte). npr reads gaps and trailing bytes without complaint, since they cannot make
 * a tensor wrong; it refuses overlaps, which can.
 */
function parseHeader(file: string, fd: number): { metadata: Record<string, string> | null; entries: TensorEntry[] } {
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
      throw fail("unknown_dtype", `${at}: dtype ${JSON.stringify(dtype)} is not one npr reads (${known})`, name,
        "quantized or exotic dtypes are not supported: convert the checkpoint to bf16, f16 or f32");
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

// ---------------------------------------------------------------------------------------------
// Reading a checkpoint folder
// ---------------------------------------------------------------------------------------------

/**
 * A checkpoint: model.safetensors, or model.safetensors.index.json + its shards, or a lone
 * *.safetensors file (several unindexed *.safetensors files are read together). A tensor that
 * appears in two files is an error, whatever the index says.
 */
export class SafetensorsCheckpoint {
  /** The index file when the checkpoint is sharded through one, else null. */
  readonly indexPath: string | null;
  readonly files: readonly SafetensorsFile[];
  private readonly byName: Map<string, Located>;

  private constructor(indexPath: string | null, files: SafetensorsFile[], byName: Map<string, Located>) {
    this.indexPath = indexPath;
    this.files = files;
    this.byName = byName;
  }

  /**
   * Opens a folder, an index json or one .safetensors file. In a folder, the first that exists
   * wins: model.safetensors.index.json, a single other *.safetensors.index.json, model.safetensors,
   * then every *.safetensors file. Only headers are read.
   */
  static open(dirOrFile: string): SafetensorsCheckpoint {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(dirOrFile);
    } catch (err) {
      throw new CheckpointFormatError(`checkpoint ${dirOrFile} does not exist`, {
        code: "not_found",
        param: dirOrFile,
        hint: "pass a folder holding model.safetensors (or an index and its shards), or a .safetensors file",
        cause: err,
      });
    }
    if (!stat.isDirectory()) {
      if (dirOrFile.endsWith(".json")) return SafetensorsCheckpoint.openIndexed(dirOrFile);
      return SafetensorsCheckpoint.openFiles([dirOrFile], null);
    }
    const names = fs.readdirSync(dirOrFile).sort();
    const indexes = names.filter((n) => n.endsWith(".safetensors.index.json"));
    if (indexes.includes(INDEX_FILE)) return SafetensorsCheckpoint.openIndexed(path.join(dirOrFile, INDEX_FILE));
    if (indexes.length === 1) return SafetensorsCheckpoint.openIndexed(path.join(dirOrFile, indexes[0]));
    if (names.includes(SINGLE_FILE)) return SafetensorsCheckpoint.openFiles([path.join(dirOrFile, SINGLE_FILE)], null);
    const files = names.filter((n) => n.endsWith(".safetensors"));
    if (files.length === 0) {
      throw new CheckpointFormatError(`checkpoint folder ${dirOrFile} holds no *.safetensors file`, {
        code: "no_safetensors",
        param: dirOrFile,
        hint: "the weights are missing: download model.safetensors (or the shards and their index) into this folder",
      });
    }
    return SafetensorsCheckpoint.openFiles(files.map((n) => path.join(dirOrFile, n)), null);
  }

  /** Tensor names: files in order, each in data order. */
  names(): string[] {
    return [...this.byName.keys()];
  }

  get(name: string): TensorEntry | undefined {
    return this.byName.get(name)?.entry;
  }

  readBytes(name: string): Uint8Array {
    const hit = this.byName.get(name);
    if (hit === undefined) {
      throw missingTensor(`checkpoint ${this.indexPath ?? this.files.map((f) => f.path).join(", ")}`, name);
    }
    return hit.file.readBytes(name);
  }

  close(): void {
    for (const f of this.files) f.close();
  }

  /** Opens files and merges their tensors, refusing a name that two files both hold. */
  private static openFiles(paths: string[], indexPath: string | null): SafetensorsCheckpoint {
    const files: SafetensorsFile[] = [];
    try {
      const byName = new Map<string, Located>();
      for (const p of paths) {
        const file = SafetensorsFile.open(p);
        files.push(file);
        for (const entry of file.entries()) {
          const prior = byName.get(entry.name);
          if (prior !== undefined) {
            const what = `checkpoint: tensor "${entry.name}" is stored twice, in ${prior.file.path} and in ${p}`;
            throw new CheckpointFormatError(what, {
              code: "duplicate_tensor",
              param: entry.name,
              hint: "files from two different saves are mixed in one folder: remove the stale ones, or re-save",
            });
          }
          byName.set(entry.name, { file, entry });
        }
      }
      return new SafetensorsCheckpoint(indexPath, files, byName);
    } catch (err) {
      for (const f of files) f.close();
      throw err;
    }
  }

  /**
   * Opens an HF index (`{"metadata": {...}, "weight_map": {tensor: shard file}}`) and the shards it
   * names, then checks each mapped tensor really is in its shard. Tensors a shard holds beyond the
   * index are kept, as transformers loads whole shards.
   */
  private static openIndexed(indexPath: string): SafetensorsCheckpoint {
    const fail = (code: string, what: string, param: string, hint: string): CheckpointFormatError =>
      new CheckpointFormatError(`checkpoint index ${indexPath}: ${what}`, { code, param, hint });
    let index: unknown;
    try {
      index = JSON.parse(fs.readFileSync(indexPath, "utf8"));
    } catch (err) {
      throw fail("index_invalid", `cannot be read as JSON: ${(err as Error).message}`, indexPath, INDEX_HINT);
    }
    const weightMap = isObject(index) ? index["weight_map"] : undefined;
    if (!isObject(weightMap) || !Object.values(weightMap).every((v) => typeof v === "string")) {
      throw fail("index_invalid", `has no "weight_map" object mapping tensor names to shard files`, indexPath, INDEX_HINT);
    }
    const dir = path.dirname(indexPath);
    const shards: string[] = [];
    for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
      if (shards.includes(shard)) continue;
      if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes("..")) {
        const what = `maps tensor "${name}" to shard "${shard}", which lies outside the checkpoint folder`;
        throw fail("index_invalid", what, name, "shard names must be files beside the index");
      }
      if (!fs.existsSync(path.join(dir, shard))) {
        throw fail("missing_shard", `maps tensor "${name}" to shard "${shard}", which does not exist in ${dir}`, shard,
          "the download is incomplete: fetch every shard the index lists");
      }
      shards.push(shard);
    }
    const ck = SafetensorsCheckpoint.openFiles(shards.map((s) => path.join(dir, s)), indexPath);
    for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
      const entry = ck.get(name);
      if (entry === undefined || entry.file !== path.join(dir, shard)) {
        ck.close();
        const what = `maps tensor "${name}" to shard ${path.join(dir, shard)}, which does not hold it`;
        throw fail("index_tensor_missing", what, name,
          "the index and the shards come from different saves: re-download or re-save the checkpoint");
      }
    }
    return ck;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/**
 * Writes one file, streaming tensor by tensor: a thunk's bytes are produced, written and dropped
 * before the next thunk runs. Written atomically (temp file + fsync + rename).
 *
 * Layout, byte for byte what safetensors-rs (Python's `save_file`) writes for the same tensors:
 * tensors sorted by dtype alignment (I64, F64, F32, I32, BF16, F16, I16, I8, U8, BOOL) then by
 * name, the header as compact JSON with "__metadata__" first (only when given) and the tensors in
 * data order, padded with spaces to a multiple of 8 so every tensor is aligned to its element size.
 */
export function writeSafetensors(file: string, entries: WriteEntry[], metadata?: Record<string, string>): void {
  const seen = new Set<string>();
  for (const e of entries) {
    const at = `writeSafetensors ${file}: tensor "${e.name}"`;
    invariant(e.name !== "__metadata__" && e.name.length > 0, () => `${at}: the name is reserved or empty`);
    invariant(!seen.has(e.name), () => `${at} is given twice`);
    seen.add(e.name);
    invariant(isStDType(e.dtype), () => `${at} has unknown dtype ${String(e.dtype)}`);
    invariant(e.shape.every(isCount), () => `${at} has shape [${e.shape.join(", ")}]`);
    if (typeof e.data !== "function") checkLength(file, e, e.data);
  }
  const rank = (d: StDType): number => RS_DTYPE_ORDER.indexOf(d);
  // Code-unit order, as Rust's byte-wise String order for the BMP (names are ASCII in practice).
  const byName = (a: WriteEntry, b: WriteEntry): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
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

  writeAtomically(file, (fd) => {
    writeFully(fd, head, 0);
    let position = head.byteLength;
    for (const e of sorted) {
      const bytes = typeof e.data === "function" ? e.data() : e.data;
      checkLength(file, e, bytes);
      writeFully(fd, bytes, position);
      position += bytes.byteLength;
    }
  });
}

function byteLengthOf(e: { dtype: StDType; shape: readonly number[] }): number {
  return elements(e.shape) * DTYPE_BYTES[e.dtype];
}

function checkLength(file: string, e: WriteEntry, bytes: Uint8Array): void {
  invariant(
    bytes instanceof Uint8Array && bytes.byteLength === byteLengthOf(e),
    () =>
      `writeSafetensors ${file}: tensor "${e.name}" (${e.dtype} [${e.shape.join(", ")}]) ` +
      `needs ${byteLengthOf(e)} bytes, got ${bytes instanceof Uint8Array ? bytes.byteLength : String(bytes)}`,
  );
}

/**
 * Writes a checkpoint into `dir` the way transformers' `save_pretrained` does: one
 * model.safetensors when everything fits in `maxShardBytes`, else shards
 * model-0000i-of-0000n.safetensors plus model.safetensors.index.json
 * (`{"metadata": {"total_size": N}, "weight_map": {name: shard}}`, keys sorted, indent 2). Shards
 * are filled in the given entry order by huggingface_hub's rule: a tensor that does not fit the
 * current shard starts a new one; a tensor bigger than the limit gets a shard of its own.
 * Every file carries the metadata {"format": "pt"} (transformers refuses safetensors metadata
 * without a known format) merged with `opts.metadata`. Files of an earlier save in `dir` that this
 * save does not rewrite (old shards, an old index) are deleted afterwards. Returns the paths written.
 */
export function writeSafetensorsCheckpoint(
  dir: string,
  entries: WriteEntry[],
  opts: { maxShardBytes?: number; metadata?: Record<string, string> } = {},
): string[] {
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  invariant(maxShardBytes > 0, () => `writeSafetensorsCheckpoint: maxShardBytes must be positive, got ${maxShardBytes}`);
  const metadata = { format: "pt", ...opts.metadata };
  fs.mkdirSync(dir, { recursive: true });

  // huggingface_hub split_state_dict_into_shards_factory, mirrored including its order quirk: an
  // oversized tensor's own shard is appended before the shard still being filled.
  const shards: WriteEntry[][] = [];
  let current: WriteEntry[] = [];
  let currentBytes = 0;
  let totalBytes = 0;
  for (const e of entries) {
    const n = byteLengthOf(e);
    totalBytes += n;
    if (n > maxShardBytes) {
      shards.push([e]);
      continue;
    }
    if (currentBytes + n > maxShardBytes) {
      shards.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(e);
    currentBytes += n;
  }
  if (current.length > 0 || shards.length === 0) shards.push(current);

  const written: string[] = [];
  if (shards.length === 1) {
    const file = path.join(dir, SINGLE_FILE);
    writeSafetensors(file, shards[0], metadata);
    written.push(file);
  } else {
    const weightMap: Record<string, string> = {};
    const pad = (i: number): string => String(i).padStart(5, "0");
    shards.forEach((shard, i) => {
      const name = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
      const file = path.join(dir, name);
      writeSafetensors(file, shard, metadata);
      written.push(file);
      for (const e of shard) weightMap[e.name] = name;
    });
    // Python's json.dumps(index, indent=2, sort_keys=True) + "\n"; JSON.stringify keeps the
    // insertion order we sort into (tensor names are never integer-like in HF layouts).
    const sortedMap: Record<string, string> = {};
    for (const k of Object.keys(weightMap).sort()) sortedMap[k] = weightMap[k];
    const text = JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sortedMap }, null, 2) + "\n";
    const indexFile = path.join(dir, INDEX_FILE);
    writeAtomically(indexFile, (fd) => writeFully(fd, new TextEncoder().encode(text), 0));
    written.push(indexFile);
  }
  const keep = new Set(written.map((f) => path.basename(f)));
  for (const name of fs.readdirSync(dir)) {
    if (OWNED_FILE.test(name) && !keep.has(name)) fs.rmSync(path.join(dir, name), { force: true });
  }
  return written;
}
