/**
 * The compile-only check of the CUDA kernels, which needs no GPU (CI runs it): every kernel file
 * compiles for sm_90 in both dtypes through `npr backend check --backend cuda --compile-only`
 * (NVRTC where libnvrtc loads, else nvcc), and a broken kernel is reported with its file and line
 * and fails the check. Skipped, with the reason, where neither compiler exists.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { KERNEL_FILES, compileCheck, compileUnit, findNvcc } from "../../src/tensor/backend/cuda/compile.ts";
import { Nvrtc } from "../../src/tensor/backend/cuda/ffi/nvrtc.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const nv = Nvrtc.load();
const nvcc = findNvcc();
const skip = !nv.nvrtc && !nvcc ? `neither libnvrtc (${nv.why}) nor nvcc is available` : false;

test("npr backend check --backend cuda --compile-only compiles every kernel", { skip, timeout: 60_000 }, (t) => {
  const out = execFileSync(
    process.execPath,
    ["src/cli/main.ts", "backend", "check", "--backend", "cuda", "--compile-only", "--arch", "sm_90"],
    {
      cwd: ROOT,
      encoding: "utf8",
    },
  );
  t.diagnostic(out.trim());
  const units = 2 * KERNEL_FILES.length;
  assert.match(out, new RegExp(`${units}/${units} units compiled`));
  assert.doesNotMatch(out, /FAIL/);
});

test("a kernel that does not compile fails the check with its file and line", { skip, timeout: 30_000 }, () => {
  const good = compileUnit("elementwise.cu", "f32");
  const broken = { ...good, source: good.source.replace("out[i] = value;", "out[i] = undeclared_name;") };
  const report = compileCheck(nv.nvrtc, nv.why, ["sm_90"], [broken]);
  assert.equal(report.results.length, 1);
  const r = report.results[0];
  assert.equal(r.ok, false);
  assert.match(r.log ?? "", /elementwise\.cu.*undeclared_name|undeclared_name[\s\S]*elementwise\.cu/);
});
