/**
 * The NPR streaming parser: a token-by-token state machine over the *generated* tokens of one
 * response (the prompt is opaque, convention 6). At every token it knows the region (free text,
 * guideline, plan, the canonical gap between steps, step, takeaway, conclusion) and reports the
 * engine's events: a fork at `</guideline>` with the parsed plan numbers, a branch end at
 * `</step>`, a join at `<takeaway>`, and every malformed structure with a reason. The layout
 * builder, the response parser and the engine all run this one machine.
 * Tokens are strings; a token is a tag only when it equals one of the 8 tag strings exactly.
 * Knows nothing about ids, tokenizers, positions or tensors.
 *
 * Grammar (reference/npr.md §3.2 with the adopted conventions 4 and 5):
 *
 *   response   := free* block+ conclusion        free / conclusion: text without tags
 *   block      := <guideline> (text | plan)* </guideline> step{n} <takeaway> text </takeaway> free*
 *   plan       := <plan> text </plan>             n = number of plans, 1 <= n <= 5 (maxPlans)
 *   step       := <step> text </step>             no token between </guideline>, steps, <takeaway>
 */
import {
  GUIDELINE_CLOSE,
  GUIDELINE_OPEN,
  MAX_PLANS,
  PLAN_CLOSE,
  PLAN_OPEN,
  STEP_CLOSE,
  STEP_OPEN,
  TAKEAWAY_CLOSE,
  TAKEAWAY_OPEN,
  isNprTag,
  leadingNumber,
} from "./npr-tags.ts";

/**
 * Where the response is after the last pushed token.
 * - free: before the first block (text only);
 * - guideline: inside `<guideline>`, outside any plan;
 * - plan: inside `<plan>`;
 * - gap: after `</guideline>` or a `</step>`, where only `<step>` or `<takeaway>` may follow;
 * - step, takeaway: inside those tags;
 * - conclusion: after a `</takeaway>` (text; a `<guideline>` opens another block);
 * - malformed: a structure error happened (sticky).
 */
export type NprRegion = "free" | "guideline" | "plan" | "gap" | "step" | "takeaway" | "conclusion" | "malformed";

export type NprEvent =
  /** An ordinary token: text, or a tag that opens or closes nothing the engine acts on. */
  | { kind: "token"; region: NprRegion }
  /** `</guideline>`: fork into one branch per plan; `plans` holds each plan's number ("1", "2.1"). */
  | { kind: "fork"; plans: string[] }
  /** `</step>`: step `step` (0-based within the block) is complete. */
  | { kind: "branch-end"; step: number }
  /** `<takeaway>`: all `steps` steps are done; everything from here on sees them all. */
  | { kind: "join"; steps: number }
  /** The structure is broken; every later push repeats this event. */
  | { kind: "malformed"; reason: string };

export interface NprParserOptions {
  /**
   * Require every plan to start with a number "N:" (NPR's engine counts only numbered plans and
   * forces `<step>` + "N:" per plan). Default true; the layout builder, which works from the tag
   * structure alone, turns it off and uses plan ordinals.
   */
  requirePlanNumbers?: boolean;
  /**
   * Most plans a guideline may hold (default MAX_PLANS = 5, NPR's rule for sampled output; more
   * terminate the request as malformed). Only structure-forcing runs (benchmarks of B > 5
   * branches on random weights) raise it; it is never lowered below 1.
   */
  maxPlans?: number;
}

export class NprParser {
  private region: NprRegion = "free";
  private reason: string | null = null;
  private readonly requirePlanNumbers: boolean;
  private readonly maxPlans: number;
  /** Blocks opened so far (the current one included). */
  private blocks = 0;
  /** Plan numbers of the current block's guideline (ordinal strings when numbers are not required). */
  private plans: string[] = [];
  /** Text of the plan being read. */
  private planText = "";
  /** Steps of the current block that have been closed. */
  private stepsDone = 0;
  /** Tokens pushed so far. */
  private count = 0;
  /** Index (among pushed tokens) of the token that broke the structure, or -1. */
  private failedAt = -1;

