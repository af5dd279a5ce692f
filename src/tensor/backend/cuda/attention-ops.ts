/**
 * Segment attention on the CUDA backend, forward and backward: the choice between the flash
 * kernels (flash-attention.cu: 64 x 64 tiles on bf16 tensor cores, f32 accumulation) and the f32
 * reference kernels (attention.cu: one warp per (token, head) row), argument checks and launches.
 * CudaBackend.attention / attentionBackward delegate here; the policy knob is its
 * `attentionKernel` field (see its comment).
 * Knows the Backend contract's attention semantics and the kernels' launch shapes; nothing about
 * models or the engine's paged decode (decode-attention.ts owns that).
 */
import { invariant } from "../../../util/index.ts";
import type { AttentionParams, AttentionSegments, DeviceBuffer } from "../types.ts";
import { ELEM_BYTES, type CudaBuffer } from "./buffers.ts";
import type { KernelDType } from "./compile.ts";
import type { KernelArg } from "./ffi/driver.ts";
import type { CudaBackend } from "./index.ts";

/** Warps per block of the reference kernels (ATT_WARPS in attention.cu) and their head-dim limit. */
const ATT_WARPS = 4;
const ATT_MAX_D = 256;
/** "auto" uses the flash kernels from this many query tokens on (see useFlash). */
const FLASH_MIN_TOKENS = 256;
/** Query/key tile and threads per block of flash-attention.cu (FA_TILE, FA_THREADS). */
const FA_TILE = 64;
const FA_THREADS = 128;
/** Dynamic shared memory of flash_bwd_d<HD> (FA_BWD_SMEM in flash-attention.cu). */
const faBwdSmem = (hd: number) => 4 * FA_TILE * (hd + 8) * 2 + FA_TILE * (FA_TILE + 8) * 2 + FA_TILE * 16;

function attentionDims(be: CudaBackend, op: string, p: AttentionParams): void {
  const { tokens, keys, heads, kvHeads, headDim } = p;
  be.checks.dims(op, { tokens, keys, heads, kvHeads, headDim });
  invariant(kvHeads >= 1 && heads >= kvHeads, () => `${op}: ${heads} query heads cannot share ${kvHeads} kv heads`);
  invariant(headDim <= ATT_MAX_D, () => `${op}: head dim ${headDim} exceeds the kernel's ${ATT_MAX_D}`);
}

/**
 * The segment arrays as kernel arguments. Only offsets' size is known on the host (starts and
 * ends are as long as offsets[T] says, which lives on the device); the kernels clamp every
 * segment to [0, keys), so a malformed layout cannot make them read outside k and v.
 */
function segs(be: CudaBackend, op: string, seg: AttentionSegments, T: number): KernelArg[] {
  const off = be.checks.ints(op, "seg.offsets", seg.offsets, T + 1);
  const st = be.checks.ints(op, "seg.starts", seg.starts, 0);
  const en = be.checks.ints(op, "seg.ends", seg.ends, 0);
  return [{ ptr: off.ptr }, { ptr: st.ptr }, { ptr: en.ptr }];
}

function scalars(p: AttentionParams, dt: KernelDType): KernelArg[] {
  return [
    { i32: p.tokens },
    { i32: p.keys },
    { i32: p.heads },
    { i32: p.kvHeads },
    { i32: p.headDim },
    dt === "f32" ? { f32: p.scale } : { f64: p.scale },
  ];
}

/** Whether this call takes the flash kernels (see CudaBackend.attentionKernel); bufs are all its float buffers. */
function useFlash(be: CudaBackend, p: AttentionParams, dt: KernelDType, bufs: CudaBuffer[]): boolean {
  if (be.attentionKernel === "reference" || dt !== "f32" || be.device.major < 8) return false;
  if (p.headDim !== 64 && p.headDim !== 128) return false;
  if (!bufs.every((b) => b.ptr % 16 === 0)) return false;
  return be.attentionKernel === "flash" || (p.bf16Inner === true && p.tokens >= FLASH_MIN_TOKENS);
}

export function attentionForward(
  be: CudaBackend,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  seg: AttentionSegments,
  out: DeviceBuffer,
  lse: DeviceBuffer,
  p: AttentionParams,
): void {
  const op = "attention";
  attentionDims(be, op, p);
  const { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D } = p;
  const segArgs = segs(be, op, seg, T);
  const [[Q, K, V, O, L], dt] = be.checks.floats(op, [
    ["q", q, T * H * D],
    ["k", k, S * Hkv * D],
    ["v", v, S * Hkv * D],
    ["out", out, T * H * D],
    ["lse", lse, T * H],
  ]);
  const args = [{ ptr: Q.ptr }, { ptr: K.ptr }, { ptr: V.ptr }, ...segArgs, { ptr: O.ptr }, { ptr: L.ptr }, ...scalars(p, dt)];
  if (useFlash(be, p, dt, [Q, K, V, O])) {
    // One block per (64-query tile, query head).
    if (T > 0) {
      be.launchKernel("flash-attention.cu", `flash_fwd_d${D}`, "f32", [Math.ceil(T / FA_TILE), H, 1], FA_THREADS, args);
      be.countCall("cuda.flash");
    }
  } else {
    // One warp per (token, head) row: T * H rows, ATT_WARPS rows per block.
    be.launchKernel("attention.cu", "attention", dt, Math.ceil((T * H) / ATT_WARPS), 32 * ATT_WARPS, args);
  }
  be.countCall(op);
}

