/**
 * `npr bundle --out FILE`: one archive (tar.xz, or tar.gz by extension) that runs npr on a host
 * with nothing installed but the NVIDIA driver and CUDA libraries (DESIGN.md "Offline GPU hosts").
 * It holds the pinned Node binary, the production dependencies (as `npm ls --omit=dev` lists them,
 * pruned of source maps, type declarations, changelogs and other platforms' koffi binaries),
 * src/, bin/, presets/, test/, bench/, package.json and a `npr` launcher, all under one top
 * folder `npr/` (tests and benchmarks come along so a GPU host can run them with the bundled Node):
 *
 *   tar xf npr.tar.xz && ./npr/npr backend check --backend cuda
 *
 * Knows the checkout's layout and GNU tar; nothing about what npr computes.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { UsageError } from "../util/index.ts";
import { checkOutputFile } from "./args.ts";
import { writeOut } from "./io.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The archive must stay below this (the limit), or the command fails. */
const MAX_BYTES = 60 * 1024 * 1024;
/** The Node binary of the pinned `node` devDependency. */
const NODE_BIN = "node_modules/node/bin/node";
/** Folders of the checkout that go into the bundle whole (docs/cli.md lists them). */
export const SOURCE_DIRS = ["src", "bin", "presets", "test", "bench"];

/** Files of a dependency that npr never loads at run time. */
const PRUNE_FILE = /(\.map|\.d\.ts|\.d\.mts|\.d\.cts|CHANGELOG\.md|\.markdown|\.tsbuildinfo)$/i;
/** Folders pruned inside dependencies: koffi's C sources and docs, builds npr does not import. */
const PRUNE_DIR = new Set(["src", "vendor", "doc", "docs", "test", "tests", "musl_x64", "types", "umd", "umd-min", "esm"]);
/** Packages whose src/ folder IS their code (pruning "src" would break them). */
const KEEP_SRC = new Set(["koffi", "@huggingface/jinja", "@huggingface/tokenizers", "commander", "cli-progress"]);

/** Production dependency folders relative to the root (npm's own resolution, so nothing is guessed). */
export function productionPackages(root = ROOT): string[] {
  const out = execFileSync("npm", ["ls", "--omit=dev", "--all", "--parseable"], { cwd: root, encoding: "utf8" });
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && path.resolve(l) !== path.resolve(root))
    .map((l) => path.relative(root, l));
}

/** Every file to pack under a folder, skipping pruned files and folders when `prune` is set. */
function walk(root: string, rel: string, prune: boolean, keepSrc: boolean, out: string[]): void {
  const abs = path.join(root, rel);
  for (const e of fs.readdirSync(abs, { withFileTypes: true })) {
    const r = path.join(rel, e.name);
    if (e.isDirectory()) {
      if (e.name === "node_modules") continue; // nested packages come from npm ls on their own
      if (prune && PRUNE_DIR.has(e.name) && !(e.name === "src" && keepSrc)) continue;
      walk(root, r, prune, keepSrc, out);
    } else if (e.isFile() || e.isSymbolicLink()) {
      if (prune && PRUNE_FILE.test(e.name)) continue;
      out.push(r);
    }
  }
}

/** The list of files (relative to the root) that go into the bundle, besides the launcher. */
export function bundleFiles(root = ROOT): string[] {
  const files: string[] = ["package.json", NODE_BIN];
  for (const d of SOURCE_DIRS) walk(root, d, false, false, files);
  for (const pkg of productionPackages(root)) {
    const name = pkg.replace(/^.*node_modules\//, "");
    walk(root, pkg, true, KEEP_SRC.has(name), files);
  }
  return files;
}

const LAUNCHER = `#!/bin/sh
# npr launcher of a bundle: the bundled Node runs the TypeScript sources directly.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/node" "$here/bin/npr.js" "$@"
`;

/** Builds the archive; returns its size in bytes. Throws a UsageError when it exceeds 60 MB. */
export function buildBundle(outFile: string, root = ROOT): { bytes: number; files: number } {
  if (!fs.existsSync(path.join(root, NODE_BIN))) {
    throw new UsageError(`${NODE_BIN} is missing`, { code: "no_node", param: "--out", hint: "run `npm install` in the checkout first" });
  }
  const gz = /\.(tgz|tar\.gz)$/.test(outFile);
  if (!gz && !/\.(txz|tar\.xz)$/.test(outFile)) {
    throw new UsageError(`--out ${outFile}: expected a .tar.xz or .tar.gz name`, { code: "bad_out", param: "--out" });
  }
  checkOutputFile(outFile, "--out");
  const files = bundleFiles(root);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "npr-bundle-"));
  try {
    const list = path.join(tmp, "files.txt");
    fs.writeFileSync(list, files.join("\n") + "\n");
    fs.writeFileSync(path.join(tmp, "npr"), LAUNCHER, { mode: 0o755 });
    const out = path.resolve(outFile);
    // Every path goes under npr/; the Node binary becomes npr/node beside the launcher.
    execFileSync(
      "tar",
      [
        gz ? "-czf" : "-cJf",
        out,
        "--owner=0",
        "--group=0",
        "--dereference",
        "--transform",
        `s,^${NODE_BIN}$,node,`,
        "--transform",
        "s,^,npr/,",
        "-C",
        root,
        "-T",
        list,
        "-C",
        tmp,
        "npr",
      ],
      { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, XZ_OPT: "-6 -T0" } },
    );
    const bytes = fs.statSync(out).size;
    if (bytes > MAX_BYTES) {
      throw new UsageError(`${outFile} is ${(bytes / 2 ** 20).toFixed(1)} MiB, over the 60 MB limit`, {
        code: "bundle_too_big",
        param: "--out",
        hint: "a production dependency grew: prune it in src/cli/bundle.ts (PRUNE_DIR / PRUNE_FILE)",
      });
    }
    return { bytes, files: files.length + 1 };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export function registerBundleCommand(program: Command): void {
  program
    .command("bundle")
    .description("pack Node, production dependencies and sources into one archive that runs npr with nothing else installed")
    .requiredOption("--out <file>", "archive to write (.tar.xz or .tar.gz)")
    .action((opts: { out: string }) => {
      const t0 = performance.now();
      const r = buildBundle(opts.out);
      writeOut(
        `${opts.out}: ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.files} files, ${((performance.now() - t0) / 1000).toFixed(1)} s\n` +
          `run it with: tar xf ${path.basename(opts.out)} && ./npr/npr --help\n`,
      );
    });
}
