/**
 * Tests for format/safetensors.ts: bit-exact round trips of every dtype, metadata, sharded
 * checkpoints against Hugging Face's index layout and shard rule, lone files, bytes written by the
 * reference implementation (safetensors-rs / Python `save_file`), offsets past 4 GiB through a
 * sparse file, and every corruption the reader must name (code, file and tensor).
 */

import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  DTYPE_BYTES,
  SafetensorsCheckpoint,
  SafetensorsFile,
  writeSafetensors,
  writeSafetensorsCheckpoint,
} from "../../src/format/safetensors.ts";
import type { StDType, WriteEntry } from "../../src/format/safetensors.ts";
import { CheckpointFormatError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "npr-st-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function randomBytes(rng: Rng, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.nextU32() & 0xff;
  return out;
}

function entry(rng: Rng, name: string, dtype: StDType, shape: number[]): WriteEntry & { data: Uint8Array } {
  return { name, dtype, shape, data: randomBytes(rng, shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype]) };
}

/** A safetensors file by hand: u64 LE length, the header text as given (no padding added), data. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0), declaredLength?: number): Uint8Array {
  const h = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + h.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(declaredLength ?? h.byteLength), true);
  out.set(h, 8);
  out.set(data, 8 + h.byteLength);
  return out;
}

/** Asserts a CheckpointFormatError with `code` whose message mentions every string in `names`. */
function expectFormatError(fn: () => unknown, code: string, ...names: string[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CheckpointFormatError, `expected CheckpointFormatError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const n of names) assert.ok(err.message.includes(n), `message should name ${n}:\n${err.message}`);
    assert.ok(err.hint && err.message.includes("HINT: "), "a hint says what to do");
    return true;
  });
}

function readAll(file: SafetensorsFile | SafetensorsCheckpoint, name: string): number[] {
  return [...file.readBytes(name)];
}

const ALL_DTYPES = Object.keys(DTYPE_BYTES) as StDType[];

test("every dtype round trips bit-exactly, streamed one thunk at a time, aligned, in HF order", (t) => {
  const dir = tmpDir(t);
  const rng = new Rng(1);
  const shapes = [[3, 5], [7], [], [2, 0, 4], [1, 1, 3]];
  const entries: Array<WriteEntry & { data: Uint8Array }> = [];
  ALL_DTYPES.forEach((dtype, i) => entries.push(entry(rng, `layer.${i}.${dtype.toLowerCase()}`, dtype, shapes[i % shapes.length])));
  // Half the tensors as thunks; each must run once, in file order, after the previous one is written.
  const calls: string[] = [];
  const given: WriteEntry[] = entries.map((e, i) => (i % 2 === 0 ? e : { ...e, data: () => (calls.push(e.name), e.data) }));
  const file = path.join(dir, "all.safetensors");
  writeSafetensors(file, given, { format: "pt", note: "round trip" });

  const st = SafetensorsFile.open(file);
  t.after(() => st.close());
  assert.deepEqual(st.metadata, { format: "pt", note: "round trip" });
  const listed = st.entries();
  assert.equal(listed.length, entries.length);
  for (const e of entries) {
    const got = st.get(e.name)!;
    assert.equal(got.dtype, e.dtype);
    assert.deepEqual(got.shape, e.shape);
    assert.equal(got.byteLength, e.data.byteLength);
    assert.equal(got.file, file);
    assert.equal(got.offset % DTYPE_BYTES[e.dtype], 0, `${e.name} is aligned to its element size`);
    assert.deepEqual(readAll(st, e.name), [...e.data], e.name);
  }
  // Data order: dtype alignment (safetensors-rs Dtype order, descending), then name.
  const rsOrder = ["I64", "F64", "F32", "I32", "BF16", "F16", "I16", "I8", "U8", "BOOL"];
  const expectOrder = [...entries].sort((a, b) => rsOrder.indexOf(a.dtype) - rsOrder.indexOf(b.dtype) || (a.name < b.name ? -1 : 1));
  assert.deepEqual(
    listed.map((e) => e.name),
    expectOrder.map((e) => e.name),
  );
  assert.deepEqual(
    calls,
    expectOrder.filter((_, i) => entries.indexOf(expectOrder[i]) % 2 === 1).map((e) => e.name),
  );
  // Header: length a multiple of 8, space padded, "__metadata__" first.
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  assert.equal(n % 8, 0);
  const header = bytes.subarray(8, 8 + n).toString("utf8");
  assert.ok(header.startsWith('{"__metadata__":{"format":"pt","note":"round trip"},'), header.slice(0, 60));
  assert.match(header, /} *$/);
  assert.equal(fs.readdirSync(dir).length, 1, "no temp file left behind");
});

test("no metadata gives null; an empty file is the 16 bytes safetensors-rs writes", (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, "empty.safetensors");
  writeSafetensors(file, []);
  // safetensors-rs tensor.rs test_empty: [8,0,0,0,0,0,0,0, '{', '}', 6 spaces].
  assert.deepEqual([...fs.readFileSync(file)], [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  const st = SafetensorsFile.open(file);
  assert.equal(st.metadata, null);
  assert.deepEqual(st.entries(), []);
  st.close();
});

test("reads files written by safetensors-rs / Python save_file, and writes the same bytes", (t) => {
  const dir = tmpDir(t);
  const f32le = (...xs: number[]): number[] => [...new Uint8Array(new Float32Array(xs).buffer)];
  // (1) safetensors-rs tensor.rs test_serialization_forced_alignement: "attn0" F32 [1,1,2,3] = 0..5,
  // header of 65 bytes padded with 7 spaces to 72.
  const rsAligned = [
    72, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 70, 51, 50, 34, 44, 34,
    115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34,
    58, 91, 48, 44, 50, 52, 93, 125, 125, 32, 32, 32, 32, 32, 32, 32, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64,
    0, 0, 160, 64,
  ];
  // (2) What `safetensors.torch.save_file({"a": f32 [1, .5], "b": bf16 [1, -2], "c": i64 [7]},
  // metadata={"format": "pt"})` writes: I64 first, then F32, then BF16 (alignment order); the
  // 195-byte header padded with 5 spaces.
  const pyHeader =
    '{"__metadata__":{"format":"pt"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
    '"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}}     ';
  const pyData = [7, 0, 0, 0, 0, 0, 0, 0, ...f32le(1, 0.5), 0x80, 0x3f, 0x00, 0xc0];
  const py = [...rawFile(pyHeader, new Uint8Array(pyData))];
  assert.equal(pyHeader.length, 200);

  const cases = [
    {
      name: "rs",
      bytes: rsAligned,
      meta: undefined,
      tensors: [{ name: "attn0", dtype: "F32" as StDType, shape: [1, 1, 2, 3], data: f32le(0, 1, 2, 3, 4, 5) }],
    },
    {
      name: "py",
      bytes: py,
      meta: { format: "pt" },
      tensors: [
        { name: "a", dtype: "F32" as StDType, shape: [2], data: f32le(1, 0.5) },
        { name: "b", dtype: "BF16" as StDType, shape: [2], data: [0x80, 0x3f, 0x00, 0xc0] },
        { name: "c", dtype: "I64" as StDType, shape: [1], data: [7, 0, 0, 0, 0, 0, 0, 0] },
      ],
    },
  ];
  for (const c of cases) {
    const foreign = path.join(dir, `${c.name}.safetensors`);
    fs.writeFileSync(foreign, new Uint8Array(c.bytes));
    const st = SafetensorsFile.open(foreign);
    assert.deepEqual(st.metadata, c.meta ?? null);
    for (const tn of c.tensors) {
      assert.deepEqual({ dtype: st.get(tn.name)!.dtype, shape: st.get(tn.name)!.shape }, { dtype: tn.dtype, shape: tn.shape });
      assert.deepEqual(readAll(st, tn.name), tn.data, `${c.name}: ${tn.name}`);
    }
    st.close();
    // Our writer, given the same tensors in another order, produces the identical bytes.
    const ours = path.join(dir, `${c.name}-ours.safetensors`);
    writeSafetensors(
      ours,
      [...c.tensors].reverse().map((tn) => ({ ...tn, data: new Uint8Array(tn.data) })),
      c.meta,
    );
    assert.deepEqual([...fs.readFileSync(ours)], c.bytes, `${c.name}: writer output differs from the reference bytes`);
  }
});

test("sharded checkpoint: HF shard rule, file names, index json, round trip, stale files removed", (t) => {
  const dir = tmpDir(t);
  const rng = new Rng(2);
  // Sizes 40, 40, 40, 150, 12 bytes with a 100-byte limit. huggingface_hub's rule gives
  // [a, b] (c would tip over), [d] (bigger than the limit: its own shard, appended at once), [c, e].
  const entries = [
    entry(rng, "model.a", "F32", [10]),
    entry(rng, "model.b", "BF16", [4, 5]),
    entry(rng, "model.c", "U8", [40]),
    entry(rng, "model.d", "F16", [75]),
    entry(rng, "lm_head", "I32", [3]),
  ];
  const written = writeSafetensorsCheckpoint(dir, entries, { maxShardBytes: 100 });
  const names = [
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
    "model.safetensors.index.json",
  ];
  assert.deepEqual(
    written,
    names.map((n) => path.join(dir, n)),
  );
  assert.deepEqual(fs.readdirSync(dir).sort(), [...names].sort());

  // The index exactly as transformers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n".
  const indexText = fs.readFileSync(path.join(dir, "model.safetensors.index.json"), "utf8");
  const expectedIndex = [
    "{",
    '  "metadata": {',
    '    "total_size": 282',
    "  },",
    '  "weight_map": {',
    '    "lm_head": "model-00003-of-00003.safetensors",',
    '    "model.a": "model-00001-of-00003.safetensors",',
    '    "model.b": "model-00001-of-00003.safetensors",',
    '    "model.c": "model-00003-of-00003.safetensors",',
    '    "model.d": "model-00002-of-00003.safetensors"',
    "  }",
    "}",
    "",
  ].join("\n");
  assert.equal(indexText, expectedIndex);
  // Each shard says {"format": "pt"} (transformers refuses other metadata) merged with ours.
  const shard = SafetensorsFile.open(written[0]);
  assert.deepEqual(shard.metadata, { format: "pt" });
  shard.close();

  for (const open of [dir, path.join(dir, "model.safetensors.index.json")]) {
    const ck = SafetensorsCheckpoint.open(open);
    assert.equal(ck.indexPath, path.join(dir, "model.safetensors.index.json"));
    assert.deepEqual([...ck.names()].sort(), entries.map((e) => e.name).sort());
    for (const e of entries) {
      assert.deepEqual(readAll(ck, e.name), [...e.data], e.name);
      assert.deepEqual(ck.get(e.name)!.shape, e.shape);
    }
    ck.close();
  }

  // Saving again into the same folder as one file removes the old shards and the index, which
  // would otherwise win over model.safetensors at the next open.
  const again = writeSafetensorsCheckpoint(dir, entries.slice(0, 2), { metadata: { step: "7" } });
  assert.deepEqual(again, [path.join(dir, "model.safetensors")]);
  assert.deepEqual(fs.readdirSync(dir), ["model.safetensors"]);
  const ck = SafetensorsCheckpoint.open(dir);
  assert.equal(ck.indexPath, null);
  assert.deepEqual(ck.names(), ["model.a", "model.b"]);
  assert.deepEqual(ck.files[0].metadata, { format: "pt", step: "7" });
  assert.deepEqual(readAll(ck, "model.b"), [...entries[1].data]);
  ck.close();
});

test("a lone *.safetensors file, by folder or by path; a folder without weights is named", (t) => {
  const dir = tmpDir(t);
  const rng = new Rng(3);
  const e = entry(rng, "w", "BF16", [2, 3]);
  const file = path.join(dir, "adapter.safetensors");
  writeSafetensors(file, [e]);
  for (const open of [dir, file]) {
    const ck = SafetensorsCheckpoint.open(open);
    assert.deepEqual(ck.names(), ["w"]);
    assert.deepEqual(readAll(ck, "w"), [...e.data]);
    expectFormatError(() => ck.readBytes("nope"), "missing_tensor", "nope", file);
    ck.close();
  }
  const empty = path.join(dir, "empty");
  fs.mkdirSync(empty);
  expectFormatError(() => SafetensorsCheckpoint.open(empty), "no_safetensors", empty);
  expectFormatError(() => SafetensorsCheckpoint.open(path.join(dir, "missing")), "not_found", "missing");
});

test("offsets past 4 GiB are read with positioned reads (sparse file, nothing loaded whole)", (t) => {
  const dir = tmpDir(t);
  const pad = 2 ** 32 + 8; // a U8 tensor of 4 GiB + 8 bytes that is never read
  const header =
    `{"pad":{"dtype":"U8","shape":[${pad}],"data_offsets":[0,${pad}]},` +
    `"tail":{"dtype":"F32","shape":[2],"data_offsets":[${pad},${pad + 8}]}}`;
  const head = rawFile(header.padEnd(Math.ceil(header.length / 8) * 8, " "));
  const file = path.join(dir, "big.safetensors");
  const fd = fs.openSync(file, "w");
  fs.writeSync(fd, head, 0, head.byteLength, 0);
  const tail = new Uint8Array(new Float32Array([3.5, -1.25]).buffer);
  fs.writeSync(fd, tail, 0, 8, head.byteLength + pad); // leaves a hole: no 4 GiB written
  fs.closeSync(fd);
  const st = SafetensorsFile.open(file);
  assert.equal(st.get("tail")!.offset, head.byteLength + pad);
  assert.deepEqual([...new Float32Array(st.readBytes("tail").buffer)], [3.5, -1.25]);
  st.close();
  // Cut the file inside "tail": reported as a truncation of that tensor.
  fs.truncateSync(file, head.byteLength + pad + 4);
  expectFormatError(() => SafetensorsFile.open(file), "truncated", file, '"tail"');
});

test("corrupt files: each failure has its code and names the file and the tensor", (t) => {
  const dir = tmpDir(t);
  const put = (name: string, bytes: Uint8Array): string => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, bytes);
    return p;
  };
  const data16 = new Uint8Array(16).fill(7);
  const ok = (name: string, dtype: string, shape: number[], offsets: [number, number]): string =>
    `"${name}":{"dtype":"${dtype}","shape":[${shape.join(",")}],"data_offsets":[${offsets.join(",")}]}`;

  const short = put("short.safetensors", new Uint8Array(5));
  expectFormatError(() => SafetensorsFile.open(short), "file_too_short", short);

  const beyond = put("beyond.safetensors", rawFile(`{${ok("w", "F32", [4], [0, 16])}}`, data16, 4096));
  expectFormatError(() => SafetensorsFile.open(beyond), "header_out_of_bounds", beyond, "4096");

  const absurd = put("absurd.safetensors", rawFile("{}", data16, 2 ** 40));
  expectFormatError(() => SafetensorsFile.open(absurd), "header_too_large", absurd);

  const notJson = put("notjson.safetensors", rawFile(`{"w": {"dtype": "F32",`, data16));
  expectFormatError(() => SafetensorsFile.open(notJson), "header_not_json", notJson);

  const badUtf8 = new Uint8Array([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0xff, 0xfe, 0x7d, 32, 32, 32, 32]);
  const utf = put("utf.safetensors", badUtf8);
  expectFormatError(() => SafetensorsFile.open(utf), "header_not_json", utf);

  const arr = put("array.safetensors", rawFile("[1,2]   "));
  expectFormatError(() => SafetensorsFile.open(arr), "header_invalid", arr);

  const dtype = put("dtype.safetensors", rawFile(`{${ok("layers.0.q", "F8_E4M3", [16], [0, 16])}}`, data16));
  expectFormatError(() => SafetensorsFile.open(dtype), "unknown_dtype", dtype, '"layers.0.q"', "F8_E4M3");

  const size = put("size.safetensors", rawFile(`{${ok("w", "F32", [4], [0, 8])},${ok("v", "U8", [8], [8, 16])}}`, data16));
  expectFormatError(() => SafetensorsFile.open(size), "size_mismatch", size, '"w"', "16 bytes");

  const shapeBad = put("shape.safetensors", rawFile(`{${ok("w", "F32", [-4], [0, 16])}}`, data16));
  expectFormatError(() => SafetensorsFile.open(shapeBad), "header_invalid", shapeBad, '"w"');

  const reversed = put("reversed.safetensors", rawFile(`{${ok("w", "U8", [0], [16, 0])}}`, data16));
  expectFormatError(() => SafetensorsFile.open(reversed), "offsets_invalid", reversed, '"w"');

  const overlap = put("overlap.safetensors", rawFile(`{${ok("a", "F32", [3], [0, 12])},${ok("b", "F32", [2], [8, 16])}}`, data16));
  expectFormatError(() => SafetensorsFile.open(overlap), "offsets_overlap", overlap, '"a"', '"b"');

  const meta = put("meta.safetensors", rawFile(`{"__metadata__":{"step":7},${ok("w", "F32", [4], [0, 16])}}`, data16));
  expectFormatError(() => SafetensorsFile.open(meta), "header_invalid", meta, "__metadata__");

  // Truncation: a valid file cut short. The first tensor past the end is named.
  const rng = new Rng(4);
  const good = path.join(dir, "good.safetensors");
  writeSafetensors(good, [entry(rng, "x.first", "F32", [8]), entry(rng, "x.second", "F32", [8]), entry(rng, "x.third", "F32", [8])]);
  const full = fs.readFileSync(good);
  const cut = put("cut.safetensors", full.subarray(0, full.byteLength - 40));
  expectFormatError(() => SafetensorsFile.open(cut), "truncated", cut, '"x.second"', "2 tensor(s)");

  // A file that shrinks after open: the read itself reports the truncation.
  const shrink = put("shrink.safetensors", full);
  const st = SafetensorsFile.open(shrink);
  fs.truncateSync(shrink, full.byteLength - 8);
  expectFormatError(() => st.readBytes("x.third"), "truncated", shrink, '"x.third"');
  st.close();
});

