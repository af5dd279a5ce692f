/**
 * The model folder's public surface: Qwen3 config parsing, parameter names and init, the forward
 * pass over a layout, the contiguous KV cache, and HF checkpoint load/save. Other folders import
 * model/ only through this file. Nothing here knows tokenizers, the engine's scheduling or runs.
 */
export {
  parseQwen3Config,
  qwen3ConfigToJson,
  makeQwen3Config,
  describeQwen3Config,
  REQUIRED_KEYS,
  IGNORED_KEYS,
  CONFIG_LIMITS,
} from "./config.ts";
export type { Qwen3Config, ParsedQwen3Config } from "./config.ts";
export {
  qwen3ParamSpecs,
  qwen3ParamCount,
  initQwen3Params,
  layerParamNames,
  EMBED,
  FINAL_NORM,
  LM_HEAD,
} from "./weights.ts";
export type { ParamSpec, ParamInit, InitOptions, LayerParamNames } from "./weights.ts";
export { Qwen3Model } from "./qwen3.ts";
export type { RandomModelOptions, Qwen3ModelOptions } from "./qwen3.ts";
export { HfBf16Math, plainMath, roundBf16 } from "./forward-math.ts";
export type { ForwardMath } from "./forward-math.ts";
export { KVCache, KVCacheFullError } from "./kv-cache.ts";
export type { KVCacheOptions, KVStore } from "./kv-cache.ts";
export { loadQwen3, saveQwen3, readQwen3Config } from "./checkpoint.ts";
export type { LoadOptions, SaveOptions } from "./checkpoint.ts";
export { paddedVocabSize, resizeVocab, type NewTokenInit, type ResizeOptions } from "./resize.ts";
export { PagedKVStorage, pagedForward, type PagedSeqInput, type PageCopy, type SlotRanges } from "./paged-kv.ts";
export { DecodeStep, type DecodeStepBuffers, type DecodeStepInputs, type DecodeStepOptions } from "./decode-step.ts";
export { checkQwen3Tensors, FLOAT_STORAGE, type TensorCheckReport } from "./validate.ts";
