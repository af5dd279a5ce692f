/**
 * Public surface of kv/: the block pool (ids, reference counts, free list, null block) and the
 * block tables with fork / join / append / release. Other folders import kv/ only through this
 * file. Rank 1: imports util only; knows nothing about tensors, models or tokens.
 */
export { BlockPool, NULL_BLOCK } from "./block-pool.ts";
export { BlockTable, KVManager } from "./kv-manager.ts";
export type { AppendResult, SlotCopy } from "./kv-manager.ts";
