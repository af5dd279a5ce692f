/**
 * Flag-value parsing shared by the cli subcommands: one rule for integer flags and one for the
 * compute dtype, so every command rejects "1.5", "abc", a value under the flag's minimum or an
 * unknown dtype with the same code and message.
 * Commander hands values over as strings; this file knows nothing about any command.
 */
import { UsageError } from "../util/errors.ts";

/**
 * The integer a flag's value spells, at least `min` (default 0). Number() semantics, so "0x10"
 * and "1e3" are accepted as 16 and 1000; a non-integer, an unsafe integer or a value under `min`
 * is a UsageError with code "bad_int" and the flag as param.
 */
export function parseIntArg(v: string, param: string, min = 0): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${param} must be an integer >= ${min}, got "${v}"`, { code: "bad_int", param });
  return n;
}

/** The compute dtypes a model runs in (bf16: bf16 weights and GEMMs, f32 elsewhere). */
export type ComputeDtype = "f32" | "f64" | "bf16";

/** `--dtype` of the commands that run a model; anything else is a UsageError "bad_dtype". */
export function parseComputeDtype(v: string): ComputeDtype {
  if (v === "f32" || v === "f64" || v === "bf16") return v;
  throw new UsageError(`--dtype must be f32, f64 or bf16 (mixed precision), got "${v}"`, { code: "bad_dtype", param: "--dtype" });
}
