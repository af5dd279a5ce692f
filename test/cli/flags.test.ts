/**
 * Class: flag values. Every integer flag takes decimal digits only inside a stated range, every
 * number flag a plain decimal inside its range, every choice one of its list; anything else is
 * one line `npr: UsageError: <flag> must be ...` with exit code 2, checked before a model loads or
 * a file is written. Swept in-process over every command's flags (fast), then once per kind as a
 * real process; commander's own usage errors exit 2 too. Plus the parsers themselves.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { parseChoice, parseIntArg, parseJsonText, parseNumberArg } from "../../src/cli/args.ts";
import { maxGraderPoolSize } from "../../src/tasks/grader-pool.ts";
import { DataFormatError, UsageError } from "../../src/util/errors.ts";
import { assertOneLineError, runAll, runInProcess, tempDir } from "./helpers.ts";

test("parseIntArg: decimal digits only, range named in the message", () => {
  assert.equal(parseIntArg("16", "--n"), 16);
  assert.equal(parseIntArg("0", "--n"), 0);
  assert.equal(parseIntArg("-3", "--x", -5, 5), -3);
  for (const bad of ["0x10", "1e3", "1.5", " 5", "5 ", "", "+5", "-1", "abc", "Infinity", "9007199254740992", "0b11", "1_000"]) {
    assert.throws(
      () => parseIntArg(bad, "--n"),
      (e: unknown) => e instanceof UsageError && e.code === "bad_int" && e.param === "--n",
      bad,
    );
  }
  assert.throws(() => parseIntArg("0x10", "--seed"), {
    message: `--seed must be an integer >= 0, got "0x10"\nHINT: write the value in decimal digits, e.g. 16 (not 0x10, 1e3 or 1.5)`,
  });
  assert.throws(() => parseIntArg("100", "--pool", 1, 4, "at most 4 here"), {
    message: `--pool must be an integer in [1, 4], got "100"\nHINT: at most 4 here`,
  });
});

test("parseNumberArg, parseChoice, parseJsonText", () => {
  assert.equal(parseNumberArg("0.7", "--t", { min: 0 }), 0.7);
  assert.equal(parseNumberArg(".5", "--t"), 0.5);
  assert.equal(parseNumberArg("1e-3", "--t"), 0.001);
  for (const bad of ["0x1", "Infinity", "NaN", "", " 1", "1,5", "--1"]) assert.throws(() => parseNumberArg(bad, "--t"), UsageError, bad);
  assert.throws(() => parseNumberArg("0", "--top-p", { min: 0, minOpen: true, max: 1 }), {
    message: `--top-p must be a number in (0, 1], got "0"`,
  });
  assert.throws(() => parseNumberArg("1", "--min-p", { min: 0, max: 1, maxOpen: true }), {
    message: `--min-p must be a number in [0, 1), got "1"`,
  });
  assert.throws(() => parseNumberArg("-1", "--temperature", { min: 0 }), { message: `--temperature must be a number >= 0, got "-1"` });
  assert.equal(parseChoice("b", "--x", ["a", "b"] as const), "b");
  assert.throws(() => parseChoice("c", "--x", ["a", "b"]), { message: `--x must be one of a, b, got "c"` });
  assert.throws(
    () => parseJsonText('{\n  "a": 1,\n  "b": \n}', "f.json"),
    (e: unknown) => e instanceof DataFormatError && e.message.startsWith("f.json:4:1: invalid JSON"),
  );
  assert.throws(() => parseJsonText("", "e.json"), { message: "e.json:1:1: invalid JSON (the file is empty)" });
});

/** [args, flag named in the message]: each must fail on the flag, whatever else is missing. */
const BAD_FLAGS: Array<[string[], string]> = [
  [["model", "init", "--config", "tiny", "--out", "OUT", "--seed", "0x10"], "--seed"],
  [["model", "init", "--config", "tiny", "--out", "OUT", "--seed", "1e3"], "--seed"],
  [["model", "init", "--config", "tiny", "--out", "OUT", "--dtype", "f64"], "--dtype"],
  [["model", "logits", "--model", "NOPE", "--tokens", "1", "--dtype", "f16"], "--dtype"],
  [["model", "logits", "--model", "NOPE", "--tokens", "1", "--activations", "fp8"], "--activations"],
  [["generate", "--model", "NOPE", "--prompt", "x", "-n", "0"], "-n"],
  [["generate", "--model", "NOPE", "--prompt", "x", "-n", "100000"], "-n"],
  [["generate", "--model", "NOPE", "--prompt", "x", "-n", "1e3"], "-n"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--max-tokens", "0"], "--max-tokens"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--max-tokens", "1e12"], "--max-tokens"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--temperature", "-1"], "--temperature"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--temperature", "Infinity"], "--temperature"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--top-p", "2"], "--top-p"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--top-p", "0"], "--top-p"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--top-k", "1.5"], "--top-k"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--min-p", "1"], "--min-p"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--seed", "-1"], "--seed"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--min-fork-budget", "abc"], "--min-fork-budget"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--mode", "fast"], "--mode"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--backend", "tpu"], "--backend"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--dtype", "f16"], "--dtype"],
  [["generate", "--model", "NOPE", "--prompt", "x", "--force-structure", "99x9"], "--force-structure"],
  [["engine", "verify", "--model", "NOPE", "--prompts", "1000000"], "--prompts"],
  [["engine", "verify", "--model", "NOPE", "--prompts", "0"], "--prompts"],
  [["engine", "verify", "--model", "NOPE", "--block-size", "1e9"], "--block-size"],
  [["engine", "verify", "--model", "NOPE", "--block-size", "100000"], "--block-size"],
  [["engine", "verify", "--model", "NOPE", "--mode", "x"], "--mode"],
  [["engine", "verify", "--model", "NOPE", "--force-structure", "6x4"], "--force-structure"],
  [["engine", "fuzz", "--iterations", "1e12"], "--iterations"],
  [["engine", "fuzz", "--iterations", "1000000000000"], "--iterations"],
  [["engine", "fuzz", "--iterations", "0"], "--iterations"],
  [["engine", "fuzz", "--seed", "-3"], "--seed"],
  [["demo", "--dir", "DIR", "--repeats", "1000000000"], "--repeats"],
  [["demo", "--dir", "DIR", "--repeats", "0"], "--repeats"],
  [["demo", "--dir", "DIR", "--seed", "x"], "--seed"],
  [["demo", "--dir", "DIR", "--structure", "5x0"], "--structure"],
  [["grade", "--pool", "1000"], "--pool"],
  [["grade", "--pool", "0x2"], "--pool"],
  [["backend", "check", "--backend", "gpu"], "--backend"],
  [["tokenizer", "add-tags", "--model", "NOPE", "--out", "OUT", "--dtype", "int8"], "--dtype"],
  [["format", "check", "--variant", "x"], "--variant"],
];

