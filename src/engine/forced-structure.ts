/**
 * The engine's view of the vocabulary (tag ids, stop ids, parser strings, the forced `N:` ids)
 * and the structure-forcing mode that lets random-weight models exercise forks: a spec such as
 * "3x16,2x8" (a block of 3 branches of 16 free tokens, then a block of 2 of 8) becomes, per
 * stream, a script of forced ids and free slots. Free slots sample among non-tag, non-stop ids,
 * so the structure is exactly the script's.
 * Knows token ids and tag strings; not sequences, scheduling or tensors.
 *
 *   root (trunk 0)  <guideline> (<plan> N : f f </plan>) x n </guideline>
 *   branch i        [engine: <step> N :] f x L </step>
 *   join b          [engine: <takeaway>] f f </takeaway> then trunk b+1, or f f f <eos>
 *   sequential      the same tokens serialized, with the engine's forced ones in the script
 */
import { MAX_PLANS, NPR_TAGS } from "../format/index.ts";
import type { NprTag } from "../format/index.ts";
import type { NprTokenizer } from "../tokenizer/index.ts";
import { UsageError } from "../util/index.ts";
import type { Rng } from "../util/index.ts";

export interface EngineVocab {
  readonly size: number;
  tag(t: NprTag): number;
  /** Ids that end a request (EOS, <|im_end|>). */
  readonly stopIds: ReadonlySet<number>;
  readonly tagIds: ReadonlySet<number>;
  /** The string the NPR parser reads for an id (tags exactly; see NprTokenizer.parserTokens). */
  parserToken(id: number): string;
  /** Ids of the forced "N:" after a branch's <step>. */
  numberIds(n: string): number[];
  decode(ids: readonly number[]): string;
}

/** An EngineVocab over an NprTokenizer (which must have the 8 tags). */
export function engineVocab(tok: NprTokenizer, modelVocab: number): EngineVocab {
  const tags = new Map<NprTag, number>(NPR_TAGS.map((t) => [t, tok.tagId(t)]));
  const stop = new Set<number>();
  for (const key of ["eos_token"]) {
    const id = tok.specialTokenId(key);
    if (id !== null) stop.add(id);
  }
  for (const name of ["<|im_end|>", "<|endoftext|>"]) {
    const id = tok.tokenToId(name);
    if (id !== undefined) stop.add(id);
  }
  const cache = new Map<number, string>();
  return {
    size: modelVocab,
    tag: (t) => tags.get(t)!,
    stopIds: stop,
    tagIds: new Set(tags.values()),
    parserToken(id) {
      let s = cache.get(id);
      if (s === undefined) {
        // Padded model rows beyond the tokenizer decode to nothing: plain text for the parser.
        s = id < tok.size ? tok.parserTokens([id])[0]! : "";
        cache.set(id, s);
      }
      return s;
    },
    numberIds: (n) => tok.encode(`${n}:`),
    decode: (ids) => tok.decode(ids.filter((i) => i < tok.size)),
  };
}

/** One block of a forced structure: `branches` steps of `length` free tokens each. */
export interface ForcedBlock {
  branches: number;
  length: number;
}

/** Most branches a forced block may have (NPR's own rule is MAX_PLANS = 5; see forcedMaxPlans). */
export const MAX_FORCED_BRANCHES = 64;

/**
 * "3x16,2x8" -> [{3, 16}, {2, 8}]; 1-`maxBranches` branches per block (default 64: wider than
 * NPR's 5, for benchmarks; run such a structure with maxPlans = forcedMaxPlans(structure)),
 * 1-4096 tokens per branch.
 */
export function parseForceStructure(spec: string, param = "--force-structure", maxBranches = MAX_FORCED_BRANCHES): ForcedBlock[] {
  const blocks = spec.split(",").map((part) => {
    const m = /^\s*(\d+)\s*x\s*(\d+)\s*$/.exec(part);
    const b = m ? Number(m[1]) : NaN;
    const l = m ? Number(m[2]) : NaN;
    if (!m || b < 1 || b > maxBranches || l < 1 || l > 4096) {
      throw new UsageError(`${param}: "${part}" is not BxL with 1 <= B <= ${maxBranches} branches and 1 <= L <= 4096 tokens`, {
        code: "bad_structure",
        param,
        hint: `for example ${param} "3x16,2x8"`,
      });
    }
    return { branches: b, length: l };
  });
  return blocks;
}

/**
 * The maxPlans a forced structure needs: NPR's MAX_PLANS (5), or its widest block when wider.
 * The parser's 1-5 rule stays the default for everything the model samples on its own.
 */
export function forcedMaxPlans(s: readonly ForcedBlock[] | null): number {
  return Math.max(MAX_PLANS, ...(s ?? []).map((b) => b.branches));
}

/** A seeded random structure: 1-3 blocks of 1-5 branches of 2-`maxLength` tokens. */
export function randomStructure(rng: Rng, maxLength = 12): ForcedBlock[] {
  const n = 1 + rng.int(3);
  return Array.from({ length: n }, () => ({ branches: 1 + rng.int(5), length: 2 + rng.int(Math.max(1, maxLength - 1)) }));
}

/** A script item: a forced id, or a free slot (sampled among allowed ids). */
export type ScriptItem = number | "free";

const FREE = "free" as const;

function trunk(v: EngineVocab, blk: ForcedBlock): ScriptItem[] {
  const out: ScriptItem[] = [v.tag("<guideline>")];
  for (let i = 1; i <= blk.branches; i++) out.push(v.tag("<plan>"), ...v.numberIds(String(i)), FREE, FREE, v.tag("</plan>"));
  out.push(v.tag("</guideline>"));
  return out;
}

function anyStop(v: EngineVocab): number {
  return [...v.stopIds][0]!;
}

/** Script of the root stream in parallel mode (everything up to the first fork). */
export function rootScript(v: EngineVocab, s: readonly ForcedBlock[]): ScriptItem[] {
  return trunk(v, s[0]!);
}

/** Script of a branch of block b after the engine's forced `<step>` + `N:`. */
export function branchScript(v: EngineVocab, s: readonly ForcedBlock[], b: number): ScriptItem[] {
  const L = s[b]?.length ?? 1;
  return [...Array<ScriptItem>(L).fill(FREE), v.tag("</step>")];
}

/** Script of block b's join after the engine's forced `<takeaway>`. */
export function joinScript(v: EngineVocab, s: readonly ForcedBlock[], b: number): ScriptItem[] {
  const out: ScriptItem[] = [FREE, FREE, v.tag("</takeaway>")];
  if (b + 1 < s.length) out.push(...trunk(v, s[b + 1]!));
  else out.push(FREE, FREE, FREE, anyStop(v));
  return out;
}

/** The whole serialized script, for sequential mode (the engine's forced tokens included). */
export function sequentialScript(v: EngineVocab, s: readonly ForcedBlock[]): ScriptItem[] {
  const out: ScriptItem[] = [];
  s.forEach((blk, b) => {
    if (b === 0) out.push(...trunk(v, blk));
    for (let i = 1; i <= blk.branches; i++) out.push(v.tag("<step>"), ...v.numberIds(String(i)), ...branchScript(v, s, b));
    out.push(v.tag("<takeaway>"), ...joinScript(v, s, b));
  });
  return out;
}
