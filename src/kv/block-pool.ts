/**
 * BlockPool: integer KV block ids with reference counts and a free list threaded through the
 * blocks (vLLM v1 `KVCacheBlock` + `FreeKVCacheBlockQueue` + `BlockPool`). Block 0 is the null
 * block: never handed out, never freed, so 0 can mean "no block" in tables and tests.
 * Knows ids and counts only: the pages of keys and values live in model/ (paged-kv.ts), and
 * which tokens sit in which slots lives in block tables (kv-manager.ts).
 *
 *   free list (head -> tail):  [1] <-> [2] <-> [3] <-> ... <-> [N-1]
 *   allocate(n): pops n from the head (lowest ids first on a fresh pool)
 *   decRef to 0: appends at the tail, so recently freed blocks are reused last
 */
import { InvariantError, invariant } from "../util/index.ts";

/** The reserved block id that is never allocated. */
export const NULL_BLOCK = 0;

/** Sentinel for "no neighbour" in the free-list links. */
const NONE = -1;

export class BlockPool {
  /** Total block ids, the null block included. */
  readonly numBlocks: number;
  /** [numBlocks] references held on each block (0 = free; the null block stays 0). */
  private readonly refCounts: Int32Array;
  /** [numBlocks] free-list links; NONE at the ends and for blocks not in the list. */
  private readonly prevFree: Int32Array;
  private readonly nextFree: Int32Array;
  /** [numBlocks] 1 when the block is in the free list (O(1) membership checks). */
  private readonly inFreeList: Uint8Array;
  private head = NONE;
  private tail = NONE;
  private numFreeBlocks = 0;

  constructor(numBlocks: number) {
    invariant(
      Number.isInteger(numBlocks) && numBlocks >= 2,
      () => `BlockPool: need at least 2 blocks (the null block and one usable), got ${numBlocks}`,
    );
    this.numBlocks = numBlocks;
    this.refCounts = new Int32Array(numBlocks);
    this.prevFree = new Int32Array(numBlocks).fill(NONE);
    this.nextFree = new Int32Array(numBlocks).fill(NONE);
    this.inFreeList = new Uint8Array(numBlocks);
    for (let id = 1; id < numBlocks; id++) this.pushTail(id);
  }

  /** Blocks that can be allocated now. */
  get numFree(): number {
    return this.numFreeBlocks;
  }

  /** Blocks held by at least one reference (the null block is neither free nor used). */
  get numUsed(): number {
    return this.numBlocks - 1 - this.numFreeBlocks;
  }

  refCount(id: number): number {
    this.checkId(id, "refCount");
    return this.refCounts[id]!;
  }

  /**
   * `n` fresh blocks from the head of the free list, each with refCount 1, or null when fewer
   * than `n` are free ("not now": the scheduler queues or preempts). Nothing changes on null.
   */
  allocate(n: number): number[] | null {
    invariant(Number.isInteger(n) && n >= 0, () => `BlockPool.allocate(${n})`);
    if (n > this.numFreeBlocks) return null;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const id = this.head;
      this.unlink(id);
      this.refCounts[id] = 1;
      out.push(id);
    }
    return out;
  }

  /** One more reference on each block (a fork or a join sharing it). */
  incRef(ids: Iterable<number>): void {
    for (const id of ids) {
      this.checkId(id, "incRef");
      invariant(this.refCounts[id]! > 0, () => `BlockPool.incRef: block ${id} is free; sharing a freed block is a use-after-free`);
      this.refCounts[id]!++;
    }
  }

  /**
   * Drops one reference on each block, in the order given; a block whose count reaches zero is
   * appended to the free list. Dropping a reference on a free block is a double free: a bug
   * (NPR reference §5.3), reported as an InvariantError before anything changes.
   */
  decRef(ids: readonly number[]): void {
    const drops = new Map<number, number>();
    for (const id of ids) {
      this.checkId(id, "decRef");
      drops.set(id, (drops.get(id) ?? 0) + 1);
    }
    for (const [id, k] of drops) {
      if (this.refCounts[id]! < k) {
        throw new InvariantError(`BlockPool.decRef: double free of block ${id} (refCount ${this.refCounts[id]}, ${k} release(s) asked)`);
      }
    }
    for (const id of ids) {
      if (--this.refCounts[id]! === 0) this.pushTail(id);
    }
  }

  /** The free list from head to tail (for tests and debugging). */
  freeList(): number[] {
    const out: number[] = [];
    for (let id = this.head; id !== NONE; id = this.nextFree[id]!) out.push(id);
    return out;
  }

  /**
   * Checks the pool's own invariants: the free list is well linked, holds exactly the blocks with
   * refCount 0 (the null block excluded), once each; free + used + null = total.
   */
  assertConsistent(): void {
    let count = 0;
    let prev = NONE;
    const seen = new Uint8Array(this.numBlocks);
    for (let id = this.head; id !== NONE; id = this.nextFree[id]!) {
      invariant(id > 0 && id < this.numBlocks, () => `free list holds bad id ${id}`);
      invariant(!seen[id], () => `free list holds block ${id} twice`);
      seen[id] = 1;
      invariant(this.prevFree[id] === prev, () => `free list link broken at block ${id}`);
      invariant(this.refCounts[id] === 0, () => `block ${id} is in the free list with refCount ${this.refCounts[id]}`);
      invariant(this.inFreeList[id] === 1, () => `block ${id} is in the free list but not marked`);
      prev = id;
      count++;
    }
    invariant(prev === this.tail, "free list tail pointer is stale");
    invariant(count === this.numFreeBlocks, () => `free list has ${count} blocks, counter says ${this.numFreeBlocks}`);
    invariant(this.refCounts[NULL_BLOCK] === 0 && !seen[NULL_BLOCK], "the null block was used");
    for (let id = 1; id < this.numBlocks; id++) {
      invariant(this.refCounts[id]! >= 0, () => `block ${id} has negative refCount`);
      invariant(
        (this.refCounts[id] === 0) === (seen[id] === 1),
        () => `block ${id} has refCount ${this.refCounts[id]} but is ${seen[id] ? "" : "not "}in the free list`,
      );
    }
  }

  private checkId(id: number, what: string): void {
    invariant(
      Number.isInteger(id) && id > 0 && id < this.numBlocks,
      () => `BlockPool.${what}: bad block id ${id} (valid: 1..${this.numBlocks - 1}; 0 is the null block)`,
    );
  }

  private pushTail(id: number): void {
    this.prevFree[id] = this.tail;
    this.nextFree[id] = NONE;
    if (this.tail === NONE) this.head = id;
    else this.nextFree[this.tail] = id;
    this.tail = id;
    this.inFreeList[id] = 1;
    this.numFreeBlocks++;
  }

  private unlink(id: number): void {
    const p = this.prevFree[id]!;
    const n = this.nextFree[id]!;
    if (p === NONE) this.head = n;
    else this.nextFree[p] = n;
    if (n === NONE) this.tail = p;
    else this.prevFree[n] = p;
    this.prevFree[id] = NONE;
    this.nextFree[id] = NONE;
    this.inFreeList[id] = 0;
    this.numFreeBlocks--;
  }
}
