/**
 * safetensors on disk: reading one file or a (sharded) checkpoint folder lazily, and writing files
 * and checkpoints tensor by tensor, atomically, in the byte layout Hugging Face's safetensors
 * library produces. The header's layout, parsing, validation and encoding live in
 * safetensors-header.ts; this file owns the files, the folders, the index and the data. Bytes
 * only: it hands back raw little-endian tensor bytes and never interprets them (no Tensor, no
 * math; tensor/dtype.ts converts). Offsets are JS numbers, exact to 2^53, and every read and
 * write is positioned, so files past 2 GB (a Buffer's limit) work.
 */

import fs from "node:fs";
import path from "node:path";
import { CheckpointFormatError, invariant } from "../util/index.ts";
import {
  byteLengthOf,
  encodeHeader,
  IO_CHUNK,
  isCount,
  isObject,
  isStDType,
  parseHeader,
  readFully,
  type StDType,
  type TensorEntry,
} from "./safetensors-header.ts";

export { DTYPE_BYTES } from "./safetensors-header.ts";
export type { StDType, TensorEntry } from "./safetensors-header.ts";

/** Hugging Face's default shard size ("5GB" in huggingface_hub counts 10^9 bytes per GB). */
const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;

const SINGLE_FILE = "model.safetensors";
const INDEX_FILE = "model.safetensors.index.json";
/** Files a checkpoint write owns in its folder: stale ones from an earlier save are removed. */
const OWNED_FILE = /^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/;

const INDEX_HINT = "re-download or re-save the index file with its shards";

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

// ---------------------------------------------------------------------------------------------
// Positioned writes
// ---------------------------------------------------------------------------------------------

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
    return SafetensorsCheckpoint.openFiles(
      files.map((n) => path.join(dirOrFile, n)),
      null,
    );
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
        throw fail(
          "missing_shard",
          `maps tensor "${name}" to shard "${shard}", which does not exist in ${dir}`,
          shard,
          "the download is incomplete: fetch every shard the index lists",
        );
      }
      shards.push(shard);
    }
    const ck = SafetensorsCheckpoint.openFiles(
      shards.map((s) => path.join(dir, s)),
      indexPath,
    );
    for (const [name, shard] of Object.entries(weightMap as Record<string, string>)) {
      const entry = ck.get(name);
      if (entry === undefined || entry.file !== path.join(dir, shard)) {
        ck.close();
        const what = `maps tensor "${name}" to shard ${path.join(dir, shard)}, which does not hold it`;
        throw fail(
          "index_tensor_missing",
          what,
          name,
          "the index and the shards come from different saves: re-download or re-save the checkpoint",
        );
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
 * before the next thunk runs. Written atomically (temp file + fsync + rename). The layout is byte
 * for byte what safetensors-rs (Python's `save_file`) writes for the same tensors (encodeHeader
 * in safetensors-header.ts: sorted by dtype alignment, then name).
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
  const { head, sorted } = encodeHeader(entries, metadata);

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
