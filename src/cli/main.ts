/**
 * Entry point of the `npr` command (bin/npr.js imports this). The program itself is built in
 * program.ts so tests can drive it without spawning a process.
 */
import { main } from "./program.ts";

await main(process.argv);
