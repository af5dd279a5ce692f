/**
 * Class: a reader that stops early (`npr ... | head`). The command ends quietly with exit code 0
 * and no stack, whether its output is one big write (model logits) or many lines (format check,
 * model info), and whether the pipe closes before or while it writes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, tempDir, writeTinyCheckpoint } from "./helpers.ts";

const ckpt = path.join(tempDir(), "m");
writeTinyCheckpoint(ckpt, 256);

/** Runs the CLI, reads `keep` bytes of stdout, then closes the pipe; resolves with how it ended. */
function headOf(
  args: string[],
  keep: number,
  input = "",
): Promise<{ status: number | null; signal: string | null; stderr: string; got: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["src/cli/main.ts", ...args], {
      cwd: ROOT,
      env: { ...process.env, NODE_COMPILE_CACHE: path.join(tmpdir(), "npr-test-compile-cache") },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let got = 0;
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.stdout.on("data", (d: Buffer) => {
      got += d.length;
      if (got >= keep) child.stdout.destroy(); // what `head -c keep` does
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    child.on("error", reject);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stderr, got });
    });
    child.stdin.on("error", () => {});
    child.stdin.end(input);
  });
}

test("EPIPE: output cut short by the reader ends with exit 0 and nothing on stderr", async () => {
  const tokens = Array.from({ length: 200 }, (_, i) => String(i)).join(",");
  const lines = Array.from({ length: 20_000 }, (_, i) => JSON.stringify({ response: `<guideline><plan>1: p${i}</plan></guideline>` })).join(
    "\n",
  );
  const runs = await Promise.all([
    headOf(["model", "logits", "--model", ckpt, "--tokens", tokens], 10), // one ~1 MB write
    headOf(["format", "check"], 100, lines), // 20,000 lines, one write each
    headOf(["model", "info", ckpt], 1),
  ]);
  for (const [i, r] of runs.entries()) {
    console.log(`run ${i}: status ${r.status}, read ${r.got} bytes, stderr ${JSON.stringify(r.stderr.slice(0, 200))}`);
    assert.equal(r.signal, null, `run ${i} was killed (hang)`);
    assert.equal(r.status, 0, `run ${i}: ${r.stderr}`);
    assert.equal(r.stderr, "", `run ${i} printed on stderr`);
  }
});
