/**
 * Flag-value and path checks shared by the cli subcommands, so every command rejects bad input
 * the same way, before any work starts: integers are decimal digits only ("0x10", "1e3", "1.5",
 * " 5" are refused) inside a stated range; numbers are plain decimals inside a range; choices are
 * one of a list; output paths are checked (an existing file where a folder goes, a missing or
 * unwritable parent) and input paths too (missing, a folder where a file goes, empty, bad JSON
 * with file:line:column). Every refusal is a UsageError (or DataFormatError for file contents)
 * naming the flag. Commander hands values over as strings; this file knows nothing of any command.
 */
import fs from "node:fs";
import path from "node:path";
import { DataFormatError, UsageError } from "../util/index.ts";

/** `[min, max]` as a message fragment ("an integer >= 1" when there is no real upper bound). */
function rangeText(kind: string, min: number, max: number): string {
  if (max >= Number.MAX_SAFE_INTEGER) return `${kind} >= ${min}`;
  return `${kind} in [${min}, ${max}]`;
}

/**
 * The integer a flag's value spells: decimal digits only (a leading "-" only where `min` < 0),
 * inside `[min, max]`. Anything else is a UsageError "bad_int" naming the flag and the range;
 * `capWhy` says where a cap comes from ("the machine has 2 cores") and becomes the hint.
 */
export function parseIntArg(v: string, param: string, min = 0, max = Number.MAX_SAFE_INTEGER, capWhy?: string): number {
  const digits = min < 0 ? /^-?\d+$/ : /^\d+$/;
  const n = digits.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${param} must be ${rangeText("an integer", min, max)}, got "${v}"`, {
      code: "bad_int",
      param,
      // "0x10", "1e3", " 5" are numbers to Number() but not to this parser: say why.
      hint:
        capWhy ??
        (v.trim() !== "" && Number.isFinite(Number(v)) && !/^-?\d+$/.test(v)
          ? "write the value in decimal digits, e.g. 16 (not 0x10, 1e3 or 1.5)"
          : undefined),
    });
  }
  return n;
}

export interface NumberRange {
  min?: number;
  max?: number;
  /** The bound itself is outside the range: (0, 1] is `{ min: 0, minOpen: true, max: 1 }`. */
  minOpen?: boolean;
  maxOpen?: boolean;
}

/** A plain decimal ("0.7", "1", ".5", "-2", "1e-3"); never hex, "Infinity", "NaN" or blanks. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** The finite number a flag's value spells, inside `range`; else a UsageError "bad_number". */
export function parseNumberArg(v: string, param: string, range: NumberRange = {}): number {
  const n = DECIMAL.test(v) ? Number(v) : NaN;
  const { min = -Infinity, max = Infinity, minOpen = false, maxOpen = false } = range;
  const ok = Number.isFinite(n) && (minOpen ? n > min : n >= min) && (maxOpen ? n < max : n <= max);
  if (!ok) {
    const lo = min === -Infinity ? "" : `${minOpen ? "(" : "["}${min}`;
    const hi = max === Infinity ? "" : `${max}${maxOpen ? ")" : "]"}`;
    const where = lo && hi ? ` in ${lo}, ${hi}` : lo ? ` ${minOpen ? ">" : ">="} ${min}` : hi ? ` ${maxOpen ? "<" : "<="} ${max}` : "";
    throw new UsageError(`${param} must be a number${where}, got "${v}"`, { code: "bad_number", param });
  }
  return n;
}

/** `v` when it is one of `choices`; else a UsageError "bad_choice" listing them. */
export function parseChoice<T extends string>(v: string, param: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(v)) return v as T;
  throw new UsageError(`${param} must be one of ${choices.join(", ")}, got "${v}"`, { code: "bad_choice", param });
}

/** The compute dtypes a model runs in (bf16: bf16 weights and GEMMs, f32 elsewhere). */
export type ComputeDtype = "f32" | "f64" | "bf16";

/** `--dtype` of the commands that run a model; anything else is a UsageError "bad_dtype". */
export function parseComputeDtype(v: string): ComputeDtype {
  if (v === "f32" || v === "f64" || v === "bf16") return v;
  throw new UsageError(`--dtype must be f32, f64 or bf16 (mixed precision), got "${v}"`, { code: "bad_dtype", param: "--dtype" });
}

// ------------------------------------------------------------------------------------- paths

function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch {
    return null;
  }
}

function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.code}` : String(err);
}

