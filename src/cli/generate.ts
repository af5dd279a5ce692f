/**
 * `npr generate`: one prompt through the engine, parallel or sequential. On a TTY it redraws the
 * branch tree live (one line per active branch with its token count), then prints the answer;
 * `--json` prints the structured results instead. Composition root: loading, flags, terminal.
 * `streamWithTree` (the live tree over the engine's event stream) is shared with `npr demo`.
 */
import type { Command } from "commander";
import { Engine, forcedMaxPlans, parseForceStructure } from "../engine/index.ts";
import type { GenerateParams, GenerationResult, ParamsArg } from "../engine/index.ts";
import { UsageError } from "../util/errors.ts";
import { parseIntArg } from "./args.ts";
import { loadForEngine } from "./engine.ts";

function parseFloatArg(v: string, param: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`${param} must be a number, got "${v}"`, { code: "bad_number", param });
  return n;
}

/**
 * Runs the prompts through `engine.stream`, redrawing on stderr (when `live`) one line per active
 * branch with its token count, at most every 50 ms so a TTY does not slow decoding down.
 * Returns the results in request order and the wall time in seconds.
 */
export async function streamWithTree(
  engine: Engine,
  prompts: ReadonlyArray<readonly number[]>,
  params: ParamsArg,
  live: boolean,
): Promise<{ results: GenerationResult[]; wall: number }> {
  const active = new Map<number, { label: string; tokens: number }>();
  const results: GenerationResult[] = [];
  let drawn = 0;
  let lastDraw = 0;
  const draw = (force: boolean) => {
    const now = performance.now();
    if (!live || (!force && now - lastDraw < 50)) return;
    lastDraw = now;
    if (drawn > 0) process.stderr.write(`\x1b[${drawn}A\x1b[J`);
    const lines = [...active.values()].map((a) => `  ${a.label}  ${a.tokens} tokens`);
    process.stderr.write(lines.map((l) => l + "\n").join(""));
    drawn = lines.length;
  };
  const t0 = performance.now();
  for await (const ev of engine.stream(prompts, params)) {
    if (ev.type === "token") {
      const a = active.get(ev.seqId) ?? { label: `sample ${ev.requestId} trunk`, tokens: 0 };
      a.tokens++;
      active.set(ev.seqId, a);
    } else if (ev.type === "branch-opened") {
      active.set(ev.seqId, { label: `sample ${ev.requestId} block ${ev.block + 1} branch ${ev.branch + 1}`, tokens: 0 });
    } else if (ev.type === "branch-closed") {
      active.delete(ev.seqId);
    } else if (ev.type === "joined") {
      for (const [id, a] of active) if (a.label.startsWith(`sample ${ev.requestId} trunk`)) active.delete(id);
    } else if (ev.type === "finished") {
      results.push(ev.result);
      for (const [id, a] of active) if (a.label.startsWith(`sample ${ev.result.requestId} `)) active.delete(id);
    }
    draw(ev.type !== "token");
  }
  const wall = (performance.now() - t0) / 1000;
  active.clear();
  draw(true);
  results.sort((a, b) => a.requestId - b.requestId);
  return { results, wall };
}

export function registerGenerateCommand(program: Command): void {
  program
    .command("generate")
    .description("generate a response with the NPR engine (branches decoded in parallel) or sequentially")
    .requiredOption("--model <dir>", "checkpoint folder with tokenizer files")
    .requiredOption("--prompt <text>", "user message (the chat template is applied)")
    .option("--mode <mode>", "parallel or sequential", "parallel")
    .option("-n <k>", "number of samples", "1")
    .option("--max-tokens <n>", "max new tokens (critical path and serialized length)", "512")
    .option("--temperature <t>", "sampling temperature (0 = greedy)", "1")
    .option("--top-p <p>", "nucleus sampling", "1")
    .option("--top-k <k>", "top-k sampling (0 = off)", "0")
    .option("--min-p <p>", "min-p sampling (0 = off)", "0")
    .option("--seed <n>", "request seed (sample i uses seed + i)", "0")
    .option("--min-fork-budget <n>", "no fork when fewer tokens of budget remain (default 1024; 0 with --force-structure)")
    .option("--force-structure <spec>", 'force a structure on random-weight models, e.g. "3x16,2x8" (up to 64 branches per block)')
    .option("--backend <name>", "compute backend", "cpu")
    .option("--dtype <dtype>", "compute dtype: f32 or f64", "f32")
    .option("--json", "print the structured results as JSON", false)
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      const { tok, model, vocab } = loadForEngine(String(opts["model"]), String(opts["backend"]), String(opts["dtype"]));
      const mode = String(opts["mode"]);
      if (mode !== "parallel" && mode !== "sequential") throw new UsageError(`--mode must be parallel or sequential, got "${mode}"`, { code: "bad_mode", param: "--mode" });
      const k = parseIntArg(String(opts["n"]), "-n", 1);
      const seed = parseIntArg(String(opts["seed"]), "--seed");
      const forceStructure = typeof opts["forceStructure"] === "string" ? parseForceStructure(opts["forceStructure"]) : null;
      const base: Partial<GenerateParams> = {
        mode,
        maxNewTokens: parseIntArg(String(opts["maxTokens"]), "--max-tokens", 1),
        temperature: parseFloatArg(String(opts["temperature"]), "--temperature"),
        topP: parseFloatArg(String(opts["topP"]), "--top-p"),
        topK: parseIntArg(String(opts["topK"]), "--top-k"),
        minP: parseFloatArg(String(opts["minP"]), "--min-p"),
        // A forced structure exists to exercise forks: NPR's 1024-token rule would decline them
        // under the default --max-tokens and break the forced script, so it defaults to 0 there.
        minForkBudget: typeof opts["minForkBudget"] === "string" ? parseIntArg(opts["minForkBudget"], "--min-fork-budget") : forceStructure ? 0 : 1024,
        forceStructure,
        // A forced block wider than NPR's 5 plans raises the parser's limit for this run only.
        maxPlans: forcedMaxPlans(forceStructure),
      };
      const prompt = tok.encodeChat([{ role: "user", content: String(opts["prompt"]) }]);
      const engine = new Engine(model, vocab, { numBlocks: 4096, blockSize: 16 });
      const live = !opts["json"] && process.stderr.isTTY;
      const { results, wall } = await streamWithTree(engine, Array(k).fill(prompt), Array.from({ length: k }, (_, i) => ({ ...base, seed: seed + i })), live);
      engine.dispose();
      if (opts["json"]) {
        process.stdout.write(JSON.stringify(results) + "\n");
        return;
      }
      for (const r of results) {
        const s = r.stats;
        process.stdout.write(`--- sample ${r.requestId} (${r.finishReason}${r.malformed ? `; ${r.malformed}` : ""})\n${r.text}\n`);
        process.stdout.write(`[${s.serializedTokens} tokens serialized, critical path ${s.criticalPathTokens}, ${s.blocks} block(s) ${JSON.stringify(s.branchesPerBlock)}, ${(s.wallMs / 1000).toFixed(2)} s]\n`);
      }
      const tokens = results.reduce((a, r) => a + r.stats.serializedTokens, 0);
      process.stderr.write(`npr: ${tokens} tokens in ${wall.toFixed(2)} s (${(tokens / wall).toFixed(1)} tokens/s, ${mode})\n`);
    });
}
