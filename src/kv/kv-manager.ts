/**
 * Block tables and the KV manager: which slots (block id x offset) hold each sequence's tokens,
 * and the fork / join / append / release operations over a BlockPool. A table is a list of slot
 * ranges, one per entry, each inside one block; ranges need not fill their block, so a joined
 * table may hold partially filled blocks in its middle without any copy.
 * Knows ids, offsets and counts only; the model's paged storage does the copies it is told to.
 *
 *   parent   [B1 0..4)[B2 0..4)[B3 0..2)            fork -> every child shares B1, B2, B3
 *   child 0  [B1 0..4)[B2 0..4)[B3 0..4)[B5 0..1)   first writer extends B3 in place (frontier 2)
 *   child 1  [B1 0..4)[B2 0..4)[B4 0..4)            B3's frontier moved: copy-on-write of the 2
 *                                                   prefix rows into B4, then append
 *   join     [B1 0..4)[B2 0..4)[B3 0..4)[B5 0..1)[B4 2..4)   child 0 whole + child 1 from its
 *                                                   first own token: B4 0..2 are not repeated
 *
 * A block's frontier is how many of its slots were ever written. Slots are write-once: a table
 * may append into its tail block only where its tail entry ends at the frontier, so readers of
 * a shared block never see a slot change under them.
 */
import { InvariantError, invariant } from "../util/index.ts";
import { BlockPool } from "./block-pool.ts";

/** Copy `count` rows from slots [srcBlock, srcStart..) to [dstBlock, dstStart..) (every layer, K and V). */
export interface SlotCopy {
  srcBlock: number;
  srcStart: number;
  dstBlock: number;
  dstStart: number;
  count: number;
}

export type AppendResult =
  /** slots: [n] global slot ids (block * blockSize + offset) for the new tokens, in order. */
  { ok: true; slots: Int32Array; copies: SlotCopy[] } | { ok: false; why: string; blocksNeeded: number };

let nextTableId = 1;

/** The slots of one sequence, in token order. Mutated only through KVManager. */
export class BlockTable {
  readonly id = nextTableId++;
  /** Per entry: block id and the slot range [start, end) inside it. */
  readonly blocks: number[] = [];
  readonly starts: number[] = [];
  readonly ends: number[] = [];
  numTokens = 0;
  released = false;

  get numEntries(): number {
    return this.blocks.length;
  }

  /** Distinct block ids of the table, in first-use order. */
  uniqueBlocks(): number[] {
    return [...new Set(this.blocks)];
  }

  /** [numTokens] global slot ids, in token order. */
  slots(blockSize: number): Int32Array {
    const out = new Int32Array(this.numTokens);
    let k = 0;
    for (let e = 0; e < this.blocks.length; e++) {
      for (let s = this.starts[e]!; s < this.ends[e]!; s++) out[k++] = this.blocks[e]! * blockSize + s;
    }
    return out;
  }

  push(block: number, start: number, end: number): void {
    const last = this.blocks.length - 1;
    if (last >= 0 && this.blocks[last] === block && this.ends[last] === start) this.ends[last] = end;
    else {
      this.blocks.push(block);
      this.starts.push(start);
      this.ends.push(end);
    }
    this.numTokens += end - start;
  }
}

export class KVManager {
  readonly pool: BlockPool;
  /** Token slots per block. */
  readonly blockSize: number;
  /** [numBlocks] slots ever written in each block since it was allocated. */
  private readonly frontier: Int32Array;
  private readonly live = new Set<BlockTable>();
  /** Releases refused as double frees (each also threw); the fuzzer reports this count. */
  doubleFrees = 0;

  constructor(numBlocks: number, blockSize: number) {
    invariant(Number.isInteger(blockSize) && blockSize >= 1, () => `KVManager: bad block size ${blockSize}`);
    this.pool = new BlockPool(numBlocks);
    this.blockSize = blockSize;
    this.frontier = new Int32Array(numBlocks);
  }

  /** An empty table (holds no block until something is appended). */
  newTable(): BlockTable {
    const t = new BlockTable();
    this.live.add(t);
    return t;
  }

  /** Tables not yet released. */
  get liveTables(): number {
    return this.live.size;
  }

  /** Blocks an append of `n` tokens to `table` would take from the pool (0 when it fits). */
  blocksNeeded(table: BlockTable, n: number): number {
    return this.planAppend(table, n).newBlocks;
  }

  /**
   * Room for `n` more tokens at the end of `table`: extends the tail block in place when the
   * table owns its frontier, copies a partial tail that another table wrote past (copy-on-write),
   * then takes fresh blocks. `{ ok: false }` (nothing changed) when the pool is short.
   */
  appendSlots(table: BlockTable, n: number): AppendResult {
    this.checkLive(table, "appendSlots");
    invariant(Number.isInteger(n) && n >= 0, () => `appendSlots(${n})`);
    const bs = this.blockSize;
    const plan = this.planAppend(table, n);
    const fresh = this.pool.allocate(plan.newBlocks);
    if (fresh === null) {
      return { ok: false, why: `need ${plan.newBlocks} block(s), ${this.pool.numFree} free`, blocksNeeded: plan.newBlocks };
    }
    const copies: SlotCopy[] = [];
    let f = 0;
    const last = table.numEntries - 1;
    if (plan.cow) {
      // NOTE(kv): the tail is partial and another table already wrote past it; copy its rows so
      // this table's own tokens stay contiguous after them (the alternative, a new entry, would
      // also be correct: tables are slot ranges).
      const src = table.blocks[last]!;
      const count = table.ends[last]! - table.starts[last]!;
      const dst = fresh[f++]!;
      copies.push({ srcBlock: src, srcStart: table.starts[last]!, dstBlock: dst, dstStart: 0, count });
      table.blocks[last] = dst;
      table.starts[last] = 0;
      table.ends[last] = count;
      this.frontier[dst] = count;
      this.dropRefs([src]);
    }
    const slots = new Int32Array(n);
    let k = 0;
    while (k < n) {
      let block: number;
      let at: number;
      const t = table.numEntries - 1;
      if (t >= 0 && table.ends[t]! < bs && table.ends[t] === this.frontier[table.blocks[t]!]) {
        block = table.blocks[t]!;
        at = table.ends[t]!;
      } else {
        block = fresh[f++]!;
        at = 0;
      }
      const take = Math.min(n - k, bs - at);
      for (let j = 0; j < take; j++) slots[k + j] = block * bs + at + j;
      table.push(block, at, at + take);
      this.frontier[block] = at + take;
      k += take;
    }
    invariant(f === fresh.length, () => `appendSlots used ${f} of ${fresh.length} fresh blocks`);
    return { ok: true, slots, copies };
  }