/**
 * Makes sure `dir` (and its missing ancestors) exists as a folder this process can write in,
 * creating missing levels one at a time: Node's recursive mkdir loops forever on some paths
 * (`/proc/x/y`), so it is never used on a path from the command line.
 */
function ensureWritableDir(dir: string, param: string, shown: string): void {
  const missing: string[] = [];
  let cur = path.resolve(dir);
  for (;;) {
    const st = statOrNull(cur);
    if (st) {
      if (!st.isDirectory()) {
        throw new UsageError(`${param} ${shown}: ${cur} is a file, not a folder`, {
          code: "bad_path",
          param,
          hint: "choose a path whose parent folders are folders",
        });
      }
      break;
    }
    missing.push(cur);
    const up = path.dirname(cur);
    if (up === cur) break;
    cur = up;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d);
    } catch (err) {
      throw new UsageError(`${param} ${shown}: cannot create the folder ${d} (${errnoText(err)})`, {
        code: "unwritable",
        param,
        hint: "choose a writable location",
      });
    }
  }
  // access(W_OK) says yes to root on read-only mounts and pseudo-filesystems: try a real file.
  const probe = path.join(path.resolve(dir), `.npr-write-test-${process.pid}`);
  try {
    fs.writeFileSync(probe, "", { flag: "wx" });
    fs.rmSync(probe, { force: true });
  } catch (err) {
    throw new UsageError(`${param} ${shown}: cannot write in ${path.resolve(dir)} (${errnoText(err)})`, {
      code: "unwritable",
      param,
      hint: "choose a writable location",
    });
  }
}

/**
 * Checks an output folder before any work: not empty, not an existing file, its parent creatable
 * and writable; with `mustBeNew` (no --overwrite) an existing non-empty folder is refused too.
 * Creates the parent (not the folder itself: writers put it in place atomically). Returns `p`.
 */
export function checkOutputDir(p: string, param: string, opts: { mustBeNew?: boolean; overwriteFlag?: string } = {}): string {
  if (p.trim() === "") throw new UsageError(`${param} must name a folder, got an empty string`, { code: "bad_path", param });
  const st = statOrNull(p);
  if (st && !st.isDirectory()) {
    throw new UsageError(`${param} ${p}: a file is there, not a folder`, {
      code: "bad_path",
      param,
      hint: "choose a new folder name, or remove the file",
    });
  }
  if (st && opts.mustBeNew && fs.readdirSync(p).length > 0) {
    throw new UsageError(`${param} ${p}: the folder exists and is not empty`, {
      code: "exists",
      param,
      hint: opts.overwriteFlag
        ? `choose a new folder, or pass ${opts.overwriteFlag} to replace it`
        : "choose a new folder, or remove this one",
    });
  }
  ensureWritableDir(st ? p : path.dirname(path.resolve(p)), param, p);
  return p;
}

/** Checks an output file path before any work: not a folder, its parent creatable and writable. */
export function checkOutputFile(p: string, param: string): string {
  if (p.trim() === "") throw new UsageError(`${param} must name a file, got an empty string`, { code: "bad_path", param });
  const st = statOrNull(p);
  if (st?.isDirectory())
    throw new UsageError(`${param} ${p}: a folder is there, not a file`, { code: "bad_path", param, hint: "give a file name inside it" });
  ensureWritableDir(path.dirname(path.resolve(p)), param, p);
  return p;
}

/** Checks an input file: it exists, is a file (not a folder) and, unless `allowEmpty`, has bytes. */
export function checkInputFile(p: string, param: string, opts: { allowEmpty?: boolean } = {}): string {
  const st = statOrNull(p);
  if (!st) throw new UsageError(`${param} ${p}: no such file`, { code: "missing_file", param });
  if (st.isDirectory()) throw new UsageError(`${param} ${p}: a folder, not a file`, { code: "bad_path", param });
  if (!opts.allowEmpty && st.size === 0) throw new UsageError(`${param} ${p}: the file is empty`, { code: "empty_file", param });
  return p;
}