test("every bad flag value of every command is one line naming the flag, before any work", async () => {
  const dir = tempDir();
  const fill = (args: string[]) =>
    args.map((a) => (a === "OUT" || a === "DIR" ? path.join(dir, a) : a === "NOPE" ? path.join(dir, "nope") : a));
  for (const [args, flag] of BAD_FLAGS) {
    const r = await runInProcess(fill(args));
    const escaped = flag.replace(/[-]/g, "\\-");
    assertOneLineError(r, "UsageError", new RegExp(`${escaped}\\b.*(must|is not)`), args.join(" "));
  }
  assert.equal(existsSync(path.join(dir, "OUT")) || existsSync(path.join(dir, "DIR")), false, "nothing was written for a bad flag");
  console.log(`${BAD_FLAGS.length} bad flag values refused; grade's pool cap here is ${maxGraderPoolSize()}`);
});

test("as processes: a bad integer, number and choice flag, and commander's usage errors, exit 2 with one line", async () => {
  const [hex, num, choice, unknown, missing] = await runAll([
    ["generate", "--model", "x", "--prompt", "x", "--max-tokens", "0x10"],
    ["generate", "--model", "x", "--prompt", "x", "--top-p", "2"],
    ["engine", "fuzz", "--inject", "overflow"],
    ["model", "info", "x", "--bogus"],
    ["model", "init", "--out", "x"],
  ]);
  assertOneLineError(hex!, "UsageError", /^npr: UsageError: --max-tokens must be an integer >= 1, got "0x10"$/, "hex");
  assertOneLineError(num!, "UsageError", /^npr: UsageError: --top-p must be a number in \(0, 1\], got "2"$/, "top-p");
  assertOneLineError(choice!, "UsageError", /--inject must be one of leak, double-free/, "inject");
  for (const [r, msg] of [
    [unknown!, /unknown option '--bogus'/],
    [missing!, /required option '--config/],
  ] as const) {
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, msg);
    assert.doesNotMatch(r.stderr, /^\s+at /m);
  }
});