export function attentionBackward(
  be: CudaBackend,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  seg: AttentionSegments,
  out: DeviceBuffer,
  lse: DeviceBuffer,
  dOut: DeviceBuffer,
  dq: DeviceBuffer,
  dk: DeviceBuffer,
  dv: DeviceBuffer,
  p: AttentionParams,
): void {
  const op = "attentionBackward";
  attentionDims(be, op, p);
  const { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D } = p;
  const segArgs = segs(be, op, seg, T);
  const [[Q, K, V, O, L, DO, DQ, DK, DV], dt] = be.checks.floats(op, [
    ["q", q, T * H * D],
    ["k", k, S * Hkv * D],
    ["v", v, S * Hkv * D],
    ["out", out, T * H * D],
    ["lse", lse, T * H],
    ["dOut", dOut, T * H * D],
    ["dq", dq, T * H * D],
    ["dk", dk, S * Hkv * D],
    ["dv", dv, S * Hkv * D],
  ]);
  if (useFlash(be, p, dt, [Q, K, V, O, DO, DQ, DK, DV])) {
    flashBackward(be, Q, K, V, segArgs, O, L, DO, DQ, DK, DV, p);
    be.countCall(op);
    return;
  }
  // dk and dv are summed with atomics over query rows: zero them first (the contract overwrites).
  const kvBytes = S * Hkv * D * ELEM_BYTES[dt];
  if (kvBytes > 0) {
    be.driver.memsetD8Async(DK.ptr, 0, kvBytes, be.streamHandle);
    be.driver.memsetD8Async(DV.ptr, 0, kvBytes, be.streamHandle);
    be.countCall("cuda.memset", 2);
  }
  be.launchKernel("attention.cu", "attention_backward", dt, Math.ceil((T * H) / ATT_WARPS), 32 * ATT_WARPS, [
    { ptr: Q.ptr },
    { ptr: K.ptr },
    { ptr: V.ptr },
    ...segArgs,
    { ptr: O.ptr },
    { ptr: L.ptr },
    { ptr: DO.ptr },
    { ptr: DQ.ptr },
    { ptr: DK.ptr },
    { ptr: DV.ptr },
    ...scalars(p, dt),
  ]);
  be.countCall(op);
}

/**
 * The flash backward: delta = rowsum(dO * O) into a scratch [T, H] buffer, dq zeroed (summed
 * with atomics), then one block per (64-key tile, kv head), which writes its dk, dv rows whole.
 */
function flashBackward(
  be: CudaBackend,
  Q: CudaBuffer,
  K: CudaBuffer,
  V: CudaBuffer,
  segArgs: KernelArg[],
  O: CudaBuffer,
  L: CudaBuffer,
  DO: CudaBuffer,
  DQ: CudaBuffer,
  DK: CudaBuffer,
  DV: CudaBuffer,
  p: AttentionParams,
): void {
  const { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D } = p;
  if (T * H * D > 0) {
    be.driver.memsetD8Async(DQ.ptr, 0, T * H * D * 4, be.streamHandle);
    be.countCall("cuda.memset");
  }
  if (S === 0) return;
  const delta = be.alloc("f32", T * H);
  be.launchKernel("flash-attention.cu", "flash_bwd_delta", "f32", Math.ceil((T * H) / 4), 128, [
    { ptr: O.ptr },
    { ptr: DO.ptr },
    { ptr: delta.ptr },
    { i32: T * H },
    { i32: D },
  ]);
  be.launchKernel(
    "flash-attention.cu",
    `flash_bwd_d${D}`,
    "f32",
    [Math.ceil(S / FA_TILE), Hkv, 1],
    FA_THREADS,
    [
      { ptr: Q.ptr },
      { ptr: K.ptr },
      { ptr: V.ptr },
      ...segArgs,
      { ptr: L.ptr },
      { ptr: delta.ptr },
      { ptr: DO.ptr },
      { ptr: DQ.ptr },
      { ptr: DK.ptr },
      { ptr: DV.ptr },
      ...scalars(p, "f32"),
    ],
    faBwdSmem(D),
  );
  be.countCall("cuda.flash");
  be.free(delta);
}
