/**
 * `npr tokenizer add-tags|init-bytes|init-task` and `npr tokenize`: give a Hugging Face checkpoint
 * the 8 NPR tags (tokenizer + resized embedding/LM head, saved so transformers loads both), write
 * npr's byte-level tokenizer or its task tokenizer, and print token ids of text. Composition only:
 * the tokenizers live in src/tokenizer, the resize in src/model/resize.ts.
 */
import type { Command } from "commander";
import { NPR_TAGS, tagInitText } from "../format/index.ts";
import { loadQwen3, resizeVocab, saveQwen3 } from "../model/index.ts";
import { CpuBackend } from "../tensor/backend/cpu/index.ts";
import { NprTokenizer, byteTokenizer, taskTokenizer } from "../tokenizer/index.ts";
import { TASK_VOCABULARY } from "../tasks/index.ts";
import { UsageError } from "../util/index.ts";
import { checkInputDir, checkOutputDir, checkStdin, parseChoice } from "./args.ts";
import { writeOut } from "./io.ts";

const STORE_DTYPES = ["bf16", "f16", "f32"] as const;

/** A tokenizer folder, or "bytes" for npr's built-in byte tokenizer. */
function openTokenizer(spec: string, param = "--tokenizer"): NprTokenizer {
  return spec === "bytes" ? byteTokenizer() : NprTokenizer.load(checkInputDir(spec, param, "tokenizer folder"));
}

/**
 * Adds the tags to the tokenizer of `modelDir`, resizes the model the NPR way and writes both to
 * `outDir`. Returns the tag ids and the new vocab size.
 */
export function addTagsToCheckpoint(
  modelDir: string,
  outDir: string,
  opts: { dtype?: "bf16" | "f16" | "f32"; overwrite?: boolean; tokenizer?: string } = {},
): { tagIds: number[]; vocabSize: number } {
  const base = opts.tokenizer === undefined ? openTokenizer(modelDir, "--model") : openTokenizer(opts.tokenizer);
  if (base.hasTags) {
    throw new UsageError(`${modelDir}: the tokenizer already has the NPR tags`, {
      code: "has_tags",
      param: "--model",
      hint: "the checkpoint needs no change",
    });
  }
  const tagged = base.withTags();
  // Sub-tokens come from the tokenizer *before* the tags existed: "guideline", "/guideline", ...
  const init = NPR_TAGS.map((tag) => ({ id: tagged.tagId(tag), sourceIds: base.encode(tagInitText(tag)) }));
  const model = resizeVocab(loadQwen3(modelDir, { backend: new CpuBackend(), requiresGrad: false }), {
    tokenizerSize: tagged.size,
    padMultiple: 64,
    init,
  });
  saveQwen3(model, outDir, { dtype: opts.dtype ?? "bf16", overwrite: opts.overwrite });
  tagged.save(outDir);
  return { tagIds: init.map((t) => t.id), vocabSize: model.config.vocabSize };
}

export function registerTokenizerCommands(program: Command): void {
  const tok = program.command("tokenizer").description("tokenizers: add the NPR tags to a checkpoint, write the byte tokenizer");

  tok
    .command("add-tags")
    .description("add the 8 NPR tags as special tokens and resize embedding + LM head (new rows = mean of the tag name's sub-tokens)")
    .requiredOption("--model <dir>", "Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)")
    .requiredOption("--out <dir>", "folder to write the extended checkpoint to")
    .option("--tokenizer <dir|bytes>", "tokenizer folder if not the model's, or 'bytes' for npr's byte tokenizer")
    .option("--dtype <bf16|f16|f32>", "storage dtype of the written weights", "bf16")
    .option("--overwrite", "replace an existing non-empty --out folder")
    .action((o: { model: string; out: string; tokenizer?: string; dtype: string; overwrite?: boolean }) => {
      const dtype = parseChoice(o.dtype, "--dtype", STORE_DTYPES);
      checkInputDir(o.model, "--model", "checkpoint folder");
      checkOutputDir(o.out, "--out", { mustBeNew: !o.overwrite, overwriteFlag: "--overwrite" });
      const r = addTagsToCheckpoint(o.model, o.out, { dtype, overwrite: o.overwrite, tokenizer: o.tokenizer });
      writeOut(
        `${JSON.stringify({ out: o.out, tagIds: Object.fromEntries(NPR_TAGS.map((t, i) => [t, r.tagIds[i]])), vocabSize: r.vocabSize })}\n`,
      );
    });

  tok
    .command("init-bytes")
    .description("write npr's byte-level tokenizer (256 bytes + 3 chat tokens + 8 tags) as tokenizer.json + tokenizer_config.json")
    .requiredOption("--out <dir>", "folder to write into")
    .action((o: { out: string }) => {
      checkOutputDir(o.out, "--out");
      for (const f of byteTokenizer().save(o.out)) writeOut(`${f}\n`);
    });

  tok
    .command("init-task")
    .description(
      "write npr's compact task tokenizer (a token per task word, per number 0-999 and per punctuation mark, 256 byte fallbacks, 3 chat tokens, 8 tags)",
    )
    .requiredOption("--out <dir>", "folder to write into")
    .action((o: { out: string }) => {
      checkOutputDir(o.out, "--out");
      for (const f of taskTokenizer(TASK_VOCABULARY).save(o.out)) writeOut(`${f}\n`);
    });

  program
    .command("tokenize")
    .description('stdin text -> stdout {"ids": [...], "tokens": [...]} (tags as single tokens when the tokenizer has them)')
    .requiredOption("--tokenizer <dir|bytes>", "tokenizer folder, or 'bytes'")
    .action(async (o: { tokenizer: string }) => {
      const t = openTokenizer(o.tokenizer);
      checkStdin("npr tokenize");
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      const ids = t.encode(Buffer.concat(chunks).toString("utf8"));
      writeOut(`${JSON.stringify({ ids, tokens: t.parserTokens(ids) })}\n`);
    });
}
