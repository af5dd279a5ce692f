/**
 * Entry point of the `npr` command (bin/npr.js imports this). The program itself is built in
 * program.ts so tests can drive it without spawning a process. A reader that closes stdout
 * early (`npr ... | head`) ends the command quietly with exit code 0 (io.ts).
 */
import { installPipeHandlers } from "./io.ts";
import { main } from "./program.ts";

installPipeHandlers();
await main(process.argv);