  constructor(opts: NprParserOptions = {}) {
    this.requirePlanNumbers = opts.requirePlanNumbers ?? true;
    this.maxPlans = opts.maxPlans ?? MAX_PLANS;
    if (!(Number.isInteger(this.maxPlans) && this.maxPlans >= 1))
      throw new RangeError(`NprParser: maxPlans must be an integer >= 1, got ${opts.maxPlans}`);
  }

  /** The region after the last token. */
  get state(): NprRegion {
    return this.region;
  }

  /** The reason of the first structure error, or null. */
  get malformed(): string | null {
    return this.reason;
  }

  /** Index among the pushed tokens of the token that broke the structure, or -1. */
  get malformedAt(): number {
    return this.failedAt;
  }

  /** Blocks opened so far. */
  get blockCount(): number {
    return this.blocks;
  }

  /** Plan numbers of the current (or last) block. */
  get planNumbers(): readonly string[] {
    return this.plans;
  }

  /** Closed steps of the current block. */
  get stepsClosed(): number {
    return this.stepsDone;
  }

  /** Tokens pushed so far. */
  get tokens(): number {
    return this.count;
  }

  /** An independent copy (the engine clones the parent's parser for each branch). */
  clone(): NprParser {
    const p = new NprParser({ requirePlanNumbers: this.requirePlanNumbers, maxPlans: this.maxPlans });
    p.region = this.region;
    p.reason = this.reason;
    p.blocks = this.blocks;
    p.plans = [...this.plans];
    p.planText = this.planText;
    p.stepsDone = this.stepsDone;
    p.count = this.count;
    p.failedAt = this.failedAt;
    return p;
  }

  /**
   * A parser for branch `index` (0-based) of the fork this parser just reported: it expects that
   * branch's `<step>` next, as if the earlier siblings had already been serialized before it.
   */
  branch(index: number): NprParser {
    if (this.region !== "gap" || this.stepsDone !== 0 || index < 0 || index >= this.plans.length) {
      throw new RangeError(`NprParser.branch(${index}): not at a fork with more than ${index} plans (region ${this.region})`);
    }
    const p = this.clone();
    p.stepsDone = index;
    return p;
  }

