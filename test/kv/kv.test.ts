/**
 * kv/: exact block ids, refcounts and free-list order on a 10-block pool of 4-slot blocks through
 * append, fork (shared prefix, in-place extension by the first writer, copy-on-write for the
 * others), join and release; out-of-blocks as a value; double free as an InvariantError; and
 * seeded random walks of thousands of operations with assertConsistent() after each, checked
 * against an independent model of what each table must contain (slot ids per token).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { BlockPool, KVManager } from "../../src/kv/index.ts";
import type { BlockTable } from "../../src/kv/index.ts";
import { InvariantError } from "../../src/util/errors.ts";
import { Rng } from "../../src/util/rng.ts";

const entries = (t: BlockTable) => t.blocks.map((b, e) => `${b}:${t.starts[e]}-${t.ends[e]}`).join(" ");

test("pool: null block, allocation from the head, frees appended at the tail", () => {
  const p = new BlockPool(6);
  assert.deepEqual(p.freeList(), [1, 2, 3, 4, 5]);
  assert.deepEqual(p.allocate(3), [1, 2, 3]);
  assert.equal(p.allocate(3), null, "short pool returns null");
  assert.deepEqual(p.freeList(), [4, 5], "a refused allocate changes nothing");
  p.incRef([2]);
  p.decRef([3, 2, 1]);
  assert.deepEqual(p.freeList(), [4, 5, 3, 1]);
  assert.equal(p.refCount(2), 1);
  assert.throws(() => p.decRef([3]), InvariantError, "double free");
  assert.throws(() => p.decRef([2, 2]), InvariantError, "two drops on a count of one");
  assert.equal(p.refCount(2), 1, "a refused decRef changes nothing");
  assert.throws(() => p.incRef([0]), InvariantError, "null block");
  p.assertConsistent();
  assert.equal(p.numFree + p.numUsed, 5);
});

test("manager: append, fork with copy-on-write, join, release (exact ids)", () => {
  const m = new KVManager(10, 4);
  const root = m.newTable();
  const a = m.appendSlots(root, 10);
  assert.ok(a.ok);
  assert.deepEqual(Array.from(a.slots), [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
  assert.equal(entries(root), "1:0-4 2:0-4 3:0-2");
  const [c0, c1] = m.fork(root, 2) as [BlockTable, BlockTable];
  assert.deepEqual(
    [1, 2, 3].map((b) => m.pool.refCount(b)),
    [3, 3, 3],
  );
  m.release(root); // the parent's reference goes once the children hold theirs
  assert.deepEqual(
    [1, 2, 3].map((b) => m.pool.refCount(b)),
    [2, 2, 2],
  );
  // Child 0 owns block 3's frontier: extends in place, then takes block 4.
  const r0 = m.appendSlots(c0, 3);
  assert.ok(r0.ok);
  assert.deepEqual(Array.from(r0.slots), [14, 15, 16]);
  assert.deepEqual(r0.copies, []);
  assert.equal(entries(c0), "1:0-4 2:0-4 3:0-4 4:0-1");
  // Child 1's tail ends at 2 but block 3 was written to 4: copy its 2 rows into block 5.
  const r1 = m.appendSlots(c1, 2);
  assert.ok(r1.ok);
  assert.deepEqual(r1.copies, [{ srcBlock: 3, srcStart: 0, dstBlock: 5, dstStart: 0, count: 2 }]);
  assert.deepEqual(Array.from(r1.slots), [22, 23]);
  assert.equal(entries(c1), "1:0-4 2:0-4 5:0-4");
  assert.equal(m.pool.refCount(3), 1);
  m.assertConsistent();
  const j = m.join([c0, c1], 10);
  assert.equal(entries(j), "1:0-4 2:0-4 3:0-4 4:0-1 5:2-4", "child 1 contributes only its own 2 tokens");
  assert.equal(j.numTokens, 15);
  m.release(c0);
  m.release(c1);
  m.assertConsistent();
  assert.deepEqual(
    [1, 2, 3, 4, 5].map((b) => m.pool.refCount(b)),
    [1, 1, 1, 1, 1],
  );
  // The join's tail (block 5, written to 4) is full: the next token takes a fresh block.
  const rj = m.appendSlots(j, 1);
  assert.ok(rj.ok);
  assert.deepEqual(Array.from(rj.slots), [24]);
  m.release(j);
  assert.deepEqual(m.pool.freeList(), [7, 8, 9, 6, 5, 4, 3, 2, 1], "tail blocks freed first");
  assert.throws(() => m.release(j), InvariantError);
  assert.equal(m.doubleFrees, 1);
  m.assertConsistent();
});

test("manager: out of blocks is a value and changes nothing", () => {
  const m = new KVManager(4, 4); // 3 usable blocks
  const t = m.newTable();
  assert.ok(m.appendSlots(t, 9).ok);
  const r = m.appendSlots(t, 4);
  assert.equal(r.ok, false);
  if (!r.ok) assert.equal(r.blocksNeeded, 1);
  assert.equal(t.numTokens, 9);
  assert.ok(m.appendSlots(t, 3).ok, "the tail still has room for 3");
  m.assertConsistent();
});

test("manager: seeded random walks keep pool and tables consistent", () => {
  for (let seed = 1; seed <= 4; seed++) {
    const rng = new Rng(seed);
    const bs = 1 + rng.int(5);
    const m = new KVManager(6 + rng.int(40), bs);
    // Independent model: the slot ids each live table must list, token by token.
    const expect = new Map<BlockTable, number[]>();
    let ops = 0;
    let refused = 0;
    for (let step = 0; step < 2500; step++) {
      const tables = [...expect.keys()];
      const pick = () => tables[rng.int(tables.length)]!;
      const r = rng.next();
      if (tables.length === 0 || r < 0.15) {
        const t = m.newTable();
        expect.set(t, []);
      } else if (r < 0.55) {
        const t = pick();
        const n = 1 + rng.int(2 * bs + 1);
        const res = m.appendSlots(t, n);
        if (!res.ok) {
          refused++;
        } else {
          // Copies move this table's own tail rows; remap them like the model would.
          const slots = expect.get(t)!;
          for (const c of res.copies) {
            for (let i = 0; i < c.count; i++) {
              const from = c.srcBlock * bs + c.srcStart + i;
              const k = slots.lastIndexOf(from);
              assert.ok(k >= 0, "a copy moves a slot the table holds");
              slots[k] = c.dstBlock * bs + c.dstStart + i;
            }
          }
          slots.push(...res.slots);
        }
      } else if (r < 0.7) {
        const t = pick();
        const kids = m.fork(t, 1 + rng.int(4));
        for (const k of kids) expect.set(k, [...expect.get(t)!]);
        if (rng.next() < 0.5) {
          m.release(t);
          expect.delete(t);
        }
      } else if (r < 0.8 && tables.length >= 2) {
        // Join siblings: build them as a fork of one table plus appends.
        const t = pick();
        const inherited = t.numTokens;
        const kids = m.fork(t, 2 + rng.int(3));
        const want: number[] = [...expect.get(t)!];
        for (const k of kids) expect.set(k, [...expect.get(t)!]);
        let ok = true;
        for (const k of kids) {
          const res = m.appendSlots(k, 1 + rng.int(2 * bs));
          if (!res.ok) {
            ok = false;
            break;
          }
          const slots = expect.get(k)!;
          for (const c of res.copies) {
            for (let i = 0; i < c.count; i++) slots[slots.lastIndexOf(c.srcBlock * bs + c.srcStart + i)] = c.dstBlock * bs + c.dstStart + i;
          }
          slots.push(...res.slots);
        }
        if (ok) {
          kids.forEach((k, i) =>
            want.splice(i === 0 ? 0 : want.length, i === 0 ? want.length : 0, ...expect.get(k)!.slice(i === 0 ? 0 : inherited)),
          );
          const j = m.join(kids, inherited);
          expect.set(j, want);
        }
        for (const k of kids) {
          m.release(k);
          expect.delete(k);
        }
      } else {
        const t = pick();
        m.release(t);
        expect.delete(t);
      }
      ops++;
      m.assertConsistent();
      for (const [t, slots] of expect) assert.deepEqual(Array.from(t.slots(bs)), slots, `table ${t.id} slots`);
    }
    for (const t of expect.keys()) m.release(t);
    m.assertConsistent();
    assert.equal(m.pool.numFree, m.pool.numBlocks - 1, "no leak after releasing everything");
    console.log(`seed ${seed}: ${ops} ops, ${refused} refused appends, block size ${bs}, pool ${m.pool.numBlocks}`);
  }
});