test("corrupt checkpoints: missing shard, tensor missing from its shard, duplicates across shards", (t) => {
  const rng = new Rng(5);
  const a = entry(rng, "a.weight", "F32", [4]);
  const b = entry(rng, "b.weight", "F32", [4]);
  const c = entry(rng, "c.weight", "F32", [4]);
  const make = (): string => {
    const dir = tmpDir(t);
    writeSafetensorsCheckpoint(dir, [a, b, c], { maxShardBytes: 20 });
    return dir;
  };
  const indexOf = (dir: string): string => path.join(dir, "model.safetensors.index.json");
  const shard = (i: number): string => `model-0000${i}-of-00003.safetensors`;

  // The index names a shard that is not there.
  const d1 = make();
  fs.rmSync(path.join(d1, shard(2)));
  expectFormatError(() => SafetensorsCheckpoint.open(d1), "missing_shard", indexOf(d1), shard(2), '"b.weight"');

  // The index maps a tensor to a shard that lacks it.
  const d2 = make();
  const index = JSON.parse(fs.readFileSync(indexOf(d2), "utf8"));
  index.weight_map["c.weight"] = shard(1);
  fs.writeFileSync(indexOf(d2), JSON.stringify(index));
  expectFormatError(() => SafetensorsCheckpoint.open(d2), "index_tensor_missing", indexOf(d2), shard(1), '"c.weight"');

  // The same tensor in two shards (a mixed-up folder), with and without an index.
  const d3 = make();
  writeSafetensors(path.join(d3, shard(3)), [c, { ...a }]);
  expectFormatError(() => SafetensorsCheckpoint.open(d3), "duplicate_tensor", '"a.weight"', shard(1), shard(3));
  fs.rmSync(indexOf(d3));
  expectFormatError(() => SafetensorsCheckpoint.open(d3), "duplicate_tensor", '"a.weight"', shard(1), shard(3));

  // An index that is not an index.
  const d4 = make();
  fs.writeFileSync(indexOf(d4), '{"metadata": {}}');
  expectFormatError(() => SafetensorsCheckpoint.open(d4), "index_invalid", indexOf(d4), "weight_map");
  fs.writeFileSync(indexOf(d4), "{not json");
  expectFormatError(() => SafetensorsCheckpoint.open(d4), "index_invalid", indexOf(d4));
});
