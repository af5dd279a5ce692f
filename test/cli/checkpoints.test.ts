/**
 * Class: wrong successes. `model info` checks the weights against the config as loading does
 * (a missing, renamed, non-float or mis-shaped tensor, or weights of another config, fail by
 * name, and loading fails on the same ones); a prompt or token list longer than the model's
 * context is refused and --max-tokens past it is capped with a note; every JSON output uses
 * camelCase keys. Also the docs/behaviour pair: `generate --help` names the dtypes it takes.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { SafetensorsCheckpoint, writeSafetensors } from "../../src/format/safetensors.ts";
import type { WriteEntry } from "../../src/format/safetensors.ts";
import { assertOneLineError, runAll, runCli, runInProcess, tempDir, writeTinyCheckpoint } from "./helpers.ts";

const dir = tempDir();
const good = path.join(dir, "good");
writeTinyCheckpoint(good, 128);

/** A copy of the good checkpoint whose tensors went through `edit` (and config through `config`). */
function variant(name: string, edit: (e: WriteEntry[]) => WriteEntry[], config?: (c: Record<string, unknown>) => void): string {
  const out = path.join(dir, name);
  mkdirSync(out);
  for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"])
    copyFileSync(path.join(good, f), path.join(out, f));
  const cfg = JSON.parse(readFileSync(path.join(good, "config.json"), "utf8")) as Record<string, unknown>;
  config?.(cfg);
  writeFileSync(path.join(out, "config.json"), JSON.stringify(cfg));
  const ck = SafetensorsCheckpoint.open(good);
  const entries: WriteEntry[] = ck.names().map((n) => {
    const e = ck.get(n)!;
    return { name: n, dtype: e.dtype as WriteEntry["dtype"], shape: [...e.shape], data: ck.readBytes(n).slice() };
  });
  ck.close();
  writeSafetensors(path.join(out, "model.safetensors"), edit(entries));
  return out;
}

const UP = "model.layers.0.mlp.up_proj.weight";
const NORM = "model.norm.weight";
const LN = "model.layers.0.input_layernorm.weight";
const EMBED = "model.embed_tokens.weight";

const BROKEN: Array<[string, string, RegExp]> = [
  [variant("missing", (es) => es.filter((e) => e.name !== UP)), "missing", new RegExp(`tensor ${UP} is missing$`)],
  [
    variant("renamed", (es) => es.map((e) => (e.name === NORM ? { ...e, name: "model.final_norm.weight" } : e))),
    "renamed",
    /tensor model\.norm\.weight is missing; the checkpoint holds tensors npr does not use: model\.final_norm\.weight$/,
  ],
  [
    variant("int-dtype", (es) => es.map((e) => (e.name === LN ? { ...e, dtype: "I32" } : e))),
    "dtype",
    new RegExp(`tensor ${LN} is stored as I32, expected F32, BF16, F16 or F64$`),
  ],
  [
    variant("reshaped", (es) => es.map((e) => (e.name === EMBED ? { ...e, shape: [150, 64] } : e))),
    "shape",
    new RegExp(`tensor ${EMBED} has shape \\[150, 64\\], config.json implies \\[300, 32\\]$`),
  ],
  [
    variant(
      "two-layer-config",
      (es) => es,
      (c) => (c["num_hidden_layers"] = 2),
    ),
    "config",
    /tensor model\.layers\.1\.self_attn\.q_proj\.weight is missing$/,
  ],
];

test("model info fails, by tensor name, on every checkpoint that loading refuses", async () => {
  const ok = await runInProcess(["model", "info", good, "--json"]);
  assert.equal(ok.status, 0, ok.stderr);
  for (const [ck, what, message] of BROKEN) {
    assertOneLineError(await runInProcess(["model", "info", ck]), "CheckpointFormatError", message, `model info, ${what}`);
    // Loading (what model logits does) refuses the same checkpoint: info passes only what loads.
    const load = await runInProcess(["model", "logits", "--model", ck, "--tokens", "1"]);
    assert.equal(load.status, 2, `logits on ${what}: ${load.stderr}`);
    assert.match(load.stderr, /^npr: CheckpointFormatError: /);
  }
  // An extra tensor Qwen3 does not use passes, with a warning (transformers ignores it too).
  const extra = variant("extra", (es) => [
    ...es,
    { name: "model.rotary_emb.inv_freq", dtype: "F32", shape: [8], data: new Uint8Array(32) },
  ]);
  const r = await runInProcess(["model", "info", extra]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^npr: warning: .*tensors Qwen3 does not use were ignored: model\.rotary_emb\.inv_freq\n$/);
});

