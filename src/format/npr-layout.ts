/**
 * The NPR layout: from (prompt length, token strings of prompt + response) to the position id of
 * every token and the key ranges it may see, as a util Layout that Qwen3Model.forward consumes.
 * trajectoryLayout (either mode) is the layout the trainer, the engine's oracle and `npr engine
 * verify` use, and stepStartPosition/takeawayPosition are the position rule the engine's scheduler
 * also follows (reference/npr.md, conventions 2-6, §4.3). Malformed input is rejected with a
 * reason, never laid out silently. Also the token-level whitespace canonicalization.
 * Knows token strings only (tags are their literal strings; ids only through a caller's tokenOf).
 *
 * Worked example (prompt `P <|im_end|> A`, two plans; step 2 is one token longer than step 1):
 *
 *   idx  0..10  P <|im_end|> A <guideline> <plan> 1:a </plan> <plan> 2:b </plan> </guideline>
 *   pos  0..10                                                                    g = 10
 *   idx  11..14 <step> 1: x </step>            pos 11..14   sees [0, 15)            (0..10 + own)
 *   idx  15..19 <step> 2: y z </step>          pos 11..15   sees [0, 11) + [15, i+1)
 *   idx  20     <takeaway>                     pos 16 = g + 1 + 5 (longest step: 5 tokens)
 *   idx  21..   t </takeaway> ans <|im_end|>   pos 17..     causal (sees every step)
 */
import type { Layout } from "../util/index.ts";
import { causalLayout, checkLayout } from "../util/index.ts";
import { invariant } from "../util/index.ts";
import { NprParser } from "./npr-parser.ts";
import { STEP_OPEN } from "./npr-tags.ts";

export interface NprLayoutOptions {
  /**
   * Lay out a response that stops mid-structure (inside a step, before `<takeaway>`, ...), as the
   * engine's naive reference generator does at every step. Default false: a trajectory that does
   * not end in its conclusion is rejected.
   */
  allowIncomplete?: boolean;
}

export type NprLayoutResult =
  | { ok: true; layout: Layout }
  /** `at`: index of the offending token (tokens.length when the response ends too early). */
  | { ok: false; why: string; at: number };

// ---- the position rule (one place: buildNprLayout and engine/scheduler.ts both call these)

/** Position of every `<step>` of a block whose `</guideline>` sits at position `g`: steps restart at g + 1. */
export function stepStartPosition(g: number): number {
  return g + 1;
}

/**
 * Position of the block's `<takeaway>`: one past the largest position any step used, where
 * `longestStep` counts the longest step's tokens from `<step>` through `</step>` (a step of n
 * tokens holds positions g + 1 .. g + n).
 */
export function takeawayPosition(g: number, longestStep: number): number {
  return stepStartPosition(g) + longestStep;
}

/** Any other token: one past the token before it in its sequence (prompt, guideline, takeaway, a step's body). */
export function nextPosition(previous: number): number {
  return previous + 1;
}

// ---- the trajectory layout (what the trainer, `npr engine verify` and the engine's oracle use)

/**
 * A trajectory: prompt + response as token strings, or as ids with `tokenOf` giving the string
 * the NPR parser reads for each (engine/forced-structure.ts EngineVocab.parserToken). format/ never
 * interprets an id itself.
 */
export type TrajectoryLayoutInput = {
  /** Prompt tokens at the front (opaque: tags in them are text). */
  promptLen: number;
  /** "parallel": the NPR layout (buildNprLayout); "sequential": causal, structure not checked. */
  mode: "parallel" | "sequential";
  /** See NprLayoutOptions.allowIncomplete (parallel mode only). */
  allowIncomplete?: boolean;
} & ({ tokens: readonly string[] } | { ids: ArrayLike<number>; tokenOf: (id: number) => string });

/**
 * The layout of one trajectory. Parallel mode lays it out as NPR does (buildNprLayout: steps
 * restart after their block's `</guideline>` and see only it and themselves) and rejects a
 * malformed one with the reason and token index; sequential mode (plain autoregressive decoding of
 * the same model, the baseline) is causal over every token, whatever the text holds.
 */
export function trajectoryLayout(input: TrajectoryLayoutInput): NprLayoutResult {
  const T = "tokens" in input ? input.tokens.length : input.ids.length;
  if (input.mode === "sequential") {
    invariant(
      Number.isInteger(input.promptLen) && input.promptLen >= 0 && input.promptLen <= T,
      () => `trajectoryLayout: prompt length ${input.promptLen} outside [0, ${T}]`,
    );
    return { ok: true, layout: causalLayout(T) };
  }
  const tokenAt = "tokens" in input ? (i: number) => input.tokens[i]! : (i: number) => input.tokenOf(input.ids[i]!);
  return layoutParallel(input.promptLen, T, tokenAt, input.allowIncomplete ?? false);
}

/**
 * Lays out `tokens` (prompt first: its `promptLen` tokens are opaque, tags in them are text).
 *
 * Positions: one per token in order, except that every `<step>` restarts at g + 1 (g = position
 * of its block's `</guideline>`) and `<takeaway>` gets g + 1 + (longest step of the block, in
 * tokens from `<step>` through `</step>`), i.e. one past the largest position any step used.
 * Visibility: a step token sees keys [0, its block's `</guideline>` + 1) plus its own step up to
 * itself; every other token (prompt, guideline, takeaway, conclusion, text between blocks) sees
 * every earlier token and itself.
 */
