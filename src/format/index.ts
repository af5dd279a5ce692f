/**
 * Public surface of format/: the NPR tags, the streaming parser, whole-response parsing and
 * format scores, the trajectory layout with its position rule, and safetensors bytes. Other
 * folders import format/ only through this file. Rank 1: imports util only; knows token strings
 * and bytes, never ids' meaning, tensors or models.
 */
export {
  NPR_TAGS,
  GUIDELINE_OPEN,
  GUIDELINE_CLOSE,
  PLAN_OPEN,
  PLAN_CLOSE,
  STEP_OPEN,
  STEP_CLOSE,
  TAKEAWAY_OPEN,
  TAKEAWAY_CLOSE,
  MAX_PLANS,
  isNprTag,
  tagInitText,
  containsNprTag,
  splitOnTags,
  leadingNumber,
  boxedContents,
  lastNonEmptyBoxed,
  type NprTag,
} from "./npr-tags.ts";
export { NprParser, type NprRegion, type NprEvent, type NprParserOptions } from "./npr-parser.ts";
export { canonicalizeResponse, parseResponse, type NprItem, type NprBlock, type NprTrajectory } from "./npr-response.ts";
export {
  FORMAT_VARIANTS,
  formatScore,
  checkResponse,
  type FormatVariant,
  type Penalty,
  type FormatScore,
  type CheckResult,
} from "./npr-score.ts";
export {
  trajectoryLayout,
  buildNprLayout,
  stepStartPosition,
  takeawayPosition,
  nextPosition,
  layoutToJson,
  canonicalizeTokens,
  type TrajectoryLayoutInput,
  type NprLayoutOptions,
  type NprLayoutResult,
} from "./npr-layout.ts";
export {
  DTYPE_BYTES,
  SafetensorsFile,
  SafetensorsCheckpoint,
  writeSafetensors,
  writeSafetensorsCheckpoint,
  type StDType,
  type TensorEntry,
  type WriteEntry,
} from "./safetensors.ts";