  /** Feeds one token; returns what it means. */
  push(token: string): NprEvent {
    this.count++;
    if (this.reason !== null) return { kind: "malformed", reason: this.reason };
    const tag = isNprTag(token) ? token : null;
    switch (this.region) {
      case "free":
      case "conclusion":
        if (tag === null) return this.ok();
        if (tag === GUIDELINE_OPEN) {
          this.blocks++;
          this.plans = [];
          this.stepsDone = 0;
          return this.ok("guideline");
        }
        return this.fail(`${tag} outside a block (${this.where()}); a block opens with <guideline>`);
      case "guideline":
        if (tag === null) return this.ok();
        if (tag === PLAN_OPEN) {
          this.planText = "";
          return this.ok("plan");
        }
        if (tag === GUIDELINE_CLOSE) return this.closeGuideline();
        if (tag === GUIDELINE_OPEN) return this.fail(`nested <guideline> inside the guideline of block ${this.blocks}`);
        return this.fail(`${tag} inside the guideline of block ${this.blocks}, outside any plan`);
      case "plan":
        if (tag === null) {
          this.planText += token;
          return this.ok();
        }
        if (tag === PLAN_CLOSE) {
          const k = this.plans.length + 1;
          const num = leadingNumber(this.planText);
          if (num === null && this.requirePlanNumbers) {
            return this.fail(`plan ${k} of block ${this.blocks} does not start with a number "N:"`);
          }
          this.plans.push(num ?? String(k));
          return this.ok("guideline");
        }
        return this.fail(`${tag} inside plan ${this.plans.length + 1} of block ${this.blocks}`);
      case "gap":
        if (tag === STEP_OPEN) {
          if (this.stepsDone >= this.plans.length) {
            return this.fail(`step ${this.stepsDone + 1} in block ${this.blocks}, which has ${this.plans.length} plan(s)`);
          }
          return this.ok("step");
        }
        if (tag === TAKEAWAY_OPEN) {
          if (this.stepsDone !== this.plans.length) {
            return this.fail(`${this.stepsDone} step(s) for ${this.plans.length} plan(s) in block ${this.blocks}`);
          }
          this.region = "takeaway";
          return { kind: "join", steps: this.stepsDone };
        }
        if (tag === null) {
          const after = this.stepsDone === 0 ? "</guideline>" : `step ${this.stepsDone}'s </step>`;
          return this.fail(
            `text ${JSON.stringify(token)} after ${after} in block ${this.blocks}; the canonical form has no token between these tags`,
          );
        }
        return this.fail(
          `${tag} after ${this.stepsDone === 0 ? "</guideline>" : "</step>"} in block ${this.blocks}; expected <step> or <takeaway>`,
        );
      case "step":
        if (tag === null) return this.ok();
        if (tag === STEP_CLOSE) {
          const step = this.stepsDone++;
          this.region = "gap";
          return { kind: "branch-end", step };
        }
        if (tag === GUIDELINE_OPEN)
          return this.fail(`nested <guideline> inside step ${this.stepsDone + 1} of block ${this.blocks} (no nesting)`);
        return this.fail(`${tag} inside step ${this.stepsDone + 1} of block ${this.blocks}`);
      case "takeaway":
        if (tag === null) return this.ok();
        if (tag === TAKEAWAY_CLOSE) return this.ok("conclusion");
        return this.fail(`${tag} inside the takeaway of block ${this.blocks}`);
      case "malformed":
        return { kind: "malformed", reason: this.reason ?? "malformed" };
    }
  }

  /**
   * Why the response cannot end here, or null when it is complete: at least one block, and not
   * inside a guideline, plan, step gap, step or takeaway.
   */
  end(): string | null {
    if (this.reason !== null) return this.reason;
    switch (this.region) {
      case "free":
        return "no <guideline> block in the response";
      case "conclusion":
        return null;
      case "gap":
        return `block ${this.blocks} ends after ${this.stepsDone} of ${this.plans.length} step(s), without <takeaway>`;
      default:
        return `the response ends inside ${this.where()}`;
    }
  }

  private closeGuideline(): NprEvent {
    const n = this.plans.length;
    if (n === 0) return this.fail(`the guideline of block ${this.blocks} has no plan`);
    if (n > this.maxPlans) return this.fail(`the guideline of block ${this.blocks} has ${n} plans; at most ${this.maxPlans}`);
    this.region = "gap";
    this.stepsDone = 0;
    return { kind: "fork", plans: [...this.plans] };
  }

  private where(): string {
    switch (this.region) {
      case "free":
        return "the text before the first block";
      case "conclusion":
        return `the text after block ${this.blocks}`;
      case "guideline":
        return `the guideline of block ${this.blocks}`;
      case "plan":
        return `plan ${this.plans.length + 1} of block ${this.blocks}`;
      case "gap":
        return `the steps of block ${this.blocks}`;
      case "step":
        return `step ${this.stepsDone + 1} of block ${this.blocks}`;
      case "takeaway":
        return `the takeaway of block ${this.blocks}`;
      case "malformed":
        return "a malformed response";
    }
  }

  private ok(next?: NprRegion): NprEvent {
    if (next) this.region = next;
    return { kind: "token", region: this.region };
  }

  private fail(reason: string): NprEvent {
    this.reason = reason;
    this.failedAt = this.count - 1;
    this.region = "malformed";
    return { kind: "malformed", reason: this.reason };
  }
}
