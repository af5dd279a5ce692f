/**
 * `npr generate`: one prompt through the engine, parallel or sequential. On a TTY it redraws the
 * branch tree live (one line per active branch with its token count), then prints the answer;
 * `--json` prints the structured results instead; without a TTY a progress line comes every few
 * seconds. Samples are capped (MAX_SAMPLES) and the budget at the model's context, with a note.
 * Composition root: loading, flags, terminal. `streamWithTree` (the live tree over the engine's
 * event stream) is shared with `npr demo`.
 */
import type { Command } from "commander";
import { Engine, forcedMaxPlans, parseForceStructure } from "../engine/index.ts";
import type { GenerateParams, GenerationResult, ParamsArg } from "../engine/index.ts";
import { parseChoice, parseIntArg, parseNumberArg } from "./args.ts";
import { loadForEngine } from "./engine.ts";
import { Progress, writeOut } from "./io.ts";

/**
 * Most samples one `npr generate` decodes together: each holds KV blocks and a sampler, and the
 * command is for looking at responses, not for evaluation runs (docs/cli.md states the cap).
 */
export const MAX_SAMPLES = 256;

/**
 * Runs the prompts through `engine.stream`, redrawing on stderr (when `live`) one line per active
 * branch with its token count, at most every 50 ms so a TTY does not slow decoding down. When not
 * live, `progress` (if given) reports finished requests and tokens on stderr instead.
 * Returns the results in request order and the wall time in seconds.
 */
export async function streamWithTree(
  engine: Engine,
  prompts: ReadonlyArray<readonly number[]>,
  params: ParamsArg,
  live: boolean,
  progress: Progress | null = null,
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
  let tokens = 0;
  for await (const ev of engine.stream(prompts, params)) {
    if (ev.type === "token") {
      tokens++;
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
    if (!live) progress?.update(results.length, `${tokens} tokens`);
  }
  const wall = (performance.now() - t0) / 1000;
  progress?.finish();
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
    .option("-n <k>", `number of samples (1-${MAX_SAMPLES})`, "1")
    .option(
      "--max-tokens <n>",
      "max new tokens (critical path and serialized length); capped at the model's context minus the prompt",
      "512",
    )
    .option("--temperature <t>", "sampling temperature (0 = greedy)", "1")
    .option("--top-p <p>", "nucleus sampling, in (0, 1]", "1")
    .option("--top-k <k>", "top-k sampling (0 = off)", "0")
    .option("--min-p <p>", "min-p sampling, in [0, 1) (0 = off)", "0")
    .option("--seed <n>", "request seed (sample i uses seed + i)", "0")
    .option("--min-fork-budget <n>", "no fork when fewer tokens of budget remain (default 1024; 0 with --force-structure)")
    .option("--force-structure <spec>", 'force a structure on random-weight models, e.g. "3x16,2x8" (up to 64 branches per block)')
    .option("--backend <name>", "compute backend: cpu or cuda", "cpu")
    .option("--dtype <dtype>", "compute dtype: f32, f64 or bf16 (bf16 weights and GEMMs, f32 elsewhere)", "f32")
    .option("--json", "print the structured results as JSON (camelCase keys)", false)
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      // Flags first (cheap, and a typo should not wait for a model to load), then the model.
      const mode = parseChoice(String(opts["mode"]), "--mode", ["parallel", "sequential"] as const);
      const k = parseIntArg(String(opts["n"]), "-n", 1, MAX_SAMPLES, `at most ${MAX_SAMPLES} samples per command`);
      const seed = parseIntArg(String(opts["seed"]), "--seed", 0, Number.MAX_SAFE_INTEGER - k);
      const maxTokens = parseIntArg(String(opts["maxTokens"]), "--max-tokens", 1);
      const forceStructure = typeof opts["forceStructure"] === "string" ? parseForceStructure(opts["forceStructure"]) : null;
      const base: Partial<GenerateParams> = {
        mode,
        maxNewTokens: maxTokens,
        temperature: parseNumberArg(String(opts["temperature"]), "--temperature", { min: 0 }),
        topP: parseNumberArg(String(opts["topP"]), "--top-p", { min: 0, minOpen: true, max: 1 }),
        topK: parseIntArg(String(opts["topK"]), "--top-k"),
        minP: parseNumberArg(String(opts["minP"]), "--min-p", { min: 0, max: 1, maxOpen: true }),
        // A forced structure exists to exercise forks: NPR's 1024-token rule would decline them
        // under the default --max-tokens and break the forced script, so it defaults to 0 there.
        minForkBudget:
          typeof opts["minForkBudget"] === "string" ? parseIntArg(opts["minForkBudget"], "--min-fork-budget") : forceStructure ? 0 : 1024,
        forceStructure,
        // A forced block wider than NPR's 5 plans raises the parser's limit for this run only.
        maxPlans: forcedMaxPlans(forceStructure),
      };
      const backend = parseChoice(String(opts["backend"]), "--backend", ["cpu", "cuda"] as const);
      const { tok, model, vocab } = loadForEngine(String(opts["model"]), backend, String(opts["dtype"]));
      const prompt = tok.encodeChat([{ role: "user", content: String(opts["prompt"]) }]);
      const engine = new Engine(model, vocab, { numBlocks: 4096, blockSize: 16 });
      // The engine refuses a prompt past the context and caps the budget; say so, not silently.
      const capped = engine.cappedMaxNewTokens(prompt.length, maxTokens);
      if (capped < maxTokens && prompt.length < engine.maxContext) {
        process.stderr.write(
          `npr: note: --max-tokens ${maxTokens} capped at ${capped} (the model's context of ${engine.maxContext} positions minus the ${prompt.length}-token prompt)\n`,
        );
      }
      const live = !opts["json"] && Boolean(process.stderr.isTTY);
      const progress = new Progress({ label: "npr generate", total: k });
      try {
        const { results, wall } = await streamWithTree(
          engine,
          Array(k).fill(prompt),
          Array.from({ length: k }, (_, i) => ({ ...base, seed: seed + i })),
          live,
          progress,
        );
        if (opts["json"]) {
          writeOut(JSON.stringify(results) + "\n");
          return;
        }
        for (const r of results) {
          const s = r.stats;
          writeOut(`--- sample ${r.requestId} (${r.finishReason}${r.malformed ? `; ${r.malformed}` : ""})\n${r.text}\n`);
          writeOut(
            `[${s.serializedTokens} tokens serialized, critical path ${s.criticalPathTokens}, ${s.blocks} block(s) ${JSON.stringify(s.branchesPerBlock)}, ${(s.wallMs / 1000).toFixed(2)} s]\n`,
          );
        }
        const tokens = results.reduce((a, r) => a + r.stats.serializedTokens, 0);
        process.stderr.write(`npr: ${tokens} tokens in ${wall.toFixed(2)} s (${(tokens / wall).toFixed(1)} tokens/s, ${mode})\n`);
      } finally {
        engine.dispose();
      }
    });
}
