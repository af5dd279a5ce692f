/**
 * Errors of three kinds, reported the same way everywhere (STYLE.md habit 16):
 * - a bug fails `invariant(cond, () => message)` with an InvariantError;
 * - bad input at a boundary is a BoundaryError subclass with `code`, `param` and a `hint`;
 * - "not now" is a value (`null` or `{ ok: false, why }`), never an exception.
 * This file knows nothing about tensors, files or the CLI.
 */

/** A broken internal assumption: a bug in npr, not in the user's input. */
export class InvariantError extends Error {
  override name = "InvariantError";
}

/** Throws an InvariantError when `cond` is false; the message is built lazily. */
export function invariant(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new InvariantError(typeof message === "function" ? message() : message);
}

export interface BoundaryErrorOptions {
  /** What was wrong, as a stable machine-readable code, e.g. "missing_key". */
  code: string;
  /** The offending parameter, key, file or tensor name. */
  param?: string;
  /** What the user can do about it. */
  hint?: string;
  cause?: unknown;
}

/** Bad input crossing a boundary (a file, a config, a CLI flag, a request). */
export class BoundaryError extends Error {
  override name = "BoundaryError";
  readonly code: string;
  readonly param: string | undefined;
  readonly hint: string | undefined;
  constructor(message: string, opts: BoundaryErrorOptions) {
    super(opts.hint ? `${message}\nHINT: ${opts.hint}` : message, { cause: opts.cause });
    this.code = opts.code;
    this.param = opts.param;
    this.hint = opts.hint;
  }
}

/** A model or run configuration that cannot be used. */
export class ConfigError extends BoundaryError {
  override name = "ConfigError";
}

/** A checkpoint or tensor file that is missing, truncated or malformed. */
export class CheckpointFormatError extends BoundaryError {
  override name = "CheckpointFormatError";
}

/** A malformed line or value in a data file or on stdin. */
export class DataFormatError extends BoundaryError {
  override name = "DataFormatError";
}

/** A command-line argument that cannot be used. */
export class UsageError extends BoundaryError {
  override name = "UsageError";
}
