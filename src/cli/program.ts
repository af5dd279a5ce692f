/**
 * The `npr` program: the composition root. It builds the commander program from one `register`
 * function per command group and maps every BoundaryError to a one-line message (plus HINT) and
 * exit code 2 (file-system refusals and exhausted memory too); a closed stdout ends quietly with
 * code 0; anything else is a bug and prints its stack. Nothing imports this file.
 */
import { Command, CommanderError } from "commander";
import { BoundaryError } from "../util/index.ts";
import { OutputClosed } from "./io.ts";
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
import { registerTrainCommands } from "./train.ts";
import { registerDistillCommand } from "./distill.ts";

export function buildProgram(): Command {
  const program = new Command();
  program
    .name("npr")
    .description(
      "Native Parallel Reasoner: train a language model to reason in parallel (map-process-reduce) " +
        "and serve it fast.\nRun `npr <command> --help` for each command's options.",
    )
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    // Before the commands are added, so every subcommand inherits it: commander's usage errors
    // then reach main() (exit 2) instead of calling process.exit(1) themselves.
    .exitOverride();
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
  registerTrainCommands(program);
  registerDistillCommand(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander already printed its one-line "error: ..." (unknown option, missing argument):
      // that is bad input like any other, so exit 2; help and version keep commander's code.
      const usage = err.exitCode !== 0 && !["commander.help", "commander.helpDisplayed", "commander.version"].includes(err.code);
      process.exitCode = usage ? 2 : err.exitCode;
      return;
    }
    if (err instanceof OutputClosed || (err as NodeJS.ErrnoException | null)?.code === "EPIPE") {
      process.exitCode = 0;
      return;
    }
    if (err instanceof BoundaryError) {
      // One line, whatever the message quotes (V8's JSON errors embed the offending text with its
      // newlines), then the HINT line.
      const hintLine = err.hint ? `\nHINT: ${err.hint}` : "";
      const text = hintLine && err.message.endsWith(hintLine) ? err.message.slice(0, -hintLine.length) : err.message;
      process.stderr.write(
        `npr: ${err.name}: ${text.replace(/\s*\n\s*/g, " ")}${hintLine.replace(/\s*\n\s*/g, " ").replace(/^ /, "\n")}\n`,
      );
      process.exitCode = 2;
      return;
    }
    // Safety nets for boundaries no check anticipated: the file system said no (ENOSPC, EACCES
    // ...) or memory ran out. Both are the machine's answer to the input, not bugs, so they get
    // the one-line form too; anything else is a bug and keeps its stack.
    const errno = (err ?? {}) as NodeJS.ErrnoException;
    if (typeof errno.code === "string" && typeof errno.syscall === "string") {
      process.stderr.write(`npr: IOError: ${errno.message.split("\n")[0]}\n`);
      process.exitCode = 2;
      return;
    }
    if (err instanceof RangeError && /allocation failed|Invalid typed array length|Invalid array length|Array buffer/i.test(err.message)) {
      process.stderr.write(`npr: ResourceError: out of memory (${err.message})\nHINT: a smaller model, batch or sample count fits\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
}
