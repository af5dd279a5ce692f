/**
 * `npr tasks sample`, `npr grade --task` and `npr tokenizer init-task` from the command line:
 * sampled JSONL rows carry traces that pass the independent checker; `--split test` is the fixed
 * list; bad flags (too many examples, knob ranges, knobs of the other task, a seed for the test
 * split) are one-line errors; a reader that closes the pipe ends the command quietly; `grade
 * --task` rewards the verifier only (a boxed target earns nothing) and refuses synthetic rows
 * without --task. Flag sweeps run in-process; pipes and stdin go through real processes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { assertOneLineError, ROOT, runCli, runInProcess, tempDir } from "../cli/helpers.ts";
import { NprTokenizer } from "../../src/tokenizer/index.ts";
import { checkCountdownParallel, checkCountdownSequential, checkLogicParallel } from "./trace-checker.ts";

test("tasks sample: rows with checkable traces; --split test is the fixed list", async () => {
  const seq = await runInProcess(["tasks", "sample", "--task", "countdown", "--n", "40", "--seed", "9", "--form", "sequential"]);
  assert.equal(seq.status, 0, seq.stderr);
  const rows = seq.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.equal(rows.length, 40);
  for (const r of rows) {
    assert.equal(r.task, "countdown");
    assert.equal(r.split, "train");
    assert.deepEqual(checkCountdownSequential(r.numbers, r.target, r.reference).errors, [], r.reference);
    assert.equal(typeof r.solved, "boolean");
  }
  const par = await runInProcess(["tasks", "sample", "--task", "countdown", "--n", "20", "--preset", "small", "--form", "parallel"]);
  for (const r of par.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))) {
    assert.deepEqual(checkCountdownParallel(r.numbers, r.target, r.reference).errors, []);
    assert.ok(r.numbers.length === 3);
  }
  const lg = await runInProcess(["tasks", "sample", "--task", "logic-grid", "--n", "5", "--houses", "4", "--form", "parallel"]);
  for (const r of lg.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l))) {
    assert.equal(r.houses, 4);
    assert.deepEqual(checkLogicParallel({ houses: r.houses, attrs: r.attributes, clues: r.clues }, r.reference).errors, []);
  }
  const t5 = await runInProcess(["tasks", "sample", "--task", "countdown", "--split", "test", "--n", "5"]);
  const t20 = await runInProcess(["tasks", "sample", "--task", "countdown", "--split", "test", "--n", "20"]);
  assert.equal(t20.stdout.split("\n").slice(0, 5).join("\n") + "\n", t5.stdout, "the first 5 of the fixed list");
  assert.match(t5.stdout.split("\n")[0]!, /"split":"test","id":"countdown-test-0"/);
  const list = await runInProcess(["tasks", "list"]);
  assert.match(list.stdout, /^synthetic {2}countdown +presets: small, apr, large$/m);
});

test("tasks sample: bad flags are one-line errors", async () => {
  const cases: [string[], RegExp][] = [
    [["--n", "1e12"], /--n must be an integer in \[0, 1000000\], got "1e12"/],
    [["--n", "1000001"], /--n must be an integer in \[0, 1000000\]/],
    [["--split", "test", "--n", "10001"], /--n must be an integer in \[0, 10000\]/],
    [["--numbers", "100"], /--numbers must be an integer in \[3, 6\], got "100"/],
    [["--max-number", "1000"], /--max-number must be an integer in \[2, 999\]/],
    [["--min-target", "60", "--max-target", "50"], /--min-target 60 is above --max-target 50/],
    [["--houses", "3"], /--houses applies to logic-grid only, not countdown/],
    [["--seed", "0x10"], /--seed must be an integer in \[0, 4294967295\], got "0x10"/],
    [["--split", "test", "--seed", "3"], /--seed: the test split is one fixed list; it takes no seed/],
    [["--split", "dev"], /--split must be one of train, test, got "dev"/],
    [["--form", "both"], /--form must be one of sequential, parallel, got "both"/],
    [["--preset", "medium"], /--preset must be one of small, apr, large, got "medium"/],
  ];
  for (const [flags, re] of cases) {
    assertOneLineError(await runInProcess(["tasks", "sample", "--task", "countdown", ...flags]), "UsageError", re, flags.join(" "));
  }
  for (const [flags, re] of [
    [["--houses", "9"], /--houses must be an integer in \[2, 5\], got "9"/],
    [["--attributes", "1"], /--attributes must be an integer in \[2, 5\], got "1"/],
    [["--numbers", "4"], /--numbers applies to countdown only, not logic-grid/],
  ] as [string[], RegExp][]) {
    assertOneLineError(await runInProcess(["tasks", "sample", "--task", "logic-grid", ...flags]), "UsageError", re, flags.join(" "));
  }
  assertOneLineError(
    await runInProcess(["tasks", "sample", "--task", "sudoku"]),
    "UsageError",
    /--task must be one of countdown, logic-grid, got "sudoku"/,
    "--task sudoku",
  );
  // A difficulty with no test grid at all: an error naming the split, not a hang.
  assertOneLineError(
    await runInProcess(["tasks", "sample", "--task", "logic-grid", "--split", "test", "--houses", "2", "--attributes", "2"]),
    "BoundaryError",
    /only 0 distinct test problems found/,
    "2x2 test split",
  );
});

test("tasks sample --n 1000000 piped into a reader that stops: quiet exit 0", async () => {
  const child = spawn(
    process.execPath,
    ["src/cli/main.ts", "tasks", "sample", "--task", "countdown", "--n", "1000000", "--form", "parallel"],
    {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const firstLine = await new Promise<string>((resolve) => {
    let buf = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      if (buf.includes("\n")) {
        child.stdout.destroy(); // as `head -1` does
        resolve(buf.split("\n")[0]!);
      }
    });
  });
  const t0 = performance.now();
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.equal(JSON.parse(firstLine).id, "countdown-1-0");
  assert.equal(code, 0, stderr);
  assert.equal(stderr, "");
  assert.ok(performance.now() - t0 < 10_000, "it stopped soon after the pipe closed");
});

test("grade --task: the verifier is the reward; synthetic rows need --task", async () => {
  const sample = await runInProcess(["tasks", "sample", "--task", "countdown", "--n", "4", "--seed", "3", "--form", "sequential"]);
  const rows = sample.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  const solved = rows.find((r) => r.solved)!;
  const lines = [
    { ...solved, response: solved.reference },
    { ...solved, response: `the target itself: \\boxed{${solved.target}}` },
    { ...solved, response: "no box here" },
    { ...solved, numbers: "1 2", response: "\\boxed{1+2}" },
    { ...solved, task: "logic-grid", response: "\\boxed{1}" },
  ].map((r) => JSON.stringify(r));
  const r = await runCli(["grade", "--task", "countdown"], { input: [...lines, "not json", ""].join("\n") });
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(out[0], { id: solved.id, correct: true, extracted: /\\boxed\{(.*)\}$/.exec(solved.reference)![1] });
  assert.equal(out[1].correct, false);
  assert.match(out[1].detail, new RegExp(`^${solved.target} is not available`));
  assert.deepEqual(out[2], { id: solved.id, correct: false, extracted: null, malformed: "no \\boxed{} expression" });
  assert.deepEqual(out[3], { error: 'line 4: "numbers" must be a list of 1-12 non-negative integers' });
  assert.deepEqual(out[4], { error: "line 5: a logic-grid sample, but --task is countdown" });
  assert.match(out[5].error, /^line 6: invalid JSON/);
  // Without --task a synthetic row is refused: comparing with its answer is what RL would exploit.
  const plain = await runCli(["grade"], { input: `${lines[1]}\n${JSON.stringify({ response: "\\boxed{2}", answer: "2" })}\n` });
  const po = plain.stdout
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.match(po[0].error, /^line 1: a countdown sample; grade it with --task countdown/);
  assert.deepEqual(po[1], { correct: true, extracted: "2" });
  assertOneLineError(
    await runInProcess(["grade", "--task", "countdown", "--pool", "4"]),
    "UsageError",
    /--pool does not apply with --task/,
    "--pool with --task",
  );
  assertOneLineError(
    await runInProcess(["grade", "--task", "zebra"]),
    "UsageError",
    /--task must be one of countdown, logic-grid/,
    "--task zebra",
  );
});

test("tokenizer init-task writes a tokenizer that NprTokenizer loads", async () => {
  const dir = path.join(tempDir(), "tok");
  const r = await runInProcess(["tokenizer", "init-task", "--out", dir]);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split("\n"), [path.join(dir, "tokenizer.json"), path.join(dir, "tokenizer_config.json")]);
  const tok = NprTokenizer.load(dir);
  assert.ok(tok.hasTags);
  const text = "<guideline><plan>1: 64+18=82</plan></guideline>";
  assert.equal(tok.decode(tok.encode(text)), text);
  assert.equal(tok.encode(text).length, 12); // 2 tags, "1" ":" " " "64" "+" "18" "=" "82", 2 tags
  assert.equal(JSON.parse(readFileSync(path.join(dir, "tokenizer.json"), "utf8")).model.ignore_merges, true);
});
