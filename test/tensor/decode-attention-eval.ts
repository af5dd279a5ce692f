/**
 * A float64 evaluation of a packed decode attention plan (src/tensor/backend/decode-attention-plan.ts),
 * written from the kernels' algorithm (decode-attention.cu): per item, every row of its mask and every
 * query head against the item's keys (max, sum of exp, weighted values), then per row the combine
 * of its partials in the row's slot order (the plan's completion counters must be 0, as the kernel
 * needs them). The planner test checks it against direct softmax attention; the graph decode test
 * uses it as a CPU stand-in for the CUDA op, so the engine's per-step planning, capacity growth
 * and padding rows run in CI. Test helper only.
 */
import type { PlanLayout } from "../../src/tensor/backend/decode-attention-plan.ts";

/** The kernels' algorithm on the packed i32 plan, in float64: partials per (item, row, head), then combine. */
export function evalPacked(
  buf: Int32Array,
  lay: PlanLayout,
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  H: number,
  Hkv: number,
  D: number,
  scale: number,
) {
  const B = lay.rows;
  // The kernel counts blocks in on the plan's tail and needs it 0 at launch (packPlan writes it so).
  for (let i = lay.counters; i < lay.length; i++) {
    if (buf[i] !== 0)
      throw new Error(`evalPacked: completion counter ${i - lay.counters} is ${buf[i]}, the kernel needs 0 (packPlan writes 0)`);
  }
  const G = H / Hkv;
  const Pc = lay.capacity.partials;
  const pm = new Float64Array(Pc * H);
  const pl = new Float64Array(Pc * H);
  const pacc = new Float64Array(Pc * H * D);
  for (let it = 0; it < buf[lay.numItems]; it++) {
    const mask = buf[lay.mask + it] >>> 0;
    const slots: number[] = [];
    for (let r = buf[lay.rangeOff + it]; r < buf[lay.rangeOff + it + 1]; r++) {
      for (let x = buf[lay.starts + r]; x < buf[lay.ends + r]; x++) slots.push(x);
    }
    let rank = 0;
    for (let row = 0; row < B; row++) {
      if (!((mask >>> row) & 1)) continue;
      const ps = buf[lay.pbase + it] + rank++;
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / G);
        const sc = slots.map((x) => {
          let d = 0;
          for (let i = 0; i < D; i++) d += q[(row * H + h) * D + i] * k[(x * Hkv + g) * D + i];
          return d * scale;
        });
        const m = Math.max(...sc);
        pm[ps * H + h] = m;
        pl[ps * H + h] = sc.reduce((a, s) => a + Math.exp(s - m), 0);
        for (let i = 0; i < D; i++) {
          let a = 0;
          slots.forEach((x, j) => (a += Math.exp(sc[j] - m) * v[(x * Hkv + g) * D + i]));
          pacc[(ps * H + h) * D + i] = a;
        }
      }
    }
  }
  const out = new Float64Array(B * H * D);
  const lse = new Float64Array(B * H).fill(-Infinity);
  for (let row = 0; row < B; row++) {
    const list = Array.from(buf.subarray(lay.rowSlots + buf[lay.rowOff + row], lay.rowSlots + buf[lay.rowOff + row + 1]));
    if (!list.length) continue;
    for (let h = 0; h < H; h++) {
      const M = Math.max(...list.map((s) => pm[s * H + h]));
      const w = list.map((s) => Math.exp(pm[s * H + h] - M));
      const L = list.reduce((a, s, j) => a + w[j] * pl[s * H + h], 0);
      for (let i = 0; i < D; i++) out[(row * H + h) * D + i] = list.reduce((a, s, j) => a + w[j] * pacc[(s * H + h) * D + i], 0) / L;
      lse[row * H + h] = M + Math.log(L);
    }
  }
  return { out, lse };
}
