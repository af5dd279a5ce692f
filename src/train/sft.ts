/**
 * Stage 2's supervised fine-tuning and its baseline: `npr train sft --init DIR --data FILE.jsonl
 * --layout parallel|sequential`. `parallel` is NPR's parallel SFT (the NPR layout: steps blind to
 * each other, positions restarting), `sequential` the SR-Beta baseline on the same tokens with
 * the causal layout. When the base tokenizer lacks the 8 tags they are added in both modes, and
 * the model's new rows are the mean of the tag names' sub-token rows (model/resize.ts, NPR's
 * init), so the two runs differ in the layout alone.
 * Knows the data file's form, the init folder and the stage's setup; the loop is trainer.ts's.
 */
import { NPR_TAGS, tagInitText } from "../format/index.ts";
import { Qwen3Model, loadQwen3, resizeVocab } from "../model/index.ts";
import type { Backend } from "../tensor/index.ts";
import { readJsonl } from "../tasks/index.ts";
import { NprTokenizer } from "../tokenizer/index.ts";
import { DataFormatError } from "../util/index.ts";
import { encodeAll, ExampleEncoder } from "./examples.ts";
import type { LayoutMode, TextExample } from "./examples.ts";
import { evalProblems } from "./corpus.ts";
import { evaluateStage } from "./evaluate.ts";
import type { EvalProblem } from "./evaluate.ts";
import type { Progress } from "./progress.ts";
import type { Recipe } from "./recipe.ts";
import type { RunFolder } from "./run-folder.ts";
import { runSupervised } from "./trainer.ts";
import type { SupervisedResult } from "./trainer.ts";

/**
 * Trajectories from a JSONL file: one object per line with string fields `prompt` (the user
 * message, instruction included) and `response` (the trajectory); other fields are ignored.
 * A line without them is a DataFormatError naming file and line.
 */
export function readTrajectories(file: string): TextExample[] {
  return readJsonl(file).map((rec) => {
    const { prompt, response } = rec.value;
    if (typeof prompt !== "string" || typeof response !== "string" || response.length === 0) {
      throw new DataFormatError(`${file}:${rec.line}: a trajectory needs string fields "prompt" and "response" (non-empty)`, {
        code: "bad_trajectory",
        param: `${file}:${rec.line}`,
        hint: 'each line: {"prompt": "...", "response": "<guideline>...</takeaway> ... \\\\boxed{...}"}',
      });
    }
    return { prompt, response };
  });
}

/** The base tokenizer, with the 8 tags added when it lacks them. */
export function sftTokenizer(initDir: string): { base: NprTokenizer; tokenizer: NprTokenizer; addedTags: boolean } {
  const base = NprTokenizer.load(initDir);
  const tokenizer = base.withTags();
  return { base, tokenizer, addedTags: tokenizer !== base };
}

/**
 * The --init model on `backend`, its vocabulary grown to the tokenizer's (padded to 64) when the
 * tags were added: each tag's row is the mean of the rows of its name's sub-tokens under the base
 * tokenizer ("guideline", "/guideline", ...), as NPR's and Multiverse's initializer does.
 */
export function loadSftModel(
  initDir: string,
  backend: Backend,
  base: NprTokenizer,
  tokenizer: NprTokenizer,
  computeDtype: "bf16" | undefined,
): Qwen3Model {
  let model = loadQwen3(initDir, { backend, dtype: "f32" });
  if (tokenizer !== base || model.config.vocabSize < tokenizer.size) {
    const init = tokenizer === base ? [] : NPR_TAGS.map((tag) => ({ id: tokenizer.tagId(tag), sourceIds: base.encode(tagInitText(tag)) }));
    model = resizeVocab(model, { tokenizerSize: tokenizer.size, init });
  }
  if (computeDtype) model = new Qwen3Model(model.config, model.params, { computeDtype });
  return model;
}

export interface SftInputs {
  recipe: Recipe;
  initDir: string;
  dataFile: string;
  layout: LayoutMode;
  backend: Backend;
  run: RunFolder;
  resume: boolean;
  progress: Progress;
  /**
   * Held-out problems with their verifiers, answered greedily at each evaluation, decoded in the
   * run's layout mode (parallel: the engine forks). Default: the first sft.eval.problems of the
   * recipe's test splits (corpus.ts evalProblems).
   */
  problems?: readonly EvalProblem[];
}

export interface SftResult extends SupervisedResult {
  trainExamples: number;
  heldOutExamples: number;
  dropped: Array<{ index: number; why: string }>;
  addedTags: boolean;
}

/** Runs (or resumes) the SFT stage of `recipe` in `run`. */
export function runSft(inp: SftInputs): SftResult {
  const hp = inp.recipe.sft!;
  const { base, tokenizer, addedTags } = sftTokenizer(inp.initDir);
  const encoder = new ExampleEncoder(tokenizer, { mode: inp.layout });
  const all = readTrajectories(inp.dataFile);
  const enc = encodeAll(encoder, all, hp.tokens_per_micro_batch);
  for (const d of enc.dropped.slice(0, 5)) inp.progress.log(`dropped ${inp.dataFile} example ${d.index + 1}: ${d.why}`);
  if (enc.dropped.length > 5) inp.progress.log(`... ${enc.dropped.length - 5} more dropped`);
  // The last `held_out` usable examples of the file are kept aside for the held-out loss.
  const heldCount = Math.min(hp.held_out, Math.max(0, enc.examples.length - 1));
  const train = enc.examples.slice(0, enc.examples.length - heldCount);
  const heldOut = enc.examples.slice(enc.examples.length - heldCount);
  if (train.length === 0) {
    throw new DataFormatError(
      `${inp.dataFile}: no usable trajectory (${enc.dropped.length} dropped${enc.dropped[0] ? `, first: ${enc.dropped[0].why}` : ""})`,
      {
        code: "no_data",
        param: "--data",
        hint:
          inp.layout === "parallel"
            ? "parallel SFT needs complete NPR responses; check them with npr format check"
            : "check the file's prompt/response fields",
      },
    );
  }
  if (addedTags)
    inp.progress.log(
      `the base tokenizer lacks the NPR tags: added as ids ${tokenizer.tagId("<guideline>")}..${tokenizer.tagId("</takeaway>")}, rows initialized from their names' sub-tokens`,
    );
  const computeDtype = inp.recipe.dtype === "bf16" ? ("bf16" as const) : undefined;
  const evalOpts = { maxNewTokens: hp.eval.max_new_tokens, samples: hp.eval.samples, mode: inp.layout, budget: hp.tokens_per_micro_batch };
  const problems = (inp.problems ?? evalProblems(inp.recipe, hp.eval.problems)).slice(0, hp.eval.problems);
  const res = runSupervised({
    stage: "sft",
    hp,
    run: inp.run,
    backend: inp.backend,
    dtype: "f32",
    modelOptions: computeDtype ? { computeDtype } : {},
    tokenizer,
    train,
    seed: inp.recipe.seed,
    initModel: () => loadSftModel(inp.initDir, inp.backend, base, tokenizer, computeDtype),
    evaluate: heldOut.length > 0 || problems.length > 0 ? (model) => evaluateStage(model, encoder, heldOut, problems, evalOpts) : undefined,
    resume: inp.resume,
    progress: inp.progress,
  });
  return { ...res, trainExamples: train.length, heldOutExamples: heldOut.length, dropped: enc.dropped, addedTags };
}
