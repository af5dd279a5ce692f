/**
 * Seeded pseudo-random numbers. Every random choice in npr takes an Rng built from a seed, so a
 * run with the same seed on the CPU backend gives the same result. The generator is
 * xoshiro128** seeded through splitmix32; normals come from Box-Muller.
 * This file knows nothing about tensors.
 */

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  // State lives in a typed array: uint32 values above 2^30 stored in object fields would be boxed
  // heap numbers, one allocation per draw (4x slower).
  private readonly s = new Uint32Array(4);
  private spareNormal: number | null = null;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new RangeError(`Rng seed must be a finite number, got ${seed}`);
    // Mix the high bits of large seeds in, so seeds differing only above 2^32 differ.
    const hi = Math.floor(seed / 4294967296) >>> 0;
    const sm = splitmix32((seed >>> 0) ^ Math.imul(hi, 0x27d4eb2d));
    const st = this.s;
    st[0] = sm();
    st[1] = sm();
    st[2] = sm();
    st[3] = sm();
    if ((st[0]! | st[1]! | st[2]! | st[3]!) === 0) st[0] = 1;
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const st = this.s;
    const s0 = st[0]!;
    const s1 = st[1]!;
    const s2 = st[2]! ^ s0;
    const s3 = st[3]! ^ s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    st[0] = s0 ^ s3;
    st[1] = s1 ^ s2;
    st[2] = s2 ^ (s1 << 9);
    st[3] = rotl(s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  next(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!(n >= 1)) throw new RangeError(`Rng.int needs n >= 1, got ${n}`);
    return Math.floor(this.next() * n);
  }

  /** Standard normal N(0, 1). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** A child generator whose stream is independent of this one's future draws. */
  fork(): Rng {
    return new Rng(this.nextU32() * 4096 + (this.nextU32() >>> 20));
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }

  /** Generator state, for checkpoints. */
  state(): number[] {
    return Array.from(this.s);
  }

  static fromState(state: readonly number[]): Rng {
    const r = new Rng(0);
    if (state.length !== 4) throw new RangeError(`Rng state needs 4 words, got ${state.length}`);
    r.s.set(state.map((x) => x >>> 0));
    return r;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
