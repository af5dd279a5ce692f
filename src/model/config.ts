/**
 * Qwen3Config: the hyperparameters of a Hugging Face `Qwen3ForCausalLM`, parsed from its
 * `config.json` (transformers 4.x and 5.x spellings) and written back in a form transformers loads.
 * Parsing is the boundary: every key that changes the math is validated here, so the model can
 * trust the config. Keys that do not change the math are accepted and reported back (`ignored`);
 * keys this file has never heard of are reported as `unknown` for the CLI to warn about.
 * This file knows nothing about tensors, weights or files on disk. docs/model-config.md lists the keys.
 */
import { ConfigError } from "../util/index.ts";

export interface Qwen3Config {
  /** V: vocabulary size (rows of embed_tokens and lm_head). */
  readonly vocabSize: number;
  /** C: residual stream width. */
  readonly hiddenSize: number;
  /** I: MLP inner width (gate/up output, down input). */
  readonly intermediateSize: number;
  /** L: number of decoder layers. */
  readonly numHiddenLayers: number;
  /** H: query heads. */
  readonly numAttentionHeads: number;
  /** Hkv: key/value heads; H % Hkv == 0 (grouped-query attention). */
  readonly numKeyValueHeads: number;
  /** D: per-head width; independent of C / H in Qwen3 (e.g. Qwen3-0.6B: C=1024, H=16, D=128). */
  readonly headDim: number;
  /** Epsilon of every RMSNorm (layer norms, q/k norms, final norm). */
  readonly rmsNormEps: number;
  /** RoPE base: inv_freq[j] = ropeTheta^(-2j/D). */
  readonly ropeTheta: number;
  /** lm_head shares embed_tokens' matrix; the checkpoint then has no lm_head.weight. */
  readonly tieWordEmbeddings: boolean;
  /** q/k/v/o projections carry biases. */
  readonly attentionBias: boolean;

  // Carried through for init and for writing config.json back; they do not change the forward.
  /** Std of the normal init of weight matrices (HF default 0.02). */
  readonly initializerRange: number;
  readonly maxPositionEmbeddings: number;
  readonly bosTokenId: number | null;
  /** HF allows one id or a list. */
  readonly eosTokenId: number | readonly number[] | null;
  readonly padTokenId: number | null;
  /** torch_dtype of the checkpoint as stored ("bfloat16", "float32", ...), if stated. */
  readonly torchDtype: string | null;
}

export interface ParsedQwen3Config {
  config: Qwen3Config;
  /** Keys present in the file that were accepted without changing the math. */
  ignored: string[];
  /** Keys present in the file that npr does not know (the CLI warns about them). */
  unknown: string[];
}

/** Keys every Qwen3 config.json must state (besides the RoPE base, which has two spellings). */
export const REQUIRED_KEYS = [
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "rms_norm_eps",
] as const;

/**
 * Keys accepted and ignored: they describe training, serving, tokenizer ids or bookkeeping,
 * never the forward pass. (sliding_window and max_window_layers only matter when
 * use_sliding_window is true, which is rejected.)
 */
export const IGNORED_KEYS = [
  "architectures",
  "model_type",
  "torch_dtype",
  "dtype",
  "transformers_version",
  "bos_token_id",
  "eos_token_id",
  "pad_token_id",
  "max_position_embeddings",
  "initializer_range",
  "use_cache",
  "attention_dropout",
  "sliding_window",
  "max_window_layers",
  "_name_or_path",
  "_attn_implementation_autoset",
  "output_attentions",
  "output_hidden_states",
  "return_dict",
] as const;

/** Optional keys that change (or could change) the math, with the HF Qwen3 defaults. */
const OPTIONAL_MATH_KEYS = [
  "rope_theta",
  "rope_parameters",
  "rope_scaling",
  "tie_word_embeddings",
  "attention_bias",
  "hidden_act",
  "use_sliding_window",
  "layer_types",
] as const;

/**
 * Largest value accepted per size key: far above any released Qwen3-style model (Qwen3: V =
 * 151,936, C <= 5,120, I <= 25,600, L <= 64, H <= 64, D = 128, context 40,960; the widest open
 * vocabularies are ~262k), yet low enough that products of them stay exact integers and a typo
 * (`vocab_size: 1e12`) is refused here, with the key named, instead of failing an allocation.
 */
