/**
 * Benchmark loader errors name the file, the line and the reason (exact text), and the quirks
 * reach the grading options (OlympiadBench unit/error). Uses small files written to a temp dir.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadBenchmark } from "../../src/tasks/benchmarks.ts";
import { DataFormatError, UsageError } from "../../src/util/errors.ts";

function withData(file: string, lines: string[], fn: (dir: string, path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), "npr-bench-"));
  try {
    mkdirSync(join(dir, "benchmarks"));
    const path = join(dir, "benchmarks", file);
    writeFileSync(path, lines.join("\n") + "\n");
    fn(dir, path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const ok = JSON.stringify({ id: "a", problem: "1+1?", answer: "2" });

test("loader: malformed lines fail with file, line number and reason", () => {
  const cases: [string, string][] = [
    ["{not json", "invalid JSON"],
    ["[1,2]", "expected a JSON object"],
    [JSON.stringify({ id: "b", problem: "p" }), '"answer" must be a non-empty string, got nothing'],
    [JSON.stringify({ id: "b", problem: "p", answer: 3 }), '"answer" must be a non-empty string, got 3'],
    [JSON.stringify({ id: "a", problem: "p", answer: "1" }), 'duplicate id "a"'],
  ];
  for (const [bad, reason] of cases) {
    withData("aime24.jsonl", [ok, "", bad], (dir, path) => {
      assert.throws(
        () => loadBenchmark("aime24", dir),
        (err: unknown) => {
          assert.ok(err instanceof DataFormatError);
          assert.equal(err.code, "malformed_line");
          assert.ok(err.message.startsWith(`${path}:3: ${reason}`), err.message);
          return true;
        },
      );
    });
  }
});

test("loader: exact message for a missing answer; unknown benchmark; missing file", () => {
  withData("amc23.jsonl", [JSON.stringify({ id: "x", problem: "p", answer: "" })], (dir, path) => {
    assert.throws(() => loadBenchmark("amc23", dir), { message: `${path}:1: "answer" must be a non-empty string, got ""` });
  });
  assert.throws(() => loadBenchmark("gsm8k", "/nowhere"), UsageError);
  assert.throws(() => loadBenchmark("aime24", "/nowhere"), DataFormatError);
});

test("loader: OlympiadBench unit and error become grading options; zebra grids validated", () => {
  const rec = { id: "o1", problem: "p", answer: "4.2", answer_type: "Numerical", is_multiple_answer: false, unit: "%", error: "1e-1" };
  withData("olympiadbench.jsonl", [JSON.stringify(rec)], (dir) => {
    const t = loadBenchmark("olympiadbench", dir);
    assert.deepEqual(t.get(0).grade, { unit: "%", absTol: 0.1 });
    const o = t.evaluate(t.get(0), "\\boxed{4.25}");
    assert.equal(o.kind === "graded" && o.correct, true);
    assert.deepEqual(t.evaluate(t.get(0), "no answer at all"), {
      kind: "malformed",
      why: "no answer found (no \\boxed{} and no fallback matched)",
    });
  });
  withData(
    "zebralogic_grid_partial216.jsonl",
    [JSON.stringify({ id: "z", problem: "p", answer: "{}", solution: { header: ["House"], rows: [["1", "x"]] } })],
    (dir, path) => {
      assert.throws(() => loadBenchmark("zebralogic", dir), {
        message: `${path}:1: "solution" must be {header: string[], rows: string[][]} with rows as wide as the header`,
      });
    },
  );
});

test("loader: an empty or blank file is an error, never a benchmark of 0 rows; a folder in its place too", () => {
  for (const lines of [[], ["", "   ", ""]]) {
    withData("math500.jsonl", lines, (dir, path) => {
      assert.throws(
        () => loadBenchmark("math500", dir),
        (err: unknown) => {
          assert.ok(err instanceof DataFormatError);
          assert.equal(err.code, "empty_file");
          assert.ok(err.message.startsWith(`${path}: the file holds no rows`), err.message);
          return true;
        },
      );
    });
  }
  const dir = mkdtempSync(join(tmpdir(), "npr-bench-"));
  try {
    mkdirSync(join(dir, "benchmarks", "aime24.jsonl"), { recursive: true });
    assert.throws(
      () => loadBenchmark("aime24", dir),
      (err: unknown) => err instanceof DataFormatError && /EISDIR/.test(err.message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
