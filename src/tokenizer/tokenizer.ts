/**
 * NprTokenizer: any Hugging Face `tokenizer.json` + `tokenizer_config.json` pair, run by
 * @huggingface/tokenizers, plus what NPR needs on top: the 8 tags as special tokens (added when
 * missing, ids appended after the last id, as HF's add_special_tokens does), tag ids and tag
 * locations in id sequences, the token strings the NPR parser and layout read, chat-template
 * rendering, and saving the pair back so HF transformers loads it. The real Qwen3 tokenizer and
 * npr's built-in byte-level one (byte-tokenizer.ts) go through this one class.
 * Knows files, ids and strings; nothing about models or tensors.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { NPR_TAGS, type NprTag } from "../format/index.ts";
import { CheckpointFormatError } from "../util/index.ts";
import { renderChatTemplate, type ChatMessage, type ChatOptions } from "./chat-template.ts";

type Json = Record<string, unknown>;

interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** A located tag in an id sequence. */
export interface TagHit {
  index: number;
  tag: NprTag;
}

export class NprTokenizer {
  /** The parsed tokenizer.json (kept as given, for saving). */
  readonly tokenizerJson: Json;
  /** The parsed tokenizer_config.json. */
  readonly tokenizerConfig: Json;
  /** Number of ids (max id + 1, added tokens included): HF's len(tokenizer). */
  readonly size: number;
  private readonly tok: Tokenizer;
  private readonly tagById = new Map<number, NprTag>();
  private readonly idByTag = new Map<NprTag, number>();
  private readonly specialIds = new Set<number>();

