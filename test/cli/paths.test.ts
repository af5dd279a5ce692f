/**
 * Class: paths. Output paths (`--out`, `--dir`) that are an existing file, sit under a file, are
 * unwritable or empty; input paths that are missing, a file where a folder goes (or the reverse),
 * empty, or bad JSON (named as file:line:column); a folder on stdin. Each is one line with exit 2
 * and nothing written. Node's recursive mkdir never runs on such a path (it spins forever on
 * `/proc/x/y`, which is what a newcomer hit as a hang). Swept in-process, a few as processes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, openSync, closeSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { ROOT, assertOneLineError, runAll, runCli, runInProcess, tempDir, writeTinyCheckpoint } from "./helpers.ts";

const dir = tempDir();
const file = path.join(dir, "a-file.txt");
writeFileSync(file, "not a folder\n");
const empty = path.join(dir, "empty.json");
writeFileSync(empty, "");
const badJson = path.join(dir, "bad.json");
writeFileSync(badJson, '{\n  "vocab_size": 300,\n  "hidden_size": \n}\n');
const nonEmpty = path.join(dir, "someone-elses");
mkdirSync(nonEmpty);
writeFileSync(path.join(nonEmpty, "notes.txt"), "keep me\n");
const ckpt = path.join(dir, "ckpt");
writeTinyCheckpoint(ckpt);
const missing = path.join(dir, "missing");
// Unwritable even for root: /proc refuses new entries (ENOENT), and below a file is ENOTDIR.
const unwritable = "/proc/npr-test-unwritable/x";

/** [args, error kind, message pattern]. */
const CASES: Array<[string[], string, RegExp]> = [
  // outputs
  [
    ["model", "init", "--config", "tiny", "--out", file],
    "UsageError",
    /^npr: UsageError: --out .*a-file\.txt: a file is there, not a folder$/,
  ],
  [
    ["model", "init", "--config", "tiny", "--out", path.join(file, "sub")],
    "UsageError",
    /--out .*a-file\.txt\/sub: .*a-file\.txt is a file, not a folder$/,
  ],
  [
    ["model", "init", "--config", "tiny", "--out", unwritable],
    "UsageError",
    /--out \/proc\/npr-test-unwritable\/x: cannot create the folder \/proc\/npr-test-unwritable/,
  ],
  [["model", "init", "--config", "tiny", "--out", ""], "UsageError", /--out must name a folder, got an empty string/],
  [["model", "init", "--config", "tiny", "--out", nonEmpty], "UsageError", /--out .*someone-elses: the folder exists and is not empty$/],
  [["tokenizer", "init-bytes", "--out", file], "UsageError", /--out .*: a file is there, not a folder/],
  [["tokenizer", "init-bytes", "--out", unwritable], "UsageError", /--out .*: cannot create the folder/],
  [["tokenizer", "add-tags", "--model", ckpt, "--out", file], "UsageError", /--out .*: a file is there, not a folder/],
  [["bundle", "--out", path.join(unwritable, "npr.tar.xz")], "UsageError", /--out .*: cannot create the folder/],
  [["bundle", "--out", path.join(file, "npr.tar.xz")], "UsageError", /--out .*: .*a-file\.txt is a file, not a folder/],
  [["demo", "--dir", file], "UsageError", /--dir .*: a file is there, not a folder/],
  [["demo", "--dir", unwritable], "UsageError", /--dir .*: cannot create the folder/],
  [
    ["demo", "--dir", nonEmpty],
    "UsageError",
    /--dir .*someone-elses: the folder holds files but no checkpoint; the demo will not replace it$/,
  ],
  // inputs
  [["model", "init", "--config", missing, "--out", path.join(dir, "o1")], "UsageError", /no config file or preset named/],
  [["model", "init", "--config", dir, "--out", path.join(dir, "o1")], "UsageError", /--config .*config\.json: no such file$/],
  [["model", "init", "--config", empty, "--out", path.join(dir, "o1")], "UsageError", /--config .*empty\.json: the file is empty$/],
  [
    ["model", "init", "--config", badJson, "--out", path.join(dir, "o1")],
    "DataFormatError",
    /bad\.json:4:1: invalid JSON \(Unexpected token '}'\)$/,
  ],
  [
    ["model", "init", "--config", "tiny", "--out", path.join(dir, "o1"), "--tokenizer", missing],
    "UsageError",
    /--tokenizer .*missing: no such file or folder$/,
  ],
  [
    ["model", "init", "--config", "tiny", "--out", path.join(dir, "o1"), "--tokenizer", nonEmpty],
    "UsageError",
    /--tokenizer .*tokenizer\.json: no such file$/,
  ],
  [["model", "info", missing], "UsageError", /<dir> .*missing: no such checkpoint folder$/],
  [["model", "info", file], "UsageError", /<dir> .*a-file\.txt: a file, not a checkpoint folder$/],
  [["model", "info", nonEmpty], "UsageError", /<dir> .*config\.json: no such file$/],
  [["model", "logits", "--model", file, "--tokens", "1"], "UsageError", /--model .*: a file, not a checkpoint folder$/],
  [["generate", "--model", missing, "--prompt", "x"], "UsageError", /--model .*missing: no such checkpoint folder$/],
  [["engine", "verify", "--model", file], "UsageError", /--model .*: a file, not a checkpoint folder$/],
  [["engine", "fuzz", "--model", missing], "UsageError", /--model .*missing: no such checkpoint folder$/],
  [["tokenize", "--tokenizer", file], "UsageError", /--tokenizer .*: a file, not a tokenizer folder$/],
  [
    ["tokenizer", "add-tags", "--model", missing, "--out", path.join(dir, "o2")],
    "UsageError",
    /--model .*missing: no such checkpoint folder$/,
  ],
];