export const CONFIG_LIMITS = {
  vocab_size: 1 << 22,
  hidden_size: 1 << 16,
  intermediate_size: 1 << 18,
  num_hidden_layers: 1024,
  num_attention_heads: 1024,
  num_key_value_heads: 1024,
  head_dim: 1024,
  max_position_embeddings: 1 << 24,
} as const;

/** HF's Qwen3 defaults for the carried-through keys, used when the file omits them. */
const DEFAULT_INITIALIZER_RANGE = 0.02;
const DEFAULT_MAX_POSITION_EMBEDDINGS = 40960;

type Json = Record<string, unknown>;

/**
 * Validates a parsed config.json. `source` names the file in error messages.
 * Throws ConfigError ("missing_key" or "bad_value", param = the key) on anything unusable.
 */
export function parseQwen3Config(json: unknown, source = "config.json"): ParsedQwen3Config {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new ConfigError(`${source}: expected a JSON object, got ${describe(json)}`, {
      code: "bad_value",
      param: source,
    });
  }
  const obj = json as Json;
  const p = new Reader(obj, source);

  // Presence first, in a fixed order, so a file missing several keys always names the same one
  // first; then types and values.
  for (const key of REQUIRED_KEYS) p.require(key);
  const vocabSize = p.positiveInt("vocab_size");
  const hiddenSize = p.positiveInt("hidden_size");
  const intermediateSize = p.positiveInt("intermediate_size");
  const numHiddenLayers = p.positiveInt("num_hidden_layers");
  const numAttentionHeads = p.positiveInt("num_attention_heads");
  const numKeyValueHeads = p.positiveInt("num_key_value_heads");
  const headDim = p.positiveInt("head_dim");
  const rmsNormEps = p.positiveNumber("rms_norm_eps");
  if (rmsNormEps >= 1) p.bad("rms_norm_eps", "a positive number below 1");

  if (numAttentionHeads % numKeyValueHeads !== 0) {
    throw new ConfigError(
      `${source}: num_attention_heads (${numAttentionHeads}) must be a multiple of num_key_value_heads (${numKeyValueHeads})`,
      {
        code: "bad_value",
        param: "num_key_value_heads",
      },
    );
  }
  // Rotate-half RoPE pairs element j with j + D/2.
  if (headDim % 2 !== 0) {
    throw new ConfigError(`${source}: head_dim must be even for rotary embeddings, got ${headDim}`, {
      code: "bad_value",
      param: "head_dim",
    });
  }

  const ropeTheta = parseRope(obj, p, source);

  // The remaining math keys either select a variant npr implements (tied head, q/k/v/o biases)
  // or must hold the one value Qwen3 uses; any other value would silently change the function.
  const tieWordEmbeddings = p.optionalBool("tie_word_embeddings", false);
  const attentionBias = p.optionalBool("attention_bias", false);
  if ("hidden_act" in obj && obj["hidden_act"] !== "silu") {
    p.bad("hidden_act", `"silu" (the only activation Qwen3 uses)`);
  }
  if ("use_sliding_window" in obj && obj["use_sliding_window"] !== false && obj["use_sliding_window"] !== null) {
    p.bad("use_sliding_window", "false (sliding-window attention is not supported)");
  }
  if ("layer_types" in obj && obj["layer_types"] !== null) {
    const lt = obj["layer_types"];
    if (!Array.isArray(lt) || lt.length !== numHiddenLayers || lt.some((t) => t !== "full_attention")) {
      p.bad("layer_types", `null or a list of ${numHiddenLayers} "full_attention" entries`);
    }
  }
  if ("model_type" in obj && obj["model_type"] !== "qwen3") p.bad("model_type", `"qwen3"`);

  const config: Qwen3Config = Object.freeze({
    vocabSize,
    hiddenSize,
    intermediateSize,
    numHiddenLayers,
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    rmsNormEps,
    ropeTheta,
    tieWordEmbeddings,
    attentionBias,
    initializerRange: p.optionalPositiveNumber("initializer_range", DEFAULT_INITIALIZER_RANGE),
    maxPositionEmbeddings: p.optionalPositiveInt("max_position_embeddings", DEFAULT_MAX_POSITION_EMBEDDINGS),
    bosTokenId: p.optionalTokenId("bos_token_id"),
    eosTokenId: p.optionalEosId("eos_token_id"),
    padTokenId: p.optionalTokenId("pad_token_id"),
    torchDtype: p.optionalDtype(),
  });

  // Unknown keys are reported, not rejected: each transformers release adds bookkeeping keys,
  // and refusing them would refuse good checkpoints. The CLI prints them as a warning.
  const known = new Set<string>([...REQUIRED_KEYS, ...OPTIONAL_MATH_KEYS]);
  const ignoredSet = new Set<string>(IGNORED_KEYS);
  const ignored: string[] = [];
  const unknown: string[] = [];
  for (const key of Object.keys(obj)) {
    if (known.has(key)) continue;
    if (ignoredSet.has(key)) ignored.push(key);
    else unknown.push(key);
  }
  return { config, ignored, unknown };
}