  constructor(tokenizerJson: Json, tokenizerConfig: Json, source = "tokenizer.json") {
    this.tokenizerJson = tokenizerJson;
    this.tokenizerConfig = tokenizerConfig;
    try {
      this.tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new CheckpointFormatError(`${source}: @huggingface/tokenizers cannot load it (${(err as Error).message})`, {
        code: "bad_tokenizer",
        param: source,
        hint: "give a Hugging Face tokenizer.json (BPE, WordPiece or Unigram) with its tokenizer_config.json",
        cause: err,
      });
    }
    let maxId = -1;
    for (const id of this.tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.size = maxId + 1;
    for (const [id, t] of this.tok.get_added_tokens_decoder()) {
      if (t.special) this.specialIds.add(id);
      if ((NPR_TAGS as readonly string[]).includes(t.content)) {
        this.tagById.set(id, t.content as NprTag);
        this.idByTag.set(t.content as NprTag, id);
      }
    }
  }

  /** Reads `dir/tokenizer.json` and `dir/tokenizer_config.json` (the latter may be absent). */
  static load(dir: string): NprTokenizer {
    const file = path.join(dir, "tokenizer.json");
    const json = readJson(file, true)!;
    const config = readJson(path.join(dir, "tokenizer_config.json"), false) ?? {};
    return new NprTokenizer(json, config, file);
  }

  /** Token ids of `text`; special-token strings in the text become their ids. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  /** Text of `ids`; special tokens (tags included) are kept unless `skipSpecialTokens`. */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ""; // the library refuses an empty list
    return this.tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  /** The vocabulary string of an id (byte-level form, e.g. "Ġthe"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  /** The id of a vocabulary or added-token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /** True when all 8 tags are single special tokens of this tokenizer. */
  get hasTags(): boolean {
    return this.idByTag.size === NPR_TAGS.length;
  }

  /** Id of a tag; throws when the tokenizer lacks it (see withTags). */
  tagId(tag: NprTag): number {
    const id = this.idByTag.get(tag);
    if (id === undefined) {
      throw new CheckpointFormatError(`the tokenizer has no special token ${tag}`, {
        code: "missing_tag",
        param: tag,
        hint: "add the 8 NPR tags first: npr tokenizer add-tags --model DIR --out DIR",
      });
    }
    return id;
  }

  /** The tag an id stands for, or null. */
  tagOf(id: number): NprTag | null {
    return this.tagById.get(id) ?? null;
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  /** Every tag in `ids`, in order. */
  findTags(ids: readonly number[]): TagHit[] {
    const out: TagHit[] = [];
    ids.forEach((id, index) => {
      const tag = this.tagById.get(id);
      if (tag) out.push({ index, tag });
    });
    return out;
  }

  /**
   * The strings the NPR parser and layout read: a tag id becomes its tag string, any other id its
   * decoded text (so "\n" is whitespace and "1:" a plan number). A non-tag id whose text happens
   * to spell a tag gets a zero-width space appended, so it can never be taken for a tag.
   */
  parserTokens(ids: readonly number[]): string[] {
    return ids.map((id) => {
      const tag = this.tagById.get(id);
      if (tag) return tag;
      const text = this.decode([id]);
      return (NPR_TAGS as readonly string[]).includes(text) ? `${text}\u200b` : text;
    });
  }

  /** Id of a special token named in tokenizer_config.json ("eos_token", "pad_token", ...), or null. */
  specialTokenId(key: string): number | null {
    const v = this.tokenizerConfig[key];
    const content = typeof v === "string" ? v : v && typeof v === "object" ? (v as { content?: unknown }).content : undefined;
    if (typeof content !== "string") return null;
    return this.tok.token_to_id(content) ?? null;
  }

  /**
   * A tokenizer with the 8 tags as special tokens: this one when it already has them, else a new
   * one whose tags get ids size, size+1, ... in NPR's order (151669..151676 on Qwen3). A tag string
   * that is already a (non-special) token is an error: its id would be ambiguous.
   */
  withTags(): NprTokenizer {
    if (this.hasTags) return this;
    if (this.idByTag.size > 0) {
      throw new CheckpointFormatError(`the tokenizer has only some of the NPR tags (${[...this.idByTag.keys()].join(" ")})`, {
        code: "partial_tags",
        param: "tokenizer.json",
        hint: "start from the base model's tokenizer, which has none of them",
      });
    }
    const json = structuredClone(this.tokenizerJson);
    const config = structuredClone(this.tokenizerConfig);
    const added = ((json["added_tokens"] as AddedTokenJson[] | undefined) ?? []).slice();
    const decoder = { ...((config["added_tokens_decoder"] as Json | undefined) ?? {}) };
    let id = this.size;
    for (const tag of NPR_TAGS) {
      if (this.tok.token_to_id(tag) !== undefined) {
        throw new CheckpointFormatError(`"${tag}" is already a token of this tokenizer`, { code: "tag_exists", param: tag });
      }
      const entry: AddedTokenJson = {
        id,
        content: tag,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      };
      added.push(entry);
      const { id: _id, ...rest } = entry;
      decoder[String(id)] = rest;
      id++;
    }
    json["added_tokens"] = added;
    config["added_tokens_decoder"] = decoder;
    // HF lists extra special tokens here; skip_special_tokens and the tokenizer's repr use it.
    const extra = Array.isArray(config["additional_special_tokens"]) ? (config["additional_special_tokens"] as unknown[]) : [];
    config["additional_special_tokens"] = [...extra, ...NPR_TAGS];
    return new NprTokenizer(json, config);
  }

  /** Renders the chat template of tokenizer_config.json (enable_thinking=false by default). */
  renderChat(messages: readonly ChatMessage[], opts: ChatOptions = {}): string {
    const template = this.tokenizerConfig["chat_template"];
    if (typeof template !== "string") {
      throw new CheckpointFormatError("tokenizer_config.json has no chat_template string", {
        code: "missing_chat_template",
        param: "chat_template",
        hint: "use a tokenizer_config.json that carries the model's chat template",
      });
    }
    const special = (k: string) => {
      const v = this.tokenizerConfig[k];
      return typeof v === "string" ? v : v && typeof v === "object" ? ((v as { content?: string }).content ?? "") : "";
    };
    return renderChatTemplate(template, messages, opts, {
      bos_token: special("bos_token"),
      eos_token: special("eos_token"),
      pad_token: special("pad_token"),
    });
  }

  /** Ids of the rendered chat (the template writes its special tokens as text). */
  encodeChat(messages: readonly ChatMessage[], opts: ChatOptions = {}): number[] {
    return this.encode(this.renderChat(messages, opts));
  }

  /** Writes tokenizer.json and tokenizer_config.json into `dir` (created if needed). */
  save(dir: string): string[] {
    fs.mkdirSync(dir, { recursive: true });
    const files = [path.join(dir, "tokenizer.json"), path.join(dir, "tokenizer_config.json")];
    fs.writeFileSync(files[0]!, JSON.stringify(this.tokenizerJson, null, 2) + "\n");
    fs.writeFileSync(files[1]!, JSON.stringify(this.tokenizerConfig, null, 2) + "\n");
    return files;
  }
}

function readJson(file: string, required: boolean): Json | null {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new CheckpointFormatError(`${file}: cannot read the tokenizer file`, {
      code: "missing_file",
      param: file,
      hint: "a Hugging Face model folder holds tokenizer.json and tokenizer_config.json",
      cause: err,
    });
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Json;
  } catch (err) {
    throw new CheckpointFormatError(`${file}: not a JSON object (${(err as Error).message})`, {
      code: "bad_json",
      param: file,
      cause: err,
    });
  }
}
