/**
 * `npr format check|layout|show`: the NPR format on the command line, stdin JSONL to stdout.
 * - check:  {"response": str} -> {"valid", "score", "errors"} (--variant stage1|eval)
 * - layout: {"promptLen": int, "tokens": [str]} (prompt + response tokens, tags as their literal
 *           strings; "prompt_len" is accepted too) -> {"positions": [int], "visible": [[[start, end], ...], ...]}
 * - show:   {"response": str} (or raw text with --text) -> the trajectory tree, coloured on a TTY.
 * A malformed line yields {"error": reason} on its own output line and the command goes on.
 * Composition only: the grammar, score and layout live in src/format.
 */
import { createInterface } from "node:readline";
import type { Command } from "commander";
import { checkStdin, parseChoice } from "./args.ts";
import { writeOut } from "./io.ts";
import { buildNprLayout, layoutToJson } from "../format/index.ts";
import { parseResponse, type NprTrajectory } from "../format/index.ts";
import { FORMAT_VARIANTS, checkResponse, type FormatVariant } from "../format/index.ts";

/** Reads stdin JSONL; calls `each` with the parsed object or an error string per non-blank line. */
async function eachJsonLine(each: (value: Record<string, unknown> | null, error: string | null, line: number) => void): Promise<void> {
  checkStdin("npr format");
  let n = 0;
  for await (const raw of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    n++;
    if (raw.trim() === "") continue;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (err) {
      each(null, `line ${n}: invalid JSON (${(err as Error).message})`, n);
      continue;
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) each(null, `line ${n}: expected a JSON object`, n);
    else each(v as Record<string, unknown>, null, n);
  }
}

const out = (v: unknown) => writeOut(`${JSON.stringify(v)}\n`);

/** The layout of one `npr format layout` input object, or {"error"}. */
export function layoutLine(v: Record<string, unknown>, line: number): Record<string, unknown> {
  // npr's JSON keys are camelCase; the snake_case spelling of earlier releases is still read.
  const { promptLen, prompt_len, tokens } = v as { promptLen?: unknown; prompt_len?: unknown; tokens?: unknown };
  const p = promptLen ?? prompt_len;
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === "string")) {
    return { error: `line ${line}: "tokens" must be an array of strings` };
  }
  if (typeof p !== "number" || !Number.isInteger(p) || p < 0 || p > tokens.length) {
    return { error: `line ${line}: "promptLen" (or "prompt_len") must be an integer in [0, ${tokens.length}], got ${JSON.stringify(p)}` };
  }
  const r = buildNprLayout(p, tokens as string[]);
  return r.ok ? layoutToJson(r.layout) : { error: `line ${line}: ${r.why}` };
}

function parseVariant(s: string): FormatVariant {
  return parseChoice(s, "--variant", FORMAT_VARIANTS as readonly FormatVariant[]);
}

interface Paint {
  tag: (s: string) => string;
  dim: (s: string) => string;
  bad: (s: string) => string;
  good: (s: string) => string;
}

function paint(color: boolean): Paint {
  const c = (code: number) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
  return { tag: c(36), dim: c(2), bad: c(31), good: c(32) };
}

/** One line of text, shortened for the tree view. */
function clip(s: string, width = 100): string {
  const one = s.replace(/\s+/g, " ").trim();
  return one.length > width ? `${one.slice(0, width - 1)}…` : one;
}

/** The tree `npr format show` draws. */
export function renderTree(t: NprTrajectory, p: Paint = paint(false)): string {
  const lines: string[] = [];
  t.blocks.forEach((b, k) => {
    if (b.before.trim() !== "") lines.push(`${p.dim("text")} ${clip(b.before)}`);
    lines.push(`${p.tag(`block ${k + 1}`)} ${p.dim(`(${b.plans.length} plan(s), ${b.steps.length} step(s))`)}`);
    if (b.guidelineText.trim() !== "") lines.push(`├─ ${p.dim("guideline text")} ${clip(b.guidelineText)}`);
    b.plans.forEach((pl) => lines.push(`├─ ${p.tag(`plan ${pl.num ?? "?"}`)} ${clip(pl.text)}`));
    b.steps.forEach((st) => lines.push(`├─ ${p.tag(`step ${st.num ?? "?"}`)} ${clip(st.text)}`));
    lines.push(`└─ ${p.tag("takeaway")} ${b.takeaway === null ? p.bad("(missing)") : clip(b.takeaway)}`);
  });
  if (t.conclusion.trim() !== "") lines.push(`${p.tag("conclusion")} ${clip(t.conclusion)}`);
  lines.push(`${p.tag("answer")} ${t.answer === null ? p.bad("(no non-empty \\boxed{})") : t.answer}`);
  lines.push(t.error === null ? p.good("well-formed") : p.bad(`malformed: ${t.error}`));
  return lines.join("\n");
}

export function registerFormatCommands(program: Command): void {
  const format = program.command("format").description("the NPR format: check responses, lay out token sequences, show trajectory trees");

  format
    .command("check")
    .description('stdin JSONL {"response"} -> stdout {"valid","score","errors"} (NPR format score)')
    .option("--variant <name>", "stage1 (reward: requires a non-empty \\boxed{} conclusion) or eval", "eval")
    .action(async (o: { variant: string }) => {
      const variant = parseVariant(o.variant);
      await eachJsonLine((v, err, line) => {
        if (err !== null) return out({ error: err });
        if (typeof v!["response"] !== "string") return out({ error: `line ${line}: "response" must be a string` });
        out(checkResponse(v!["response"] as string, variant));
      });
    });

  format
    .command("layout")
    .description('stdin JSONL {"promptLen","tokens"} -> stdout {"positions","visible"} (NPR positions and attention ranges)')
    .action(async () => {
      await eachJsonLine((v, err, line) => out(err !== null ? { error: err } : layoutLine(v!, line)));
    });

  format
    .command("show")
    .description('pretty-print responses (stdin JSONL {"response"}, or raw text with --text) as trees')
    .option("--text", "stdin is one raw response, not JSONL")
    .action(async (o: { text?: boolean }) => {
      const p = paint(Boolean(process.stdout.isTTY) && !process.env["NO_COLOR"]);
      if (o.text) {
        checkStdin("npr format show");
        const chunks: Buffer[] = [];
        for await (const c of process.stdin) chunks.push(c as Buffer);
        writeOut(`${renderTree(parseResponse(Buffer.concat(chunks).toString("utf8")), p)}\n`);
        return;
      }
      await eachJsonLine((v, err, line) => {
        if (err !== null) return out({ error: err });
        if (typeof v!["response"] !== "string") return out({ error: `line ${line}: "response" must be a string` });
        writeOut(`${p.dim(`# line ${line}`)}\n${renderTree(parseResponse(v!["response"] as string), p)}\n`);
      });
    });
}
