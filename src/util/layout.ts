/**
 * Attention layouts: for each query token, its RoPE position id and the key slots it may see,
 * as sorted half-open segments in CSR form, never a dense T x T mask. Plain data over typed
 * arrays, shared by every layer that builds a layout (the model's causal layout, the NPR layout
 * of format/) and every kernel that reads one (tensor/ attention on each backend).
 *
 * Key index space: the S keys an attention call sees, i.e. the cached tokens followed by the
 * T new tokens. Query token i sits at key index S - T + i.
 */

export interface Layout {
  /** T: number of query tokens. */
  readonly numTokens: number;
  /** S: number of key slots the segments index (past tokens + the T new ones). */
  readonly numKeys: number;
  /** [T] position id of each query token. */
  readonly positions: Int32Array;
  /** [T + 1] CSR offsets: token i's segments are segStarts/segEnds[segOffsets[i] .. segOffsets[i+1]). */
  readonly segOffsets: Int32Array;
  /** [numSegments] first key index of each segment (inclusive). */
  readonly segStarts: Int32Array;
  /** [numSegments] one past the last key index of each segment (exclusive). */
  readonly segEnds: Int32Array;
}

/**
 * Plain causal attention over `numTokens` new tokens after `past` cached ones: token i sees
 * keys [0, past + i + 1) and has position `positionOffset + i` (default: past + i).
 */
export function causalLayout(numTokens: number, past = 0, positionOffset = past): Layout {
  const T = numTokens;
  const positions = new Int32Array(T);
  const segOffsets = new Int32Array(T + 1);
  const segStarts = new Int32Array(T);
  const segEnds = new Int32Array(T);
  for (let i = 0; i < T; i++) {
    positions[i] = positionOffset + i;
    segOffsets[i + 1] = i + 1;
    segEnds[i] = past + i + 1;
  }
  return { numTokens: T, numKeys: past + T, positions, segOffsets, segStarts, segEnds };
}

/**
 * Several independent causal sequences packed into one row of tokens (no padding): token j of
 * sequence s sees only the earlier tokens of s, and positions restart at 0 for each sequence.
 */
export function packedCausalLayout(lengths: readonly number[]): Layout {
  const T = lengths.reduce((a, b) => a + b, 0);
  const positions = new Int32Array(T);
  const segOffsets = new Int32Array(T + 1);
  const segStarts = new Int32Array(T);
  const segEnds = new Int32Array(T);
  let i = 0;
  for (const len of lengths) {
    const start = i;
    for (let j = 0; j < len; j++, i++) {
      positions[i] = j;
      segOffsets[i + 1] = i + 1;
      segStarts[i] = start;
      segEnds[i] = i + 1;
    }
  }
  return { numTokens: T, numKeys: T, positions, segOffsets, segStarts, segEnds };
}

/**
 * A generic segment layout. `visible[i]` lists the half-open key ranges token i may see; ranges
 * are sorted and merged here, and the result is validated.
 */
export function segmentLayout(
  positions: ArrayLike<number>,
  visible: ReadonlyArray<ReadonlyArray<readonly [number, number]>>,
  numKeys = positions.length,
): Layout {
  const T = positions.length;
  if (visible.length !== T) {
    throw new RangeError(`segmentLayout: ${T} positions but ${visible.length} visibility lists`);
  }
  const starts: number[] = [];
  const ends: number[] = [];
  const segOffsets = new Int32Array(T + 1);
  for (let i = 0; i < T; i++) {
    const merged = mergeRanges(visible[i]!);
    for (const [s, e] of merged) {
      starts.push(s);
      ends.push(e);
    }
    segOffsets[i + 1] = starts.length;
  }
  const layout: Layout = {
    numTokens: T,
    numKeys,
    positions: Int32Array.from(positions),
    segOffsets,
    segStarts: Int32Array.from(starts),
    segEnds: Int32Array.from(ends),
  };
  const why = checkLayout(layout);
  if (why) throw new RangeError(`segmentLayout: ${why}`);
  return layout;
}

/** Sorts ranges and merges overlapping or touching ones; drops empty ranges. */
export function mergeRanges(ranges: ReadonlyArray<readonly [number, number]>): Array<[number, number]> {
  const sorted = ranges.filter(([s, e]) => e > s).map(([s, e]) => [s, e] as [number, number]);
  sorted.sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push(r);
  }
  return out;
}

/**
 * Returns why a layout is unusable, or null when it is well formed: segments sorted, disjoint,
 * inside [0, S); every token sees itself and nothing after itself.
 */
export function checkLayout(layout: Layout): string | null {
  const { numTokens: T, numKeys: S, segOffsets, segStarts, segEnds, positions } = layout;
  if (positions.length !== T) return `positions has ${positions.length} entries, expected ${T}`;
  if (segOffsets.length !== T + 1) return `segOffsets has ${segOffsets.length} entries, expected ${T + 1}`;
  if (S < T) return `numKeys ${S} is smaller than numTokens ${T}`;
  if (segOffsets[0] !== 0 || segOffsets[T] !== segStarts.length || segStarts.length !== segEnds.length) {
    return "segment arrays disagree with segOffsets";
  }
  const past = S - T;
  for (let i = 0; i < T; i++) {
    const self = past + i;
    let prevEnd = -1;
    let seesSelf = false;
    for (let s = segOffsets[i]!; s < segOffsets[i + 1]!; s++) {
      const a = segStarts[s]!;
      const b = segEnds[s]!;
      if (!(a < b)) return `token ${i}: empty segment [${a}, ${b})`;
      if (a < 0 || b > S) return `token ${i}: segment [${a}, ${b}) outside [0, ${S})`;
      if (a <= prevEnd) return `token ${i}: segments not sorted and disjoint`;
      if (b > self + 1) return `token ${i}: segment [${a}, ${b}) sees keys after the token itself`;
      if (a <= self && self < b) seesSelf = true;
      prevEnd = b;
    }
    if (!seesSelf) return `token ${i}: does not see itself (key ${self})`;
  }
  return null;
}

/** The ranges token i may see, as [start, end) pairs (for tests and the CLI). */
export function visibleRanges(layout: Layout, i: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let s = layout.segOffsets[i]!; s < layout.segOffsets[i + 1]!; s++) {
    out.push([layout.segStarts[s]!, layout.segEnds[s]!]);
  }
  return out;
}
