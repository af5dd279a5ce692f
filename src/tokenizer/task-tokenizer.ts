/**
 * npr's compact tokenizer for the synthetic-task corpus: one token per word, per number 0..max and
 * per punctuation mark (words and marks also with a leading space; a number never takes its
 * space, so `51` is the same token in a prompt's list and at the start of a trace line), the 256 byte symbols as a fallback so any
 * text still round-trips, and the chat tokens and 8 NPR tags as special tokens. Written as an
 * ordinary Hugging Face tokenizer.json in Qwen2's layout (Split + ByteLevel pre-tokenizer, BPE
 * model, ByteLevel decoder) with `ignore_merges` and no merges: a pre-token found in the
 * vocabulary is one token, anything else falls apart into bytes. So it loads through NprTokenizer
 * like any HF tokenizer, and transformers' PreTrainedTokenizerFast reads it unchanged.
 * Knows tokenizer files only; the word list comes from the caller (tasks' TASK_VOCABULARY).
 */
import { NPR_TAGS } from "../format/index.ts";
import { BYTE_SPECIAL_TOKENS, byteToUnicode, chatmlTokenizerConfig } from "./byte-tokenizer.ts";
import { NprTokenizer } from "./tokenizer.ts";

export interface TaskVocabulary {
  /** Words (runs of ASCII letters) that get a token each, with and without a leading space. */
  words: readonly string[];
  /**
   * Numbers 0..maxNumber get a token each, never with a leading space: a space before a number is
   * a token of its own, so a number the model must copy from the prompt into a trace line is the
   * same id in both places (with " 51" and "51" as two ids, a tiny model has to learn the pairing
   * of 1,000 numbers before it can copy any of them).
   */
  maxNumber: number;
}

/**
 * The pre-tokenizer's pieces: a word or one other non-space character, each with an optional
 * leading space, a number (without its space), or one whitespace character. Kept to plain classes so the oniguruma
 * (Rust) and JavaScript readings of the pattern agree.
 */
export const TASK_SPLIT_PATTERN = " ?[A-Za-z]+|[0-9]+| ?[^ \\t\\n\\r\\fA-Za-z0-9]|[ \\t\\n\\r\\f]";

/** Largest maxNumber accepted: the vocabulary stays small enough for a tiny model's embedding. */
export const TASK_MAX_NUMBER = 9999;

/** The tokenizer.json and tokenizer_config.json objects of the task tokenizer. */
export function taskTokenizerFiles(vocab: TaskVocabulary): {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
} {
  if (!Number.isInteger(vocab.maxNumber) || vocab.maxNumber < 0 || vocab.maxNumber > TASK_MAX_NUMBER) {
    throw new RangeError(`taskTokenizerFiles: maxNumber must be an integer in 0..${TASK_MAX_NUMBER}, got ${vocab.maxNumber}`);
  }
  for (const w of vocab.words) if (!/^[A-Za-z]+$/.test(w)) throw new RangeError(`taskTokenizerFiles: "${w}" is not a run of ASCII letters`);
  const chars = byteToUnicode();
  // Byte-level spelling of a piece, as the ByteLevel pre-tokenizer writes it.
  const spell = (s: string) => Array.from(new TextEncoder().encode(s), (b) => chars[b]!).join("");
  const vocabMap: Record<string, number> = {};
  let size = 0;
  const add = (key: string) => {
    if (!(key in vocabMap)) vocabMap[key] = size++;
  };
  // Ids 0..255 are the bytes (the fallback), in byte order, as in the byte tokenizer.
  chars.forEach(add);
  for (let c = 33; c < 127; c++) {
    const ch = String.fromCharCode(c);
    if (!/[A-Za-z0-9]/.test(ch)) add(spell(` ${ch}`));
  }
  for (let n = 0; n <= vocab.maxNumber; n++) add(spell(String(n)));
  for (const w of [...new Set(vocab.words)].sort()) {
    add(spell(w));
    add(spell(` ${w}`));
  }
  const base = size;
  const specials = [...BYTE_SPECIAL_TOKENS, ...NPR_TAGS];
  const added = specials.map((content, i) => ({
    id: base + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const tokenizerJson = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: TASK_SPLIT_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      // A whole pre-token found in the vocabulary is taken as it is; there are no merges to apply.
      ignore_merges: true,
      vocab: vocabMap,
      merges: [],
    },
  };
  // Where this file came from, for people reading a checkpoint folder.
  const tokenizerConfig = chatmlTokenizerConfig(added, {
    npr_tokenizer: { kind: "task", words: vocab.words.length, max_number: vocab.maxNumber },
  });
  return { tokenizerJson, tokenizerConfig };
}

/** The task tokenizer for a vocabulary (the trainer passes tasks' TASK_VOCABULARY). */
export function taskTokenizer(vocab: TaskVocabulary): NprTokenizer {
  const { tokenizerJson, tokenizerConfig } = taskTokenizerFiles(vocab);
  return new NprTokenizer(tokenizerJson, tokenizerConfig, "<npr task tokenizer>");
}
