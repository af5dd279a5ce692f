/**
 * npr's built-in small tokenizer, for the synthetic tasks and random checkpoints: a byte-level
 * vocabulary (the 256 bytes in GPT-2's byte-to-unicode spelling, no merges) plus <|endoftext|>,
 * <|im_start|>, <|im_end|> and the 8 NPR tags as special tokens, and a ChatML chat template. It is
 * generated here as an ordinary tokenizer.json + tokenizer_config.json pair, so it runs through
 * the same NprTokenizer code path as Qwen3's and HF transformers loads it
 * (PreTrainedTokenizerFast). 267 ids; a model for it has vocab_size 320 (padded to 64).
 * Knows tokenizer files only.
 */
import { NPR_TAGS } from "../format/index.ts";
import { NprTokenizer } from "./tokenizer.ts";

export const BYTE_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

/** ChatML, as Qwen's templates write it (no system prompt unless one is given). */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}" +
  "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/**
 * GPT-2's byte-to-unicode table: printable bytes map to themselves, the others to U+0100 onwards,
 * so every byte is one visible character (the spelling ByteLevel pre-tokenizers and decoders use).
 */
export function byteToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  }
  return out;
}

/** The tokenizer.json and tokenizer_config.json objects of the byte tokenizer. */
export function byteTokenizerFiles(): { tokenizerJson: Record<string, unknown>; tokenizerConfig: Record<string, unknown> } {
  const chars = byteToUnicode();
  const vocab: Record<string, number> = {};
  chars.forEach((c, b) => (vocab[c] = b));
  const specials = [...BYTE_SPECIAL_TOKENS, ...NPR_TAGS];
  const added = specials.map((content, i) => ({
    id: 256 + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false };
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
  return { tokenizerJson, tokenizerConfig: chatmlTokenizerConfig(added) };
}

/**
 * The tokenizer_config.json of npr's own tokenizers (byte and task): transformers'
 * PreTrainedTokenizerFast with the chat tokens and the 8 NPR tags as added special tokens, eos
 * `<|im_end|>`, pad `<|endoftext|>`, no bos, and the ChatML template; `extra` keys are appended.
 */
export function chatmlTokenizerConfig(
  added: ReadonlyArray<{ id: number } & Record<string, unknown>>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const decoder: Record<string, unknown> = {};
  for (const { id, ...rest } of added) decoder[String(id)] = rest;
  return {
    tokenizer_class: "PreTrainedTokenizerFast",
    added_tokens_decoder: decoder,
    additional_special_tokens: [...NPR_TAGS],
    bos_token: null,
    eos_token: "<|im_end|>",
    pad_token: "<|endoftext|>",
    unk_token: null,
    add_bos_token: false,
    clean_up_tokenization_spaces: false,
    split_special_tokens: false,
    model_max_length: 32768,
    chat_template: CHATML_TEMPLATE,
    ...extra,
  };
}

/** The byte tokenizer, ready to use. */
export function byteTokenizer(): NprTokenizer {
  const { tokenizerJson, tokenizerConfig } = byteTokenizerFiles();
  return new NprTokenizer(tokenizerJson, tokenizerConfig, "<npr byte tokenizer>");
}
