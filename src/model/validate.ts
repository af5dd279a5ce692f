/**
 * Checks a checkpoint's tensors against its config without loading them: every parameter the
 * config implies is present, has the implied shape and a float storage dtype; tensors Qwen3 does
 * not use are reported back (a renamed tensor shows up as one missing and one unexpected name).
 * loadQwen3 (checkpoint.ts) runs this same check before it reads a byte, so `npr model info`
 * passes exactly the checkpoints that load. Reads headers only (format/safetensors.ts); knows names and shapes, no math.
 */
import type { SafetensorsCheckpoint } from "../format/index.ts";
import { CheckpointFormatError } from "../util/index.ts";
import type { Qwen3Config } from "./config.ts";
import { EMBED, LM_HEAD, qwen3ParamSpecs } from "./weights.ts";

/** Storage dtypes a Qwen3 weight may have on disk (anything else is quantized or not a float). */
export const FLOAT_STORAGE: ReadonlySet<string> = new Set(["F32", "BF16", "F16", "F64"]);

export interface TensorCheckReport {
  /** Tensors the checkpoint stores that Qwen3 for this config does not use (HF ignores them too). */
  unexpected: string[];
  /** Parameters checked (all present, shaped and typed as the config implies). */
  checked: number;
}

/** "[a, b]" for error messages. */
function shapeText(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * Validates every tensor of `ck` against `config`; throws CheckpointFormatError "missing_tensor",
 * "bad_shape" or "bad_dtype" naming the first bad tensor (in the order transformers lists them).
 * A tied checkpoint that also stores lm_head.weight passes with it listed as unexpected.
 */
export function checkQwen3Tensors(where: string, config: Qwen3Config, ck: Pick<SafetensorsCheckpoint, "names" | "get">): TensorCheckReport {
  const specs = qwen3ParamSpecs(config);
  const wanted = new Set(specs.map((s) => s.name));
  const unexpected = ck.names().filter((n) => !wanted.has(n));
  for (const spec of specs) {
    const entry = ck.get(spec.name);
    if (!entry) {
      const renamed =
        unexpected.length > 0
          ? `; the checkpoint holds tensors npr does not use: ${unexpected.slice(0, 3).join(", ")}${unexpected.length > 3 ? ", ..." : ""}`
          : "";
      const hint =
        spec.name === LM_HEAD
          ? "config.json says tie_word_embeddings: false, so lm_head.weight must be stored; set it to true if the head shares embed_tokens"
          : spec.name === EMBED || unexpected.length > 0
            ? "the tensor names are not Hugging Face Qwen3's (model.embed_tokens.weight, model.layers.N....): a renamed or other-architecture checkpoint"
            : "the checkpoint does not match config.json (num_hidden_layers, attention_bias?)";
      throw new CheckpointFormatError(`${where}: tensor ${spec.name} is missing${renamed}`, {
        code: "missing_tensor",
        param: spec.name,
        hint,
      });
    }
    const same = entry.shape.length === spec.shape.length && entry.shape.every((d, i) => d === spec.shape[i]);
    if (!same) {
      throw new CheckpointFormatError(
        `${where}: tensor ${spec.name} has shape ${shapeText(entry.shape)}, config.json implies ${shapeText(spec.shape)}`,
        {
          code: "bad_shape",
          param: spec.name,
          hint: "the weights and config.json come from different models",
        },
      );
    }
    if (!FLOAT_STORAGE.has(entry.dtype)) {
      throw new CheckpointFormatError(`${where}: tensor ${spec.name} is stored as ${entry.dtype}, expected F32, BF16, F16 or F64`, {
        code: "bad_dtype",
        param: spec.name,
        hint: "quantized checkpoints are not supported; use the bf16 release",
      });
    }
  }
  return { unexpected, checked: specs.length };
}