  /**
   * `n` children that share every block of `parent` (one reference each). Nothing is allocated,
   * so a fork cannot fail; the first child to append extends a partial tail, the others copy it.
   */
  fork(parent: BlockTable, n: number): BlockTable[] {
    this.checkLive(parent, "fork");
    const out: BlockTable[] = [];
    const unique = parent.uniqueBlocks();
    for (let i = 0; i < n; i++) {
      const t = this.newTable();
      for (let e = 0; e < parent.numEntries; e++) t.push(parent.blocks[e]!, parent.starts[e]!, parent.ends[e]!);
      this.pool.incRef(unique);
      out.push(t);
    }
    return out;
  }

  /**
   * The merged table of a block's branches, without recomputation: branch 0 whole, then every
   * later branch from token `inherited` on (the tokens it did not share with branch 0). The join
   * takes its own reference on each block; the caller releases the branch tables after.
   */
  join(branches: readonly BlockTable[], inherited: number): BlockTable {
    invariant(branches.length > 0, "join of no branches");
    for (const b of branches) {
      this.checkLive(b, "join");
      invariant(b.numTokens >= inherited, () => `join: branch table ${b.id} holds ${b.numTokens} < ${inherited} inherited tokens`);
    }
    const t = this.newTable();
    branches.forEach((b, i) => {
      let skip = i === 0 ? 0 : inherited;
      for (let e = 0; e < b.numEntries; e++) {
        const len = b.ends[e]! - b.starts[e]!;
        if (skip >= len) {
          skip -= len;
          continue;
        }
        t.push(b.blocks[e]!, b.starts[e]! + skip, b.ends[e]!);
        skip = 0;
      }
    });
    this.pool.incRef(t.uniqueBlocks());
    return t;
  }

  /**
   * Drops the table's references, tail first (vLLM frees in reverse so tails are reused last
   * among a sequence's blocks); blocks reaching zero go back to the pool. Releasing a table twice
   * is a bug: counted in `doubleFrees` and thrown as an InvariantError.
   */
  release(table: BlockTable): void {
    if (table.released || !this.live.has(table)) {
      this.doubleFrees++;
      throw new InvariantError(`KVManager.release: table ${table.id} was already released (double free)`);
    }
    table.released = true;
    this.live.delete(table);
    this.dropRefs(table.uniqueBlocks().reverse());
  }

  /**
   * Checks pool and tables together: the pool's own invariants; every block's refCount equals the
   * number of live tables holding it; every table entry lies inside its block's written slots.
   */
  assertConsistent(): void {
    this.pool.assertConsistent();
    const holders = new Int32Array(this.pool.numBlocks);
    for (const t of this.live) {
      let tokens = 0;
      for (let e = 0; e < t.numEntries; e++) {
        const b = t.blocks[e]!;
        invariant(
          t.starts[e]! >= 0 && t.starts[e]! < t.ends[e]! && t.ends[e]! <= this.frontier[b]!,
          () =>
            `table ${t.id} entry ${e}: slots [${t.starts[e]}, ${t.ends[e]}) of block ${b} outside its ${this.frontier[b]} written slots`,
        );
        tokens += t.ends[e]! - t.starts[e]!;
      }
      invariant(tokens === t.numTokens, () => `table ${t.id}: entries hold ${tokens} tokens, numTokens ${t.numTokens}`);
      for (const b of t.uniqueBlocks()) holders[b]!++;
    }
    for (let b = 1; b < this.pool.numBlocks; b++) {
      invariant(
        this.pool.refCount(b) === holders[b],
        () => `block ${b}: refCount ${this.pool.refCount(b)} but ${holders[b]} live table(s) hold it (leak or double free)`,
      );
    }
  }

  private planAppend(table: BlockTable, n: number): { newBlocks: number; cow: boolean } {
    const bs = this.blockSize;
    if (n === 0) return { newBlocks: 0, cow: false };
    const t = table.numEntries - 1;
    let room = 0;
    let cow = false;
    if (t >= 0 && table.ends[t]! < bs) {
      if (table.ends[t] === this.frontier[table.blocks[t]!]) room = bs - table.ends[t]!;
      else {
        cow = true;
        room = bs - (table.ends[t]! - table.starts[t]!);
      }
    }
    return { newBlocks: (cow ? 1 : 0) + Math.ceil(Math.max(0, n - room) / bs), cow };
  }

  private dropRefs(ids: number[]): void {
    this.pool.decRef(ids);
    for (const b of ids) if (this.pool.refCount(b) === 0) this.frontier[b] = 0;
  }

  private checkLive(t: BlockTable, what: string): void {
    invariant(!t.released && this.live.has(t), () => `KVManager.${what}: table ${t.id} was released or belongs to another manager`);
  }
}
