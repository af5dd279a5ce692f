/**
 * Public surface of util/ (rank 0): errors and invariants, the seeded RNG, attention layouts in
 * segment form, and the environment read once. Other folders import util/ only through this file.
 * Knows nothing of any other npr folder.
 */
export * from "./errors.ts";
export * from "./rng.ts";
export * from "./layout.ts";
export * from "./env.ts";
