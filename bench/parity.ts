/**
 * npr side of the Hugging Face parity check: for each folder written by bench/hf_parity.py, loads
 * the bf16 checkpoint with loadQwen3 on the chosen backend (f32 compute by default; --dtype bf16
 * for mixed precision; --activations bf16 to round activations where transformers' bf16 forward
 * does, Qwen3ModelOptions.activations), runs one causal forward
 * over ids.json and compares the logits with transformers' (bf16 and fp32 compute over the same
 * weights): relative error ||npr - hf|| / ||hf|| (target <= 2e-2) and argmax agreement (>= 99%).
 * Prints one JSON line per config and a table; exits 1 when a target is missed.
 *
 *   node bench/parity.ts --dir /tmp/parity --backend cuda [--configs tiny,0.6b] [--cpu]
 *     [--dtype f32|bf16] [--activations bf16]
 *
 * A row "hf bf16 vs hf fp32" per config gives transformers' own bf16 rounding error, the distance
 * that npr's f32 logits cannot come below against the bf16 reference.
 *
 * --cpu also runs the CPU backend (the reference every backend is tested against) on the same
 * checkpoint and reports it beside the GPU, plus the GPU's distance to it, so a disagreement with
 * transformers can be pinned on the backend or on the model code.
 */
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { makeBackend } from "../src/cli/model.ts";
import { loadQwen3 } from "../src/model/index.ts";
import { causalLayout } from "../src/util/layout.ts";

const REL_TARGET = 2e-2;
const ARGMAX_TARGET = 0.99;

interface Row {
  name: string;
  layers: number;
  tokens: number;
  vocab: number;
  backend: string;
  ref: string;
  relError: number;
  /** relError over the first and the last quarter of the positions. */
  relHead: number;
  relTail: number;
  maxAbs: number;
  argmaxAgree: number;
  /** Largest reference margin at a disagreeing row (0 when all agree). */
  mismatchGap: number;
  loadS: number;
  forwardS: number;
  ok: boolean;
}

/**
 * a = npr, b = reference. gap: over the rows where the argmaxes differ, the largest margin by which
 * the reference prefers its own argmax to npr's (a near-tie shows as a gap below maxAbs).
 */
function compare(a: Float32Array, b: Float32Array, T: number, V: number): { rel: number; maxAbs: number; agree: number; gap: number } {
  let num = 0;
  let den = 0;
  let maxAbs = 0;
  let agree = 0;
  let gap = 0;
  for (let t = 0; t < T; t++) {
    let ia = 0;
    let ib = 0;
    for (let j = 0; j < V; j++) {
      const x = a[t * V + j];
      const y = b[t * V + j];
      num += (x - y) * (x - y);
      den += y * y;
      maxAbs = Math.max(maxAbs, Math.abs(x - y));
      if (x > a[t * V + ia]) ia = j;
      if (y > b[t * V + ib]) ib = j;
    }
    if (ia === ib) agree++;
    else gap = Math.max(gap, b[t * V + ib] - b[t * V + ia]);
  }
  return { rel: Math.sqrt(num / den), maxAbs, agree: agree / T, gap };
}

