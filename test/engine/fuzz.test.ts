/**
 * The fuzzer as a test: scheduler and pool under the adversarial scripted model (stray and
 * nested tags, 0 or 7 plans, stop ids inside steps, budget exhaustion, aborts during forks,
 * preemption on small pools) at a few seeds: no leak, no double free, no invariant violation,
 * every request finished with a defined reason. And its negative control: a planted leak and a
 * planted double free are reported (by the library and by `npr engine fuzz --inject`, exit 1).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { engineVocab, runFuzz } from "../../src/engine/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const tok = byteTokenizer();
const vocab = engineVocab(tok, 320);
const encode = (s: string) => tok.encode(s);

test("engine fuzz: no leaks, no double frees, every request finishes", () => {
  for (const seed of [3, 1234]) {
    const r = runFuzz(vocab, encode, seed, 60);
    console.log(JSON.stringify(r));
    assert.equal(r.leakedBlocks, 0);
    assert.equal(r.doubleFrees, 0);
    assert.equal(r.invariantViolations, 0);
    assert.equal(r.unfinished, 0);
    const reasons = r.finishReasons;
    assert.equal(
      Object.values(reasons).reduce((a, b) => a + b!, 0),
      r.requests,
    );
    for (const k of ["stop", "length", "malformed", "abort"] as const) assert.ok((reasons[k] ?? 0) > 0, `some request ended with ${k}`);
    assert.ok(r.forks > 0 && r.preemptions > 0);
  }
});

test("engine fuzz negative control: a planted leak is reported", () => {
  const r = runFuzz(vocab, encode, 3, 5, { inject: "leak" });
  console.log(`leak injected: ${JSON.stringify(r)}`);
  assert.ok(r.leakedBlocks > 0, "the leaked table's blocks are still held at the end");
  assert.equal(r.doubleFrees, 0);
});

test("engine fuzz negative control: a planted double free is reported", () => {
  const r = runFuzz(vocab, encode, 3, 5, { inject: "double-free" });
  console.log(`double free injected: ${JSON.stringify(r)}`);
  assert.equal(r.doubleFrees, 1);
  assert.ok(r.invariantViolations >= 1, "the refused release stops its iteration as a violation");
});

test("npr engine fuzz --inject exits 1 with the fault in its report; a clean run exits 0", () => {
  const run = (extra: string[]) =>
    spawnSync(process.execPath, ["src/cli/main.ts", "engine", "fuzz", "--iterations", "3", ...extra], { cwd: ROOT, encoding: "utf8" });
  const clean = run([]);
  assert.equal(clean.status, 0, clean.stderr);
  assert.equal(JSON.parse(clean.stdout).leakedBlocks, 0);
  const leak = run(["--inject", "leak"]);
  assert.equal(leak.status, 1, leak.stderr);
  assert.ok(JSON.parse(leak.stdout).leakedBlocks > 0);
  const bad = run(["--inject", "overflow"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^npr: UsageError: --inject must be one of leak, double-free, got "overflow"\n$/);
});
