/**
 * Trajectories to training rows: a `{ prompt, response }` text example becomes token ids (the
 * prompt through the tokenizer's chat template as a user turn, the response followed by the
 * end-of-turn token), next-token targets on the response only, and the example's own layout:
 * causal for sequential text, the NPR layout of format/ for parallel text (steps do not see each
 * other, positions restart after each `</guideline>`).
 * Knows the tokenizer and the format's layout builder; nothing about tensors, models, batching
 * or files.
 */
import { canonicalizeResponse, trajectoryLayout as formatTrajectoryLayout } from "../format/index.ts";
import type { NprTokenizer } from "../tokenizer/index.ts";
import { ConfigError, invariant } from "../util/index.ts";
import type { Layout } from "../util/index.ts";

/** One training example as text: the user's prompt (instruction included) and the response. */
export interface TextExample {
  prompt: string;
  response: string;
}

/** sequential: causal attention over the serialized text; parallel: NPR's layout. */
export type LayoutMode = "parallel" | "sequential";

/** Target value of a token that is not trained on (prompt tokens, each example's last token). */
export const IGNORE = -100;

/** One example, tokenized and laid out on its own (keys 0..L); packing.ts offsets it in a row. */
export interface EncodedExample {
  /** [L] prompt ids then response ids (the end-of-turn id last). */
  readonly ids: Int32Array;
  /**
   * [L] targets[i] = ids[i + 1] where token i + 1 belongs to the response, IGNORE elsewhere, as
   * NPR's completion-only collator: the loss is on response tokens only, and the last token
   * predicts nothing (no leakage into whatever is packed after it).
   */
  readonly targets: Int32Array;
  /** Prompt tokens (chat header and assistant prefix included). */
  readonly promptLen: number;
  readonly layout: Layout;
  /** Targets that are not IGNORE: L - promptLen. */
  readonly numLossTokens: number;
}

export type EncodeResult = { ok: true; example: EncodedExample } | { ok: false; why: string };

/**
 * The one place the trainer turns a trajectory into its layout (format/'s trajectoryLayout, the
 * function the engine's oracle and `npr engine verify` use too). Parallel trajectories must be
 * complete NPR responses: a malformed one is rejected with the parser's reason, as NPR's SFT
 * drops samples whose mask construction fails. `tokenOf` gives the string the parser reads.
 */
export function trajectoryLayout(
  mode: LayoutMode,
  promptLen: number,
  ids: ArrayLike<number>,
  tokenOf: (id: number) => string,
): { ok: true; layout: Layout } | { ok: false; why: string } {
  const r = formatTrajectoryLayout({ mode, promptLen, ids, tokenOf });
  return r.ok ? { ok: true, layout: r.layout } : { ok: false, why: r.why };
}

export interface EncoderOptions {
  mode: LayoutMode;
  /**
   * Wrap the prompt in the tokenizer's chat template as one user turn with the assistant header
   * (default true: what `npr generate` and the engine's evaluation feed the model).
   */
  chat?: boolean;
}

/**
 * Encodes text examples with one tokenizer and layout mode. The response is canonicalized first
 * (format/npr-response.ts: no whitespace between `</guideline>`, steps and `<takeaway>`, none
 * between `<step>` and its number), in both modes, so a sequential baseline trains on exactly
 * the tokens its parallel counterpart does and only the layout differs.
 */
export class ExampleEncoder {
  readonly tokenizer: NprTokenizer;
  readonly mode: LayoutMode;
  readonly eosId: number;
  private readonly chat: boolean;
  /** id -> the string the NPR parser reads (tokenizer.parserTokens decodes one id at a time). */
  private readonly parserCache = new Map<number, string>();

  constructor(tokenizer: NprTokenizer, opts: EncoderOptions) {
    this.tokenizer = tokenizer;
    this.mode = opts.mode;
    this.chat = opts.chat ?? true;
    const eos = tokenizer.specialTokenId("eos_token") ?? tokenizer.tokenToId("<|im_end|>") ?? null;
    if (eos === null) {
      throw new ConfigError("the tokenizer names no eos_token and has no <|im_end|>", {
        code: "missing_eos",
        param: "tokenizer_config.json",
        hint: "a training tokenizer must end each response with an end-of-turn token (set eos_token)",
      });
    }
    this.eosId = eos;
    if (opts.mode === "parallel" && !tokenizer.hasTags) {
      // Without the tags as single tokens the parser would see plain text, and every parallel
      // trajectory would be laid out causally without a word: refuse instead.
      throw new ConfigError("parallel training needs the 8 NPR tags as special tokens of the tokenizer", {
        code: "missing_tags",
        param: "tokenizer",
        hint: "add them first (npr train sft does it when the base model lacks them), or train with --layout sequential",
      });
    }
  }

  /** Prompt ids: the chat template's user turn plus assistant header, or the raw prompt. */
  promptIds(prompt: string): number[] {
    if (!this.chat) return this.tokenizer.encode(prompt);
    return this.tokenizer.encodeChat([{ role: "user", content: prompt }], { addGenerationPrompt: true });
  }

  encode(ex: TextExample): EncodeResult {
    const prompt = this.promptIds(ex.prompt);
    const response = [...this.tokenizer.encode(canonicalizeResponse(ex.response)), this.eosId];
    const L = prompt.length + response.length;
    const ids = new Int32Array(L); // [L]
    ids.set(prompt, 0);
    ids.set(response, prompt.length);
    const P = prompt.length;
    if (P === 0) return { ok: false, why: "the prompt encodes to no tokens" };
    const laid = trajectoryLayout(this.mode, P, ids, (id) => this.parserToken(id));
    if (!laid.ok) return { ok: false, why: laid.why };
    const targets = new Int32Array(L).fill(IGNORE); // [L]
    for (let i = P - 1; i < L - 1; i++) targets[i] = ids[i + 1]!;
    invariant(laid.layout.numTokens === L, "trajectoryLayout: token count changed");
    return { ok: true, example: { ids, targets, promptLen: P, layout: laid.layout, numLossTokens: L - P } };
  }

  /** The string the NPR parser reads for `id` (tokenizer.parserTokens decodes one id at a time: cached). */
  private parserToken(id: number): string {
    let s = this.parserCache.get(id);
    if (s === undefined) {
      s = this.tokenizer.parserTokens([id])[0]!;
      this.parserCache.set(id, s);
    }
    return s;
  }
}

/** What encodeAll kept and why it dropped the rest. */
export interface EncodedSet {
  examples: EncodedExample[];
  /** Index in the input of every kept example (examples[k] came from input[kept[k]]). */
  kept: number[];
  /** Dropped inputs with the reason, in input order. */
  dropped: Array<{ index: number; why: string }>;
}

/**
 * Encodes every example; drops the malformed ones and those longer than `maxTokens` (one packed
 * micro-batch cannot hold them, and cutting a trajectory would train on a broken structure).
 */
export function encodeAll(encoder: ExampleEncoder, input: readonly TextExample[], maxTokens: number): EncodedSet {
  const out: EncodedSet = { examples: [], kept: [], dropped: [] };
  input.forEach((ex, index) => {
    const r = encoder.encode(ex);
    if (!r.ok) out.dropped.push({ index, why: r.why });
    else if (r.example.ids.length > maxTokens) {
      out.dropped.push({ index, why: `${r.example.ids.length} tokens, more than the micro-batch budget of ${maxTokens}` });
    } else {
      out.examples.push(r.example);
      out.kept.push(index);
    }
  });
  return out;
}
