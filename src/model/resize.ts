/**
 * Vocabulary resize the NPR way (Multiverse's initializer, which NPR copied): when a tokenizer
 * gains tokens (the 8 NPR tags), the embedding table and an untied LM head grow to the new size
 * rounded up to a multiple of 64, and each new token's row is the mean of the rows of the
 * sub-tokens its text encodes to (for `</guideline>`: the ids of "/guideline"). Other new rows
 * (padding) are the mean of all old rows, HF's default for added embeddings without the noise.
 * The config's vocab_size becomes the number of rows, so the saved checkpoint opens in HF.
 * This file must not know tokenizers: the caller passes the sub-token ids in.
 */
import { Tensor } from "../tensor/index.ts";
import { UsageError, invariant } from "../util/index.ts";
import type { Qwen3Config } from "./config.ts";
import { Qwen3Model } from "./qwen3.ts";
import { EMBED, LM_HEAD, qwen3ParamSpecs } from "./weights.ts";

export interface NewTokenInit {
  /** Row (token id) to initialise. */
  id: number;
  /** Ids of the sub-tokens whose rows are averaged; all below the old vocab size. */
  sourceIds: readonly number[];
}

export interface ResizeOptions {
  /** Tokens the tokenizer has after the change (len(tokenizer)); rows = this rounded up. */
  tokenizerSize: number;
  /** Round the row count up to a multiple of this (NPR: 64). */
  padMultiple?: number;
  /** Rows to initialise from sub-token means (each id < new row count). */
  init: readonly NewTokenInit[];
}

/** The row count for `tokenizerSize` tokens padded to a multiple of `padMultiple`. */
export function paddedVocabSize(tokenizerSize: number, padMultiple = 64): number {
  return Math.ceil(tokenizerSize / padMultiple) * padMultiple;
}

/**
 * A new model whose embedding (and untied LM head) have `paddedVocabSize(tokenizerSize)` rows:
 * old rows kept (or cut, as HF's resize_token_embeddings does when the table was larger), rows
 * listed in `init` set to the mean of their sub-token rows, other new rows to the mean of all
 * old rows. Every other parameter is shared with `model`, not copied.
 */
export function resizeVocab(model: Qwen3Model, opts: ResizeOptions): Qwen3Model {
  const pad = opts.padMultiple ?? 64;
  if (!Number.isInteger(opts.tokenizerSize) || opts.tokenizerSize < 1 || !Number.isInteger(pad) || pad < 1) {
    throw new UsageError(`resizeVocab: tokenizer size ${opts.tokenizerSize} / pad multiple ${pad} must be positive integers`, {
      code: "bad_vocab",
      param: "tokenizerSize",
    });
  }
  const oldV = model.config.vocabSize;
  const newV = paddedVocabSize(opts.tokenizerSize, pad);
  for (const t of opts.init) {
    const bad = t.sourceIds.find((s) => !Number.isInteger(s) || s < 0 || s >= oldV);
    if (!Number.isInteger(t.id) || t.id < 0 || t.id >= newV || t.sourceIds.length === 0 || bad !== undefined) {
      throw new UsageError(
        `resizeVocab: token ${t.id} cannot be initialised from [${t.sourceIds.join(", ")}] (rows must be < ${newV}, sources non-empty and < ${oldV})`,
        { code: "bad_init", param: "init" },
      );
    }
  }
  const config: Qwen3Config = { ...model.config, vocabSize: newV };
  const params = new Map(model.params);
  params.set(EMBED, resizeTable(model.param(EMBED), newV, opts.init));
  if (!config.tieWordEmbeddings) params.set(LM_HEAD, resizeTable(model.param(LM_HEAD), newV, opts.init));
  invariant(params.size === qwen3ParamSpecs(config).length, "resizeVocab: parameter set changed size");
  return new Qwen3Model(config, params);
}

/** [oldV, C] -> [newV, C] per the rules of resizeVocab, in the table's own dtype and backend. */
function resizeTable(table: Tensor, newV: number, init: readonly NewTokenInit[]): Tensor {
  const [oldV, C] = table.shape as [number, number];
  const old = table.toArray() as Float32Array | Float64Array;
  const out = old instanceof Float64Array ? new Float64Array(newV * C) : new Float32Array(newV * C); // [newV, C]
  out.set(old.subarray(0, Math.min(oldV, newV) * C));
  if (newV > oldV) {
    // Mean over old rows, accumulated in float64 so 150k rows do not lose precision.
    const mean = new Float64Array(C);
    for (let r = 0; r < oldV; r++) for (let c = 0; c < C; c++) mean[c]! += old[r * C + c]!;
    for (let c = 0; c < C; c++) mean[c]! /= oldV;
    for (let r = oldV; r < newV; r++) for (let c = 0; c < C; c++) out[r * C + c] = mean[c]!;
  }
  for (const t of init) {
    const acc = new Float64Array(C);
    for (const s of t.sourceIds) for (let c = 0; c < C; c++) acc[c]! += old[s * C + c]!;
    for (let c = 0; c < C; c++) out[t.id * C + c] = acc[c]! / t.sourceIds.length;
  }
  // One bulk write (Tensor.fromArray copies element by element: slow for 150k x 2560 tables).
  const buf = table.backend.alloc(table.dtype, out.length);
  table.backend.write(buf, out);
  return new Tensor(table.backend, buf, [newV, C], { requiresGrad: table.requiresGrad });
}