/**
 * The RoPE base: `rope_theta` (transformers 4.x) or `rope_parameters.rope_theta` (5.x). Only the
 * "default" rope type is Qwen3's; scaled variants (yarn, linear, ...) would change the math.
 */
function parseRope(obj: Json, p: Reader, source: string): number {
  // transformers 4.4x writes rope_scaling {"type": ...}, 4.5x {"rope_type": ...}; both may say
  // "default", which is plain RoPE.
  const scaling = obj["rope_scaling"];
  if (scaling !== undefined && scaling !== null) {
    const type = isObject(scaling) ? (scaling["rope_type"] ?? scaling["type"]) : undefined;
    if (type !== "default") p.bad("rope_scaling", `null or a "default" rope type (scaled RoPE is not supported)`);
  }
  let fromParams: number | undefined;
  const params = obj["rope_parameters"];
  if (params !== undefined && params !== null) {
    if (!isObject(params)) p.bad("rope_parameters", "an object with rope_type and rope_theta");
    const rp = params as Json;
    if ((rp["rope_type"] ?? "default") !== "default") {
      p.bad("rope_parameters.rope_type", `"default" (scaled RoPE is not supported)`, rp["rope_type"]);
    }
    const theta = rp["rope_theta"];
    if (theta !== undefined) {
      if (typeof theta !== "number" || !Number.isFinite(theta) || theta <= 0) {
        p.bad("rope_parameters.rope_theta", "a positive number", theta);
      }
      fromParams = theta;
    }
  }
  // Some exports carry both spellings; accept them when they agree rather than guess which wins.
  let fromTop: number | undefined;
  if (obj["rope_theta"] !== undefined) fromTop = p.positiveNumber("rope_theta");
  if (fromTop !== undefined && fromParams !== undefined && fromTop !== fromParams) {
    throw new ConfigError(`${source}: rope_theta (${fromTop}) disagrees with rope_parameters.rope_theta (${fromParams})`, {
      code: "bad_value",
      param: "rope_theta",
    });
  }
  const theta = fromTop ?? fromParams;
  if (theta === undefined) {
    throw new ConfigError(`${source}: missing required key "rope_theta" (or "rope_parameters.rope_theta")`, {
      code: "missing_key",
      param: "rope_theta",
      hint: "transformers 4.x writes rope_theta at the top level; 5.x writes rope_parameters: {rope_type, rope_theta}",
    });
  }
  return theta;
}

/** Reads typed values out of the JSON object, failing with errors that name the file and key. */
class Reader {
  readonly obj: Json;
  readonly source: string;
  constructor(obj: Json, source: string) {
    this.obj = obj;
    this.source = source;
  }

  require(key: string): void {
    if (this.obj[key] === undefined) {
      throw new ConfigError(`${this.source}: missing required key "${key}"`, { code: "missing_key", param: key });
    }
  }

  bad(key: string, expected: string, value: unknown = this.obj[key]): never {
    throw new ConfigError(`${this.source}: key "${key}" is ${describe(value)}, expected ${expected}`, {
      code: "bad_value",
      param: key,
    });
  }

