/**
 * The `npr` program: the composition root. It builds the commander program from one `register`
 * function per command group and maps every BoundaryError to a one-line message (plus HINT) and
 * exit code 2; anything else is a bug and prints its stack. Nothing imports this file.
 */
import { Command, CommanderError } from "commander";
import { BoundaryError } from "../util/errors.ts";
import { registerBackendCommands } from "./backend.ts";
import { registerBundleCommand } from "./bundle.ts";
import { registerGradeCommands } from "./grade.ts";
import { registerModelCommands } from "./model.ts";
import { registerTasksCommands } from "./tasks.ts";
import { registerFormatCommands } from "./format.ts";
import { registerTokenizerCommands } from "./tokenizer.ts";
import { registerEngineCommands } from "./engine.ts";
import { registerGenerateCommand } from "./generate.ts";
import { registerDemoCommand } from "./demo.ts";

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("npr")
    .description(
      "Native Parallel Reasoner: train a language model to reason in parallel (map-process-reduce) " +
        "and serve it fast.\nRun `npr <command> --help` for each command's options.",
    )
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)");
  registerModelCommands(program);
  registerGradeCommands(program);
  registerTasksCommands(program);
  registerFormatCommands(program);
  registerTokenizerCommands(program);
  registerBackendCommands(program);
  registerBundleCommand(program);
  registerEngineCommands(program);
  registerGenerateCommand(program);
  registerDemoCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof BoundaryError) {
      process.stderr.write(`npr: ${err.name}: ${err.message}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
}


