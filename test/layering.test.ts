/**
 * Imports point downward only (DESIGN.md "Layers"): a file under src/<folder>/ may import its own
 * folder or a folder of a lower rank, never a sibling or a higher rank. Every violation is listed
 * with file:line. Other folders import a folder only through its entry file, src/<folder>/index.ts
 * (the backends' entry files tensor/backend/cpu/index.ts and tensor/backend/cuda/index.ts count as
 * entries of their own: only the composition root picks a backend, and loading tensor/ must not
 * load either). Also checks that each src file opens with a header comment.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SRC = join(ROOT, "src");

export const RANKS: Record<string, number> = {
  util: 0,
  format: 1,
  tensor: 1,
  kv: 1,
  tokenizer: 2,
  tasks: 2,
  model: 3,
  engine: 4,
  eval: 5,
  train: 6,
  serve: 6,
  cli: 7,
};

/** The files other folders may import: each folder's index.ts, and the two backend entries. */
const ENTRY_FILES = new Set([
  ...Object.keys(RANKS).map((f) => `${f}/index.ts`),
  "tensor/backend/cpu/index.ts",
  "tensor/backend/cuda/index.ts",
]);

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (/\.(ts|js|mjs)$/.test(name)) out.push(p);
  }
  return out;
}

function folderOf(file: string): string {
  return relative(SRC, file).split("/")[0]!;
}

const IMPORT_RE = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|new\s+URL\s*\(\s*)["']([^"']+)["']/g;

test("src/ imports point downward only", () => {
  const violations: string[] = [];
  const files = walk(SRC);
  for (const file of files) {
    const folder = folderOf(file);
    const rank = RANKS[folder];
    if (rank === undefined) {
      violations.push(`${relative(ROOT, file)}: folder src/${folder} has no rank in DESIGN.md (add it to RANKS)`);
      continue;
    }
    const lines = readFileSync(file, "utf8").split("\n");
    lines.forEach((line, i) => {
      for (const m of line.matchAll(IMPORT_RE)) {
        const spec = m[1]!;
        if (!spec.startsWith(".")) continue;
        const target = resolve(dirname(file), spec);
        if (!target.startsWith(SRC + "/")) {
          violations.push(`${relative(ROOT, file)}:${i + 1}: imports ${spec}, outside src/`);
          continue;
        }
        const other = folderOf(target);
        if (other === folder) continue;
        const rel = relative(SRC, target);
        if (!ENTRY_FILES.has(rel)) {
          violations.push(
            `${relative(ROOT, file)}:${i + 1}: imports ${rel} directly; other folders import src/${other}/ through its index.ts`,
          );
        }
        const otherRank = RANKS[other];
        if (otherRank === undefined || otherRank >= rank) {
          violations.push(
            `${relative(ROOT, file)}:${i + 1}: ${folder} (rank ${rank}) imports ${other} (rank ${otherRank ?? "?"}) via "${spec}"`,
          );
        }
      }
    });
  }
  assert.deepEqual(violations, [], `upward or sideways imports:\n${violations.join("\n")}`);
});

test("every src file opens with a header comment", () => {
  const missing = walk(SRC).filter((f) => !/^\s*(\/\*\*|\/\/)/.test(readFileSync(f, "utf8")));
  assert.deepEqual(
    missing.map((f) => relative(ROOT, f)),
    [],
  );
});