export function buildNprLayout(promptLen: number, tokens: readonly string[], opts: NprLayoutOptions = {}): NprLayoutResult {
  return layoutParallel(promptLen, tokens.length, (i) => tokens[i]!, opts.allowIncomplete ?? false);
}

/** buildNprLayout over T tokens read through `tokenAt` (strings or mapped ids, read once each in order). */
function layoutParallel(promptLen: number, T: number, tokenAt: (i: number) => string, allowIncomplete: boolean): NprLayoutResult {
  invariant(
    Number.isInteger(promptLen) && promptLen >= 0 && promptLen <= T,
    () => `buildNprLayout: prompt length ${promptLen} outside [0, ${T}]`,
  );
  const positions = new Int32Array(T); // [T]
  const segOffsets = new Int32Array(T + 1); // [T + 1]
  // At most two segments per token: the block prefix and the token's own step.
  const segStarts = new Int32Array(2 * T);
  const segEnds = new Int32Array(2 * T);
  let nseg = 0;
  const causal = (i: number) => {
    segStarts[nseg] = 0;
    segEnds[nseg++] = i + 1;
  };

  for (let i = 0; i < promptLen; i++) {
    positions[i] = i;
    causal(i);
    segOffsets[i + 1] = nseg;
  }

  const parser = new NprParser({ requirePlanNumbers: false });
  let next = promptLen; // position of the next ordinary token
  let g = -1; // position of the current block's </guideline>
  let prefixEnd = -1; // key index one past the current block's </guideline>
  let stepStart = -1; // key index of the current step's <step>
  let longest = 0; // longest step of the current block, in tokens

  for (let i = promptLen; i < T; i++) {
    const tok = tokenAt(i);
    const ev = parser.push(tok);
    if (ev.kind === "malformed") return { ok: false, why: `token ${i}: ${ev.reason}`, at: i };
    const inStep = ev.kind === "branch-end" || (ev.kind === "token" && ev.region === "step");
    if (ev.kind === "fork") {
      g = next;
      prefixEnd = i + 1;
      longest = 0;
      positions[i] = next;
    } else if (ev.kind === "join") {
      positions[i] = takeawayPosition(g, longest);
    } else if (inStep) {
      if (tok === STEP_OPEN) {
        stepStart = i;
        next = stepStartPosition(g);
      }
      positions[i] = next;
      if (ev.kind === "branch-end") longest = Math.max(longest, i - stepStart + 1);
    } else {
      positions[i] = next;
    }
    next = nextPosition(positions[i]!);
    if (inStep && stepStart > prefixEnd) {
      segStarts[nseg] = 0;
      segEnds[nseg++] = prefixEnd;
      segStarts[nseg] = stepStart;
      segEnds[nseg++] = i + 1;
    } else {
      // The first step starts right after </guideline>: its two ranges touch and merge.
      causal(i);
    }
    segOffsets[i + 1] = nseg;
  }
  if (!allowIncomplete) {
    const why = parser.end();
    if (why !== null) return { ok: false, why: `token ${T}: ${why}`, at: T };
  }
  const layout: Layout = {
    numTokens: T,
    numKeys: T,
    positions,
    segOffsets,
    segStarts: segStarts.slice(0, nseg),
    segEnds: segEnds.slice(0, nseg),
  };
  const bad = checkLayout(layout);
  invariant(bad === null, () => `buildNprLayout produced a bad layout: ${bad}`);
  return { ok: true, layout };
}

/** The JSON form `npr format layout` prints: positions and each token's merged visible ranges. */
export function layoutToJson(layout: Layout): { positions: number[]; visible: Array<Array<[number, number]>> } {
  const visible: Array<Array<[number, number]>> = [];
  for (let i = 0; i < layout.numTokens; i++) {
    const ranges: Array<[number, number]> = [];
    for (let s = layout.segOffsets[i]!; s < layout.segOffsets[i + 1]!; s++) {
      const a = layout.segStarts[s]!;
      const b = layout.segEnds[s]!;
      const last = ranges[ranges.length - 1];
      if (last && a <= last[1]) last[1] = Math.max(last[1], b);
      else ranges.push([a, b]);
    }
    visible.push(ranges);
  }
  return { positions: Array.from(layout.positions), visible };
}

/**
 * Canonical form at the token level (convention 4): drops whitespace-only tokens between
 * `</guideline>` and the first `<step>`, between steps, and between the last `</step>` and
 * `<takeaway>`, so a sampled sequence becomes what the engine would have produced. Returns the
 * kept tokens and their indices in the input; anything else is left as it is (a structure error
 * stays for buildNprLayout to report).
 */
export function canonicalizeTokens(promptLen: number, tokens: readonly string[]): { tokens: string[]; kept: number[] } {
  const out: string[] = [];
  const kept: number[] = [];
  const parser = new NprParser({ requirePlanNumbers: false });
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    if (i >= promptLen) {
      if (parser.state === "gap" && tok.trim() === "") continue;
      parser.push(tok);
    }
    out.push(tok);
    kept.push(i);
  }
  return { tokens: out, kept };
}
