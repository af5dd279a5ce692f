/**
 * `npr format layout|check|show` as a process: stdin JSONL in, one JSONL line out per input line.
 * The layout output is compared with the independent oracle of reference-layout.ts on random
 * canonical trajectories (prompts with tag strings), every malformed mutation must come back as
 * {"error"}, and bad lines must not stop the command.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Rng } from "../../src/util/rng.ts";
import { MUTATIONS, mutate, randomTrajectory, refLayout } from "./reference-layout.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const MAIN = join(ROOT, "src/cli/main.ts");

function npr(args: string[], input: string): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { input, encoding: "utf8", cwd: ROOT, env: { ...process.env, NO_COLOR: "1" } });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

test("npr format layout matches the independent oracle; malformed lines give {error} and the run goes on", () => {
  const rng = new Rng(424242);
  const lines: string[] = [];
  const want: Array<unknown> = [];
  for (let n = 0; n < 300; n++) {
    let t = randomTrajectory(rng);
    const bad = n % 3 === 2;
    if (bad) t = mutate(rng, t, MUTATIONS[rng.int(MUTATIONS.length)]!);
    lines.push(JSON.stringify({ prompt_len: t.promptLen, tokens: t.tokens }));
    want.push(refLayout(t.promptLen, t.tokens));
    if (n === 50) {
      lines.push("{not json", JSON.stringify({ prompt_len: 5, tokens: ["a"] }), JSON.stringify({ prompt_len: 0, tokens: [1, 2] }), "");
      want.push(null, null, null);
    }
  }
  const r = npr(["format", "layout"], lines.join("\n") + "\n");
  assert.equal(r.status, 0, r.stderr);
  const out = r.stdout
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(out.length, want.length);
  let ok = 0;
  let rejected = 0;
  out.forEach((o, i) => {
    if (want[i] === null) {
      assert.equal(typeof o["error"], "string", `line ${i + 1}: expected an error, got ${JSON.stringify(o).slice(0, 200)}`);
      rejected++;
    } else {
      assert.deepEqual(o, want[i], `line ${i + 1}`);
      ok++;
    }
  });
  console.log(`layout: ${ok} lines identical to the oracle, ${rejected} rejected`);
  assert.match(String(out[51]!["error"]), /line 52: invalid JSON/);
  assert.match(String(out[52]!["error"]), /prompt_len/);
  assert.match(String(out[53]!["error"]), /"tokens" must be an array of strings/);
});

test("npr format check scores per line in both variants", () => {
  const good = "<guideline><plan>1: small cases</plan></guideline><step>1: n=1 gives 2</step><takeaway>so it is 2</takeaway>\\boxed{2}";
  const input =
    [good, "plain text", good.replace("\\boxed{2}", "no box")].map((response) => JSON.stringify({ response })).join("\n") + "\n{}\n";
  const s1 = npr(["format", "check", "--variant", "stage1"], input);
  assert.equal(s1.status, 0, s1.stderr);
  const rows = s1.stdout
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l));
  assert.deepEqual(rows[0], { valid: true, score: 0, errors: [] });
  assert.equal(rows[1].score, -1.5);
  assert.equal(rows[2].score, -1);
  assert.match(rows[3].error, /"response" must be a string/);
  const ev = npr(["format", "check", "--variant", "eval"], input);
  assert.equal(JSON.parse(ev.stdout.split("\n")[2]!).score, 0, "eval does not require a boxed answer");
  assert.equal(npr(["format", "check", "--variant", "nope"], "").status, 2);
});

test("npr format show draws the tree", () => {
  const text =
    "<guideline><plan>1: a plan</plan><plan>2: another</plan></guideline><step>1: work one</step><step>2: work two</step><takeaway>pick one</takeaway>So \\boxed{5}.";
  const r = npr(["format", "show", "--text"], text);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /block 1 \(2 plan\(s\), 2 step\(s\)\)/);
  assert.match(r.stdout, /├─ step 2 2: work two/);
  assert.match(r.stdout, /answer 5/);
  assert.match(r.stdout, /well-formed/);
});
