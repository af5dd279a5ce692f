/**
 * ZebraLogic grading. Grid mode (ZeroEval's zebra-grid): the model answers with JSON
 * `{"solution": {"House 1": {"Name": "Eric", ...}, ...}}` and is graded cell by cell against the
 * gold grid `{header, rows}` (cell accuracy, puzzle solved when every cell matches; case and
 * surrounding space ignored, as ZeroEval's eval_zebra_grid.py does). Multiple-choice mode (NPR's
 * mc_mode file) is graded by letter.
 * Knows strings and JSON only; the synthetic generator is logic-grid.ts.
 */
import { lastBoxed } from "./extract.ts";

export interface ZebraSolution {
  /** ["House", "Name", "Occupation", ...] */
  header: string[];
  /** One row per house: ["1", "Eric", "engineer", ...] */
  rows: string[][];
}

export interface ZebraGridGrade {
  /** Could a house-to-attributes table be read from the response at all? */
  parsed: boolean;
  correctCells: number;
  totalCells: number;
  /** Every cell correct. */
  solved: boolean;
}

/** True when `v` has the {header, rows} shape of a gold grid. */
export function isZebraSolution(v: unknown): v is ZebraSolution {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    Array.isArray(o.header) &&
    o.header.every((h) => typeof h === "string") &&
    Array.isArray(o.rows) &&
    o.rows.every((r) => Array.isArray(r) && r.length === (o.header as unknown[]).length && r.every((c) => typeof c === "string"))
  );
}

/** Balanced `{...}` spans that parse as JSON objects, scanning starts from the end (lazily). */
function* jsonObjects(text: string): Generator<Record<string, unknown>> {
  for (let start = text.lastIndexOf("{"); start >= 0; start = start > 0 ? text.lastIndexOf("{", start - 1) : -1) {
    let depth = 0;
    let inStr = false;
    for (let i = start; i < text.length; i++) {
      const c = text[i];
      if (inStr) {
        if (c === "\\") i++;
        else if (c === '"') inStr = false;
        continue;
      }
      if (c === '"') inStr = true;
      else if (c === "{") depth++;
      else if (c === "}" && --depth === 0) {
        try {
          const v: unknown = JSON.parse(text.slice(start, i + 1));
          if (typeof v === "object" && v !== null && !Array.isArray(v)) yield v as Record<string, unknown>;
        } catch {
          // not JSON (LaTeX braces): try the next start
        }
        break;
      }
    }
  }
}

const norm = (s: unknown) =>
  String(s ?? "")
    .trim()
    .toLowerCase();

/** The house table in a response: `{"House 1": {...}}`, possibly under "solution". */
export function parseZebraResponse(text: string): Record<string, Record<string, unknown>> | null {
  for (const obj of jsonObjects(text)) {
    const table = (typeof obj.solution === "object" && obj.solution !== null ? obj.solution : obj) as Record<string, unknown>;
    const houses = Object.keys(table).filter((k) => /^house\s*\d+$/i.test(k.trim()));
    if (houses.length === 0) continue;
    const out: Record<string, Record<string, unknown>> = {};
    for (const k of houses) {
      const row = table[k];
      if (typeof row === "object" && row !== null) out[`House ${/\d+/.exec(k)![0]}`] = row as Record<string, unknown>;
    }
    return out;
  }
  return null;
}

/** Cell-by-cell grade of a response against a gold grid. */
export function gradeZebraGrid(solution: ZebraSolution, text: string): ZebraGridGrade {
  const totalCells = solution.rows.length * (solution.header.length - 1);
  const table = parseZebraResponse(text);
  if (table === null) return { parsed: false, correctCells: 0, totalCells, solved: false };
  // Column names compare loosely ("FavoriteSport" vs "favorite sport").
  const key = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, "");
  let correct = 0;
  solution.rows.forEach((row, i) => {
    const house = table[`House ${row[0] ?? i + 1}`] ?? table[`House ${i + 1}`];
    if (!house) return;
    const byKey = new Map(Object.entries(house).map(([k, v]) => [key(k), v]));
    for (let j = 1; j < solution.header.length; j++) {
      if (norm(byKey.get(key(solution.header[j]!))) === norm(row[j])) correct++;
    }
  });
  return { parsed: true, correctCells: correct, totalCells, solved: correct === totalCells };
}

/** The letter chosen in a multiple-choice response: `\boxed{C}`, "Answer: (C)", or a last "(C)". */
export function extractChoice(text: string, letters = "ABCDEFGHIJ"): string | null {
  const set = `[${letters}]`;
  const boxed = lastBoxed(text);
  if (boxed !== null) {
    const m = new RegExp(`^\\s*(?:\\\\text\\{)?\\s*\\(?(${set})\\)?`).exec(boxed);
    if (m) return m[1]!;
  }
  const ans = [...text.matchAll(new RegExp(`answer\\s*(?:is)?\\s*[:：]?\\s*\\(?(${set})\\)?(?![a-z])`, "gi"))];
  if (ans.length > 0) return ans[ans.length - 1]![1]!.toUpperCase();
  const paren = [...text.matchAll(new RegExp(`\\((${set})\\)`, "g"))];
  return paren.length > 0 ? paren[paren.length - 1]![1]! : null;
}

/** Multiple-choice grade: the chosen letter equals the gold letter. */
export function gradeZebraChoice(goldLetter: string, text: string): { correct: boolean; extracted: string | null } {
  const got = extractChoice(text);
  return { correct: got !== null && got === goldLetter.trim().toUpperCase(), extracted: got };
}

/** Renders a solution grid as the JSON answer a model is asked to give. */
export function zebraAnswerJson(solution: ZebraSolution): string {
  const table: Record<string, Record<string, string>> = {};
  for (const row of solution.rows) {
    const house: Record<string, string> = {};
    for (let j = 1; j < solution.header.length; j++) house[solution.header[j]!] = row[j]!;
    table[`House ${row[0]}`] = house;
  }
  return JSON.stringify({ solution: table });
}