test("the model's context bounds prompts, token lists and budgets", async () => {
  const longPrompt = "a".repeat(200); // ~220 tokens with the chat template, context 128
  const tokens129 = Array.from({ length: 129 }, (_, i) => String(i % 256)).join(",");
  assertOneLineError(
    await runInProcess(["generate", "--model", good, "--prompt", longPrompt]),
    "UsageError",
    /^npr: UsageError: prompt 0 has \d+ tokens; the model's context holds 128 positions/,
    "long prompt",
  );
  assertOneLineError(
    await runInProcess(["model", "logits", "--model", good, "--tokens", tokens129]),
    "UsageError",
    /--tokens: 129 ids, more than the model's context of 128/,
    "long token list",
  );
  // A budget past the context is capped, said on stderr, and the run ends at the context.
  const r = await runCli(["generate", "--model", good, "--prompt", "hi", "--max-tokens", "1000000000", "--mode", "sequential", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stderr,
    /^npr: note: --max-tokens 1000000000 capped at (\d+) \(the model's context of 128 positions minus the \d+-token prompt\)$/m,
  );
  const [res] = JSON.parse(r.stdout) as Array<{ positions: number[]; finishReason: string }>;
  assert.ok(Math.max(...res!.positions) < 128, `last position ${Math.max(...res!.positions)}`);
});

/** Every key of every object in `v`, recursively, with where it was found. */
function keys(v: unknown, at = "$", out: string[] = []): string[] {
  if (Array.isArray(v)) v.forEach((x, i) => keys(x, `${at}[${i}]`, out));
  else if (v !== null && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      out.push(`${at}.${k}`);
      // Maps keyed by data (finish reasons such as "no_kv", tag names) hold values, not our keys.
      if (k !== "tagIds" && k !== "finishReasons") keys(x, `${at}.${k}`, out);
    }
  }
  return out;
}

test("JSON outputs use camelCase keys everywhere (finishReason, tokensMismatch, leakedBlocks, storedElements)", async () => {
  const [info, gen, verify, fuzz] = await runAll([
    ["model", "info", good, "--json"],
    ["generate", "--model", good, "--prompt", "hi", "--max-tokens", "8", "--json"],
    ["engine", "verify", "--model", good, "--prompts", "1", "--force-structure", "2x4"],
    ["engine", "fuzz", "--iterations", "2"],
  ]);
  for (const [name, r, expect] of [
    ["info", info, "storedElements"],
    ["generate", gen, "finishReason"],
    ["verify", verify, "tokensMismatch"],
    ["fuzz", fuzz, "leakedBlocks"],
  ] as const) {
    assert.equal(r!.status, 0, `${name}: ${r!.stderr}`);
    const all = keys(JSON.parse(r!.stdout));
    assert.ok(
      all.some((k) => k.endsWith(`.${expect}`)),
      `${name} has ${expect}`,
    );
    const snake = all.filter((k) => /_/.test(k.split(".").pop()!));
    assert.deepEqual(snake, [], `${name}: snake_case keys`);
  }
});

test("generate's help names the dtypes its --dtype takes (bf16 included)", async () => {
  const r = await runInProcess(["generate", "--help"]);
  assert.match(r.stdout, /--dtype <dtype>\s+compute dtype: f32, f64 or bf16/);
  assertOneLineError(
    await runInProcess(["generate", "--model", good, "--prompt", "x", "--dtype", "f16"]),
    "UsageError",
    /--dtype must be f32, f64 or bf16/,
    "f16",
  );
});

test("model init refuses sizes that would crash: a key past its range, a model past this machine's memory", async () => {
  const cfg = JSON.parse(readFileSync(path.join(good, "config.json"), "utf8")) as Record<string, unknown>;
  const write = (name: string, patch: Record<string, unknown>) => {
    const f = path.join(dir, name);
    writeFileSync(f, JSON.stringify({ ...cfg, ...patch }));
    return f;
  };
  const typo = write("typo.json", { vocab_size: 1e12 });
  assertOneLineError(
    await runInProcess(["model", "init", "--config", typo, "--out", path.join(dir, "t1")]),
    "ConfigError",
    /key "vocab_size" is 1000000000000, expected a positive integer <= 4194304$/,
    "vocab 1e12",
  );
  // Every key inside its range, the product is not: 2^22 x 2^16 embedding is 2.7e11 parameters.
  const huge = write("huge.json", {
    vocab_size: 2 ** 22,
    hidden_size: 2 ** 16,
    head_dim: 128,
    num_attention_heads: 2,
    num_key_value_heads: 1,
  });
  assertOneLineError(
    await runInProcess(["model", "init", "--config", huge, "--out", path.join(dir, "t2")]),
    "UsageError",
    /^npr: UsageError: a model of [\d,]+ parameters needs about [\d.]+ TiB of memory to initialize; this machine has /,
    "huge",
  );
});
