/**
 * Work planning for the CPU attention kernels (attention.ts): query tokens cut into tiles, each
 * tile's key union and path (GEMM or row-wise) decided once per call, and for the backward the
 * bands of tiles whose key sets are disjoint, so each band's dk and dv can be summed on its own
 * thread. Plans are plain data: the backend passes them to worker threads as they are.
 *
 * It knows segment arrays only: no scores, no GEMM, no buffers.
 */

/** How many tiles each path ran (the backend turns these into counters). */
export interface AttentionStats {
  denseTiles: number;
  rowTiles: number;
}

export interface Tile {
  t0: number;
  t1: number;
  /**
   * The tile's keys: the union of its tokens' segments as sorted disjoint ranges, flattened to
   * [start, end, column] triples; column is where the range begins in the compacted key list.
   */
  ranges: Int32Array;
  /** Number of keys in the union: the width of the tile's dense score block. */
  span: number;
  dense: boolean;
}

const NO_RANGES = new Int32Array(0);

/** Splits [0, T) into tiles and decides each one's path from its density. */
export function planTiles(
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  T: number,
  o: { tile: number; minDensity: number; dense: boolean },
): Tile[] {
  const tiles: Tile[] = [];
  const step = Math.max(1, o.tile);
  for (let t0 = 0; t0 < T; t0 += step) {
    const t1 = Math.min(T, t0 + step);
    const segs: Array<[number, number]> = [];
    let visible = 0;
    for (let t = t0; t < t1; t++) {
      for (let sg = offsets[t]; sg < offsets[t + 1]; sg++) {
        if (ends[sg] > starts[sg]) segs.push([starts[sg], ends[sg]]);
        visible += ends[sg] - starts[sg];
      }
    }
    if (visible === 0) {
      tiles.push({ t0, t1, ranges: NO_RANGES, span: 0, dense: false });
      continue;
    }
    // Keys no token of the tile sees (sibling branches between a branch's prompt and its own
    // tokens) are left out of the dense block: a branch tile costs prompt + own branch only.
    segs.sort((a, b) => a[0] - b[0]);
    const merged: number[] = [];
    let span = 0;
    for (const [a, b] of segs) {
      const n = merged.length;
      if (n > 0 && a <= merged[n - 2]) {
        if (b > merged[n - 2]) {
          span += b - merged[n - 2];
          merged[n - 2] = b;
        }
      } else {
        merged.push(a, b, span);
        span += b - a;
      }
    }
    // A causal tile of 64 inside a 256-token sequence is 55-95% visible, a tile straddling two
    // packed sequences about half (the union skips nothing there), a branch tile much more than
    // its raw key span would suggest.
    const dense = o.dense && visible >= o.minDensity * (t1 - t0) * span;
    tiles.push({ t0, t1, ranges: Int32Array.from(merged), span, dense });
  }
  return tiles;
}

/** How many tiles take each path. */
export function tileStats(tiles: readonly Tile[]): AttentionStats {
  let denseTiles = 0;
  for (const t of tiles) if (t.dense) denseTiles++;
  return { denseTiles, rowTiles: tiles.length - denseTiles };
}

/**
 * A set of tiles whose keys no tile outside it sees: keys [k0, k1) get their dk and dv from these
 * tiles only, so bands (per kv head) are independent work items. A packed batch has one band per
 * sequence; tiles that all read one shared prompt make a single band.
 */
export interface Band {
  /** Indices into the tile list, ascending: the order every key's contributions are summed in. */
  tiles: number[];
  k0: number;
  k1: number;
}

/**
 * Groups tiles into bands by merging overlapping key extents ([first key, last key + 1) of each
 * tile's ranges). Tiles that see no key form a band of their own with no keys (they only zero dq).
 */
export function planBands(tiles: readonly Tile[]): Band[] {
  const keyless: number[] = [];
  const order: number[] = [];
  tiles.forEach((t, i) => (t.ranges.length === 0 ? keyless.push(i) : order.push(i)));
  const lo = (i: number) => tiles[i].ranges[0];
  const hi = (i: number) => tiles[i].ranges[tiles[i].ranges.length - 2];
  order.sort((a, b) => lo(a) - lo(b) || a - b);
  const bands: Band[] = [];
  for (const i of order) {
    const last = bands[bands.length - 1];
    if (last !== undefined && lo(i) < last.k1) {
      last.tiles.push(i);
      last.k1 = Math.max(last.k1, hi(i));
    } else {
      bands.push({ tiles: [i], k0: lo(i), k1: hi(i) });
    }
  }
  for (const b of bands) b.tiles.sort((x, y) => x - y);
  if (keyless.length > 0) bands.push({ tiles: keyless, k0: 0, k1: 0 });
  return bands;
}
