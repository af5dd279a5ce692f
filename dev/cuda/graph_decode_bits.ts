/**
 * Bit identity of the graph decode between two source trees (a kernel or decode-step change that
 * must not change the math): the same hand-written weights (a seeded LCG, not the tree's init) and
 * the same 40 greedy decode steps through each tree's GraphDecoder on CUDA, for bf16 (fused body)
 * and f32 weights, fused and unfused, 1, 3 and 6 rows; prints one line per case with a hash of
 * every step's logits bits. Run it on the old and the new tree (e.g. `git archive HEAD src
 * package.json | tar -x -C /tmp/base`, node_modules linked in) and compare the hashes.
 *
 *   node dev/cuda/graph_decode_bits.ts /path/to/tree-root
 */
import { createHash } from "node:crypto";
const root = process.argv[2] ?? process.cwd();
const { CudaBackend, cudaUnavailable } = await import(`${root}/src/tensor/backend/cuda/index.ts`);
const why = cudaUnavailable();
if (why) {
  console.log(`no CUDA here: ${why}`);
  process.exit(0);
}
const M = await import(`${root}/src/model/index.ts`);
const { GraphDecoder } = await import(`${root}/src/engine/graph-decode.ts`);
const be = new CudaBackend();
const cfg = M.makeQwen3Config({
  vocabSize: 1000,
  hiddenSize: 256,
  intermediateSize: 512,
  numHiddenLayers: 3,
  numAttentionHeads: 8,
  numKeyValueHeads: 2,
  headDim: 32,
  ropeTheta: 10000,
  tieWordEmbeddings: false,
});
let s = 12345;
const rnd = () => (s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5;
const bits = (x: number) => {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0]! >>> 16;
};
for (const dtype of ["bf16", "f32"] as const) {
  const model = M.Qwen3Model.random(cfg, { seed: 1, backend: be, dtype });
  s = 12345;
  for (const spec of M.qwen3ParamSpecs(cfg)) {
    const t = model.param(spec.name);
    const n = t.size;
    const norm = spec.name.endsWith("norm.weight");
    const vals = Float32Array.from({ length: n }, () => (norm ? 1 + 0.2 * rnd() : 0.12 * rnd()));
    be.write(t.buffer, t.dtype === "bf16" ? Uint16Array.from(vals, bits) : vals);
  }
  for (const fused of [true, false]) {
    for (const rows of [1, 3, 6]) {
      const storage = new M.PagedKVStorage(model, 64, 16);
      const dec = new GraphDecoder(model, storage, { fused });
      const h = createHash("sha256");
      const toks = Array.from({ length: rows }, (_, r) => 7 + r);
      const first: number[] = [];
      for (let t = 0; t < 40; t++) {
        const items = toks.map((tok, r) => {
          const base = r * 256; // row r's slots: blocks 16r.. (contiguous, 16 per block)
          const blocks: number[] = [],
            starts: number[] = [],
            ends: number[] = [];
          for (let b = 0; b * 16 < t; b++) {
            blocks.push(r * 16 + b);
            starts.push(0);
            ends.push(Math.min(16, t - b * 16));
          }
          return {
            seqId: r,
            ids: [tok],
            positions: [t],
            writeSlots: Int32Array.of(base + t),
            visible: { blocks, starts, ends },
            sample: null,
          };
        });
        const lg = dec.run(items) as Float32Array;
        h.update(new Uint8Array(lg.buffer, lg.byteOffset, lg.byteLength));
        for (let r = 0; r < rows; r++) {
          let best = 0;
          for (let j = 1; j < 1000; j++) if (lg[r * 1000 + j]! > lg[r * 1000 + best]!) best = j;
          toks[r] = best;
          if (r === 0) first.push(best);
        }
      }
      console.log(
        JSON.stringify({
          root: root.split("/").pop(),
          dtype,
          fused,
          rows,
          realFused: dec.fused,
          captures: dec.captures,
          replays: dec.replays,
          hash: h.digest("hex").slice(0, 16),
          first: first.slice(0, 12),
        }),
      );
      dec.dispose();
      storage.dispose();
    }
  }
}