/** Checks an input folder: it exists and is a folder. */
export function checkInputDir(p: string, param: string, what = "folder"): string {
  const st = statOrNull(p);
  if (!st) throw new UsageError(`${param} ${p}: no such ${what}`, { code: "missing_dir", param });
  if (!st.isDirectory())
    throw new UsageError(`${param} ${p}: a file, not a ${what}`, { code: "bad_path", param, hint: `give the ${what} that holds it` });
  return p;
}

/** 1-based line and column of a character offset in `text`. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const line = before.split("\n").length;
  return { line, column: before.length - before.lastIndexOf("\n") };
}

/**
 * Offset of the first character where `text` stops being JSON (text.length when it ends too
 * early). V8's messages give a position for some errors and not for others ("Unexpected token
 * '}', ... is not valid JSON"), so this small recursive-descent scan finds it; it only runs
 * after JSON.parse failed.
 */
export function jsonErrorOffset(text: string): number {
  let i = 0;
  const fail = (at: number): never => {
    throw at;
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i]!)) i++;
  };
  const lit = (word: string) => {
    for (let k = 0; k < word.length; k++) if (text[i + k] !== word[k]) fail(i + k);
    i += word.length;
  };
  const str = () => {
    i++; // the opening quote
    while (i < text.length && text[i] !== '"') {
      if (text.charCodeAt(i) < 0x20) fail(i);
      if (text[i] === "\\") {
        i++;
        if (text[i] === "u") {
          for (let k = 1; k <= 4; k++) if (!/[0-9a-fA-F]/.test(text[i + k] ?? "")) fail(i + k);
          i += 4;
        } else if (!'"\\/bfnrt'.includes(text[i] ?? "x")) fail(i);
      }
      i++;
    }
    if (i >= text.length) fail(text.length);
    i++;
  };
  const num = () => {
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (!m || m[0] === "" || m[0] === "-") fail(i + (m?.[0].length ?? 0));
    i += m![0].length;
  };
  const value = (): void => {
    ws();
    const c = text[i];
    if (c === undefined) fail(i);
    if (c === "{") {
      i++;
      ws();
      if (text[i] === "}") return void i++;
      for (;;) {
        ws();
        if (text[i] !== '"') fail(i);
        str();
        ws();
        if (text[i] !== ":") fail(i);
        i++;
        value();
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "}") return void i++;
        else fail(i);
      }
    }
    if (c === "[") {
      i++;
      ws();
      if (text[i] === "]") return void i++;
      for (;;) {
        value();
        ws();
        if (text[i] === ",") i++;
        else if (text[i] === "]") return void i++;
        else fail(i);
      }
    }
    if (c === '"') return str();
    if (c === "t") return lit("true");
    if (c === "f") return lit("false");
    if (c === "n") return lit("null");
    return num();
  };
  try {
    value();
    ws();
    return i < text.length ? i : text.length;
  } catch (at) {
    if (typeof at !== "number") throw at;
    return Math.min(at, text.length);
  }
}

/**
 * Parses JSON text read from `file`; a syntax error is a DataFormatError "bad_json" that names
 * file:line:column of the first character that is not JSON.
 */
export function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    const msg = (err as Error).message;
    const { line, column } = lineColumn(text, jsonErrorOffset(text));
    const reason = msg
      .replace(/\s*\(line \d+ column \d+\)/, "")
      .replace(/( in JSON)? at position \d+/, "")
      .replace(/, (\.\.\.)?"[\s\S]*" is not valid JSON$/, "")
      .replace(/\s+/g, " ");
    throw new DataFormatError(`${file}:${line}:${column}: invalid JSON (${text.trim() === "" ? "the file is empty" : reason})`, {
      code: "bad_json",
      param: file,
    });
  }
}

/** Reads and parses a JSON input file, with the checks of checkInputFile and parseJsonText. */
export function readJsonFile(file: string, param: string): unknown {
  checkInputFile(file, param, { allowEmpty: true });
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new UsageError(`${param} ${file}: cannot read it (${errnoText(err)})`, { code: "unreadable", param });
  }
  return parseJsonText(text, file);
}

/** Refuses a folder redirected to stdin (`npr tokenize < dir` reads nothing and says nothing). */
export function checkStdin(command: string): void {
  let st: fs.Stats;
  try {
    st = fs.fstatSync(0);
  } catch {
    return;
  }
  if (st.isDirectory())
    throw new UsageError(`${command}: stdin is a folder; it must be a file or a pipe`, { code: "bad_stdin", param: "stdin" });
}
