/**
 * The tensor library's public surface: Tensor, the differentiable ops, autograd switches, tidy
 * scopes for tensor lifetime, optimizers, dtype conversions and the backend contract. Other
 * folders import tensor/ only through this file (backends are chosen by the composition root
 * via their own entry files).
 */
export { Tensor, numel, contiguousStrides } from "./tensor.ts";
export type { TensorOptions } from "./tensor.ts";
export { noGrad, isGradEnabled } from "./autograd.ts";
export { tidy, keep, isReleased, isBufferReleased, scopeDepth } from "./scope.ts";
export type { TensorContainer, TidyOptions } from "./scope.ts";
export * from "./ops.ts";
export { AdamW, clipGradNorm, gradNorm, constantLr, cosineLr } from "./optim.ts";
export type { AdamWOptions, AdamWState, LrSchedule, CosineOptions } from "./optim.ts";
export type * from "./backend/types.ts";
export { PRIMITIVES, UNARY_OPS, BINARY_OPS, SCALAR_OPS } from "./backend/types.ts";
export {
  CAPABILITIES,
  SAMPLE_MODE,
  SAMPLE_REC,
  hasDecodeAttention,
  hasDeviceSampling,
  hasFusedDecode,
  hasGraphCapture,
} from "./backend/types.ts";
export * from "./backend/decode-attention-plan.ts";
export {
  f32ToBf16Bits,
  bf16BitsToF32,
  f32ToF16Bits,
  f16BitsToF32,
  decodeToFloat,
  decodeToInt32,
  encodeFloat,
  encodeInt,
  toBf16Bits,
  bf16BitsToF32Array,
} from "./dtype.ts";