  /** A positive integer no larger than the key's CONFIG_LIMITS entry (when it has one). */
  positiveInt(key: string): number {
    const v = this.obj[key];
    const max = (CONFIG_LIMITS as Record<string, number>)[key] ?? Number.MAX_SAFE_INTEGER;
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0 || v > max) {
      this.bad(key, max < Number.MAX_SAFE_INTEGER ? `a positive integer <= ${max}` : "a positive integer");
    }
    return v;
  }

  positiveNumber(key: string): number {
    const v = this.obj[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) this.bad(key, "a positive number");
    return v;
  }

  /** null counts as absent: HF's to_json writes null for options left at None. */
  optionalBool(key: string, dflt: boolean): boolean {
    const v = this.obj[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== "boolean") this.bad(key, "true or false");
    return v;
  }

  optionalPositiveNumber(key: string, dflt: number): number {
    return this.obj[key] === undefined || this.obj[key] === null ? dflt : this.positiveNumber(key);
  }

  optionalPositiveInt(key: string, dflt: number): number {
    return this.obj[key] === undefined || this.obj[key] === null ? dflt : this.positiveInt(key);
  }

  optionalTokenId(key: string): number | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return null;
    if (!isTokenId(v)) this.bad(key, "a non-negative integer token id or null");
    return v;
  }

  optionalEosId(key: string): number | readonly number[] | null {
    const v = this.obj[key];
    if (v === undefined || v === null) return null;
    if (isTokenId(v)) return v;
    if (Array.isArray(v) && v.length > 0 && v.every(isTokenId)) return Object.freeze([...v]);
    return this.bad(key, "a token id, a non-empty list of token ids, or null");
  }

  /** transformers 4.x writes torch_dtype, 5.x writes dtype. */
  optionalDtype(): string | null {
    for (const key of ["torch_dtype", "dtype"]) {
      const v = this.obj[key];
      if (v === undefined || v === null) continue;
      if (typeof v !== "string") this.bad(key, `a dtype name such as "bfloat16"`);
      return v;
    }
    return null;
  }
}

function isTokenId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0x7fffffff; // ids travel in Int32Arrays
}

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** A value as it appeared in the JSON, shortened so an error message stays one line. */
function describe(v: unknown): string {
  if (v === undefined) return "absent";
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/**
 * A config.json that transformers loads as Qwen3ForCausalLM (4.51+; 5.x converts rope_theta
 * itself). `torchDtype` overrides the config's stored dtype (saveQwen3 passes the dtype it writes).
 */
export function qwen3ConfigToJson(config: Qwen3Config, opts: { torchDtype?: string } = {}): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ["Qwen3ForCausalLM"],
    model_type: "qwen3",
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numHiddenLayers,
    num_attention_heads: config.numAttentionHeads,
    num_key_value_heads: config.numKeyValueHeads,
    head_dim: config.headDim,
    hidden_act: "silu",
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    rope_scaling: null,
    attention_bias: config.attentionBias,
    attention_dropout: 0.0,
    tie_word_embeddings: config.tieWordEmbeddings,
    max_position_embeddings: config.maxPositionEmbeddings,
    initializer_range: config.initializerRange,
    use_cache: true,
    use_sliding_window: false,
    sliding_window: null,
    max_window_layers: config.numHiddenLayers,
  };
  if (config.bosTokenId !== null) out["bos_token_id"] = config.bosTokenId;
  if (config.eosTokenId !== null) out["eos_token_id"] = config.eosTokenId;
  if (config.padTokenId !== null) out["pad_token_id"] = config.padTokenId;
  const dtype = opts.torchDtype ?? config.torchDtype;
  if (dtype !== null) out["torch_dtype"] = dtype;
  return out;
}

/** The math keys of a config as a short one-line summary (for logs and `npr model info`). */
export function describeQwen3Config(c: Qwen3Config): string {
  return (
    `V=${c.vocabSize} C=${c.hiddenSize} I=${c.intermediateSize} L=${c.numHiddenLayers} ` +
    `H=${c.numAttentionHeads} Hkv=${c.numKeyValueHeads} D=${c.headDim} theta=${c.ropeTheta} ` +
    `eps=${c.rmsNormEps} tied=${c.tieWordEmbeddings} bias=${c.attentionBias}`
  );
}

/**
 * A config from camelCase fields, for tests and `npr model init` presets: fills the
 * carried-through keys with HF defaults and validates through the same parser as config.json.
 */
export function makeQwen3Config(
  fields: Pick<
    Qwen3Config,
    "vocabSize" | "hiddenSize" | "intermediateSize" | "numHiddenLayers" | "numAttentionHeads" | "numKeyValueHeads" | "headDim"
  > &
    Partial<Qwen3Config>,
): Qwen3Config {
  const full: Qwen3Config = {
    rmsNormEps: 1e-6,
    ropeTheta: 1_000_000,
    tieWordEmbeddings: false,
    attentionBias: false,
    initializerRange: DEFAULT_INITIALIZER_RANGE,
    maxPositionEmbeddings: DEFAULT_MAX_POSITION_EMBEDDINGS,
    bosTokenId: null,
    eosTokenId: null,
    padTokenId: null,
    torchDtype: null,
    ...fields,
  };
  return parseQwen3Config(qwen3ConfigToJson(full), "makeQwen3Config").config;
}