function main(): void {
  const { values } = parseArgs({
    options: {
      dir: { type: "string" },
      backend: { type: "string", default: "cuda" },
      configs: { type: "string" },
      cpu: { type: "boolean", default: false },
      // bf16: mixed precision (bf16 weights and GEMM inputs, fp32 accumulation, f32 norms/softmax/residual).
      dtype: { type: "string", default: "f32" },
      // bf16: activations rounded as transformers' bf16 forward rounds them (eager attention, materialized).
      activations: { type: "string" },
    },
  });
  if (!values.dir) throw new Error("--dir is required (the OUT folder of bench/hf_parity.py)");
  const names = values.configs
    ? values.configs.split(",")
    : fs.readdirSync(values.dir).filter((n) => fs.existsSync(path.join(values.dir!, n, "meta.json")));
  const backends = [values.backend!, ...(values.cpu ? ["cpu"] : [])];
  if (values.activations !== undefined && values.activations !== "bf16")
    throw new Error(`--activations ${values.activations}: only bf16 is known`);
  const activations = values.activations as "bf16" | undefined;
  const label = `${values.dtype}${activations ? " act-bf16" : ""}`;
  const rows: Row[] = [];
  for (const name of names) {
    const dir = path.join(values.dir, name);
    const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf8"));
    const ids = Int32Array.from(JSON.parse(fs.readFileSync(path.join(dir, "ids.json"), "utf8")) as number[]);
    const T = ids.length;
    const V = meta.shape.vocab_size as number;
    const outs = new Map<string, Float32Array>();
    const hfRefs: Array<[string, Float32Array]> = ["bf16", "fp32"].map((ref) => {
      const buf = fs.readFileSync(path.join(dir, `logits_${ref}.f32`));
      return [`hf ${ref}`, new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4)];
    });
    {
      // transformers' bf16 against its own fp32: the floor for an unrounded npr against hf bf16.
      const c = compare(hfRefs[0]![1], hfRefs[1]![1], T, V);
      const row: Row = {
        name,
        layers: meta.shape.num_hidden_layers,
        tokens: T,
        vocab: V,
        backend: "hf bf16",
        ref: "hf fp32",
        relError: c.rel,
        relHead: NaN,
        relTail: NaN,
        maxAbs: c.maxAbs,
        argmaxAgree: c.agree,
        mismatchGap: c.gap,
        loadS: 0,
        forwardS: 0,
        ok: c.rel <= REL_TARGET && c.agree >= ARGMAX_TARGET,
      };
      console.log(JSON.stringify({ ...row, device: meta.device }));
      rows.push(row);
    }
    for (const be of backends) {
      const backend = makeBackend(be);
      let t0 = performance.now();
      const model = loadQwen3(dir, { backend, dtype: values.dtype as "f32" | "bf16", requiresGrad: false, activations });
      const loadS = (performance.now() - t0) / 1000;
      // One warm-up forward (kernel compiles, cuBLAS heuristics), then the timed one.
      model.forward(ids.subarray(0, 4), causalLayout(4)).toArray();
      t0 = performance.now();
      const logits = Float32Array.from(model.forward(ids, causalLayout(T)).toArray());
      const forwardS = (performance.now() - t0) / 1000;
      outs.set(be, logits);
      const refs: Array<[string, Float32Array]> = [...hfRefs];
      if (be !== backends[0]) refs.push([`npr ${backends[0]}`, outs.get(backends[0])!]);
      for (const [ref, hf] of refs) {
        const c = compare(logits, hf, T, V);
        // The first and last quarter of the positions, to see error that grows along the sequence.
        const q = Math.max(1, Math.floor(T / 4));
        const head = compare(logits.subarray(0, q * V), hf.subarray(0, q * V), q, V);
        const tail = compare(logits.subarray((T - q) * V), hf.subarray((T - q) * V, T * V), q, V);
        const row: Row = {
          name,
          layers: meta.shape.num_hidden_layers,
          tokens: T,
          vocab: V,
          backend: `${be} ${label}`,
          ref,
          relError: c.rel,
          relHead: head.rel,
          relTail: tail.rel,
          maxAbs: c.maxAbs,
          argmaxAgree: c.agree,
          mismatchGap: c.gap,
          loadS,
          forwardS,
          ok: c.rel <= REL_TARGET && c.agree >= ARGMAX_TARGET,
        };
        rows.push(row);
        console.log(JSON.stringify({ ...row, device: meta.device }));
      }
    }
  }
  console.log(
    "\n| config | layers | tokens | backend | reference | rel. error | first/last quarter | max abs | argmax agree | worst mismatch gap | load s | forward s | ok |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${r.layers} | ${r.tokens} | ${r.backend} | ${r.ref} | ${r.relError.toExponential(2)} | ${Number.isNaN(r.relHead) ? "-" : `${r.relHead.toExponential(1)} / ${r.relTail.toExponential(1)}`} | ${r.maxAbs.toExponential(2)} | ${(r.argmaxAgree * 100).toFixed(1)}% | ${r.mismatchGap.toExponential(1)} | ${r.loadS.toFixed(1)} | ${r.forwardS.toFixed(3)} | ${r.ok ? "yes" : "NO"} |`,
    );
  }
  if (rows.some((r) => !r.ok && r.backend !== "hf bf16")) process.exitCode = 1;
}

main();