test("bad output and input paths: one line each, exit 2, nothing written", async () => {
  const before = readdirSync(dir).sort();
  for (const [args, kind, message] of CASES) assertOneLineError(await runInProcess(args), kind, message, args.join(" "));
  assert.deepEqual(readdirSync(dir).sort(), before, "no output folder was created");
  assert.deepEqual(readdirSync(nonEmpty), ["notes.txt"], "somebody else's folder is untouched");
  console.log(`${CASES.length} bad paths refused`);
});

test("as processes: --out an existing file, an unwritable --out (no hang), bad JSON with file:line:column", async () => {
  const [existing, proc, json] = await runAll([
    ["model", "init", "--config", "tiny", "--out", file],
    ["tokenizer", "init-bytes", "--out", unwritable],
    ["model", "init", "--config", badJson, "--out", path.join(dir, "o3")],
  ]);
  assertOneLineError(existing!, "UsageError", /a file is there, not a folder/, "existing file");
  assertOneLineError(proc!, "UsageError", /cannot create the folder \/proc\/npr-test-unwritable \(ENOENT\)/, "unwritable");
  assertOneLineError(json!, "DataFormatError", /bad\.json:4:1: invalid JSON/, "bad json");
});

test("a folder on stdin is refused, not read as nothing", async () => {
  for (const args of [
    ["format", "check"],
    ["tokenize", "--tokenizer", "bytes"],
  ]) {
    const fd = openSync(dir, "r");
    try {
      const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ["src/cli/main.ts", ...args], { cwd: ROOT, stdio: [fd, "ignore", "pipe"] });
        let stderr = "";
        child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
        child.on("close", (status) => resolve({ status, stderr }));
      });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /^npr: UsageError: npr (format|tokenize): stdin is a folder; it must be a file or a pipe\n$/);
    } finally {
      closeSync(fd);
    }
  }
});

test("a good path still works: model init into a new nested folder", async () => {
  const out = path.join(dir, "new", "nested", "model");
  const r = await runCli(["model", "init", "--config", "tiny", "--out", out, "--dtype", "f32"]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(readdirSync(out).sort(), [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
  ]);
});
