/**
 * The scheduler: continuous batching over requests and their branches, NPR fork and join, and
 * budgets. It plans steps as plain data (StepPlan), the runner executes them, and apply() folds
 * the sampled tokens back in (vLLM v1 `schedule()` / `update_from_output()`).
 * Knows sequences, block tables (kv/), token ids, tags and the NPR parser; not tensors or pages.
 *
 * One progress variable per sequence: every sequence (root, branch, join) has `tokens` (known)
 * and `numComputed`; a step moves numComputed toward tokens.length within the step's token
 * budget. Prompt prefill (chunked), decode, a branch's forced `<step>` `N:` and a join's forced
 * `<takeaway>` are all "known but not computed" tokens, so they are one operation. A token is
 * sampled only when a step computes a sequence's last known token.
 *
 *   root    P P P P <guideline> ... </guideline>        -> fork (when </guideline> is computed)
 *   branch0 [shares root's blocks] <step> 1 : x x </step>   -> done (when </step> is computed)
 *   branch1 [shares root's blocks] <step> 2 : y </step>     -> done
 *   join    [branch0 table + branch1 from its own tokens] <takeaway> t ... <eos>
 *
 * Positions follow format/'s rule (stepStartPosition, takeawayPosition, nextPosition), the one
 * the trainer's layout (trajectoryLayout) is built from. Fork vs continue is decided when
 * </guideline> is sampled; the parent's table is released only after the children hold their
 * references. Preemption: when a step cannot get blocks and nothing else was scheduled, the most
 * recently admitted request is preempted: its tables are released and it is recomputed from its
 * prompt later with the same seeds (so the same result); a request that does not fit even alone
 * finishes with "no_kv".
 */
import { InvariantError, invariant } from "../util/index.ts";
import { Rng } from "../util/index.ts";
import { NprParser, nextPosition, stepStartPosition, takeawayPosition } from "../format/index.ts";
import type { BlockTable, KVManager } from "../kv/index.ts";
import type { SlotRanges } from "../model/index.ts";
import { budgetExhausted, mayFork } from "./budget.ts";
import type { BudgetState } from "./budget.ts";
import { streamSeed } from "./sampling/sampler.ts";
import type { Constraint } from "./sampling/sampler.ts";
import { branchScript, joinScript, rootScript, sequentialScript } from "./forced-structure.ts";
import type { EngineVocab, ScriptItem } from "./forced-structure.ts";
import type {
  EngineEvent,
  FinishReason,
  GenerateParams,
  GenerationResult,
  PlanItem,
  RequestStats,
  StepPlan,
  StepResult,
  TokenOrigin,
  TreeSpan,
} from "./types.ts";

interface Seq {
  id: number;
  req: Req;
  kind: "root" | "branch" | "join";
  /** Known tokens of the sequence's context, in table order (prompt included). */
  tokens: number[];
  positions: number[];
  logprobs: Array<number | null>;
  origins: TokenOrigin[];
  numComputed: number;
  table: BlockTable | null;
  parser: NprParser;
  /** What happens once every known token is computed. */
  after: "sample" | "fork" | "branch-end";
  pendingPlans: string[];
  /** Index in `tokens` where this sequence's own tokens start. */
  ownStart: number;
  block: number;
  branch: number;
  rng: Rng;
  penalty: number;
  script: ScriptItem[] | null;
  scriptPos: number;
  done: boolean;
}

interface Req {
  id: number;
  prompt: number[];
  params: GenerateParams;
  status: "waiting" | "running" | "finished";
  seqs: Seq[];
  /** Branches of the open block (null outside a block). */
  branches: Seq[] | null;
  /** Tokens the open block's branches share (parent context up to and including </guideline>). */
  inherited: number;
  spans: TreeSpan[];
  stats: RequestStats;
  startMs: number;
  result: GenerationResult | null;
}

export interface SchedulerOptions {
  /** Most tokens one step computes (prefill chunks + decodes). */
  maxBatchTokens: number;
  /** Most requests running at once. */
  maxRunningRequests: number;
}

function newStats(): RequestStats {
  return {
    serializedTokens: 0,
    criticalPathTokens: 0,
    blocks: 0,
    branchesPerBlock: [],
    depth: 0,
    forksDeclined: 0,
    preemptions: 0,
    wallMs: 0,
  };
}

export class Scheduler {
  private readonly kv: KVManager;
  private readonly vocab: EngineVocab;
  private readonly opts: SchedulerOptions;
  private readonly waiting: Req[] = [];
  private readonly running: Req[] = [];
  private readonly seqById = new Map<number, Seq>();
  private readonly reqById = new Map<number, Req>();
  private nextReqId = 0;
  private nextSeqId = 0;
  private rotate = 0;
  /**
   * Set by a preemption, cleared when a request finishes: no admissions meanwhile (except into
   * an empty batch), so a preempted request cannot come straight back and starve the one it made
   * room for (preemption thrash).
   */
  private admissionHold = false;
  /** Events since the last drain. */
  readonly events: EngineEvent[] = [];

  constructor(kv: KVManager, vocab: EngineVocab, opts: SchedulerOptions) {
    invariant(opts.maxBatchTokens >= 1 && opts.maxRunningRequests >= 1, "Scheduler: bad options");
    this.kv = kv;
    this.vocab = vocab;
    this.opts = opts;
  }

  add(prompt: readonly number[], params: GenerateParams): number {
    const id = this.nextReqId++;
    const req: Req = {
      id,
      prompt: [...prompt],
      params,
      status: "waiting",
      seqs: [],
      branches: null,
      inherited: 0,
      spans: [],
      stats: newStats(),
      startMs: performance.now(),
      result: null,
    };
    this.reqById.set(id, req);
    this.waiting.push(req);
    return id;
  }

  hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0;
  }

  result(reqId: number): GenerationResult | null {
    return this.reqById.get(reqId)?.result ?? null;
  }

  /** Ends a request now (finish reason "abort"); its blocks go back to the pool. */
  abort(reqId: number): void {
    const req = this.reqById.get(reqId);
    if (!req || req.status === "finished") return;
    this.finish(req, "abort", "aborted");
  }

  /** The next step: which tokens of which sequences to compute, into which slots. */
  plan(): StepPlan {
    this.admit();
    const items: PlanItem[] = [];
    const copies: StepPlan["copies"] = [];
    let budget = this.opts.maxBatchTokens;
    let blocked: Seq | null = null;
    const n = this.running.length;
    const order = Array.from({ length: n }, (_, i) => this.running[(i + this.rotate) % n]!);
    this.rotate++;
    outer: for (const req of order) {
      for (const seq of req.seqs) {
        if (seq.done || budget === 0) continue;
        const todo = Math.min(seq.tokens.length - seq.numComputed, budget);
        if (todo <= 0) continue;
        const r = this.kv.appendSlots(seq.table!, todo);
        if (!r.ok) {
          blocked = seq;
          break outer;
        }
        copies.push(...r.copies);
        const start = seq.numComputed;
        const last = start + todo === seq.tokens.length;
        items.push({
          seqId: seq.id,
          ids: seq.tokens.slice(start, start + todo),
          positions: seq.positions.slice(start, start + todo),
          writeSlots: r.slots,
          visible: rangesBefore(seq.table!, start),
          sample: last && seq.after === "sample" ? this.sampleSpec(seq) : null,
        });
        budget -= todo;
      }
    }
    if (items.length === 0 && blocked) {
      const victim = this.running[this.running.length - 1]!;
      if (this.running.length === 1) this.finish(victim, "no_kv", "the request does not fit in the KV pool");
      else this.preempt(victim);
    }
    return { items, copies, numTokens: this.opts.maxBatchTokens - budget };
  }

  /** Folds a step's results in: progress, sampled tokens, forks, branch ends, joins, finishes. */
  apply(plan: StepPlan, result: StepResult): void {
    invariant(result.sampled.length === plan.items.length, "apply: result does not match the plan");
    plan.items.forEach((item, i) => {
      const seq = this.seqById.get(item.seqId);
      if (!seq || seq.table === null || seq.req.status !== "running") return; // its request ended this step
      seq.numComputed += item.ids.length;
      invariant(seq.numComputed <= seq.tokens.length, "numComputed ran past the known tokens");
      const s = result.sampled[i];
      if (s) {
        invariant(item.sample !== null, "a token was sampled for an item that did not ask for one");
        this.onSampled(seq, s.id, s.logprob, item.sample.constraint.kind === "force" ? "script" : "sampled");
      } else if (seq.numComputed === seq.tokens.length) {
        if (seq.after === "fork") this.fork(seq);
        else if (seq.after === "branch-end") this.closeBranch(seq);
      }
    });
  }

  /** Live sequences and tables, for the fuzzer's leak check. */
  get numLiveSeqs(): number {
    return this.seqById.size;
  }

  // ---- admission and preemption

  private admit(): void {
    while (this.waiting.length > 0 && this.running.length < this.opts.maxRunningRequests) {
      const req = this.waiting[0]!;
      // Admit only when the prompt's blocks are free now (a running request may still need more).
      const need = Math.ceil((req.prompt.length + 1) / this.kv.blockSize);
      if (this.running.length > 0 && (this.admissionHold || this.kv.pool.numFree < need)) break;
      this.waiting.shift();
      this.start(req);
    }
  }

  private start(req: Req): void {
    const p = req.params;
    const P = req.prompt.length;
    const script = p.forceStructure
      ? p.mode === "sequential"
        ? sequentialScript(this.vocab, p.forceStructure)
        : rootScript(this.vocab, p.forceStructure)
      : null;
    const root = this.newSeq(req, {
      kind: "root",
      tokens: [...req.prompt],
      positions: Array.from({ length: P }, (_, i) => i),
      logprobs: Array(P).fill(null),
      origins: Array<TokenOrigin>(P).fill("engine"),
      numComputed: 0,
      table: this.kv.newTable(),
      parser: new NprParser({ maxPlans: p.maxPlans }),
      ownStart: P,
      block: -1,
      branch: 0,
      rng: new Rng(streamSeed(p.seed, -1, 0)),
      penalty: p.repetitionPenalty,
      script,
    });
    req.status = "running";
    req.seqs = [root];
    this.running.push(req);
  }

  private preempt(req: Req): void {
    this.releaseAll(req);
    req.status = "waiting";
    req.branches = null;
    req.spans = [];
    const preemptions = req.stats.preemptions + 1;
    req.stats = newStats();
    req.stats.preemptions = preemptions;
    this.running.splice(this.running.indexOf(req), 1);
    this.waiting.unshift(req);
    this.admissionHold = true;
    this.events.push({ type: "preempted", requestId: req.id });
  }

  private releaseAll(req: Req): void {
    for (const s of req.seqs) {
      if (s.table) this.kv.release(s.table);
      s.table = null;
      this.seqById.delete(s.id);
    }
    req.seqs = [];
  }

  // ---- sampling and the NPR policy

  private sampleSpec(seq: Seq): PlanItem["sample"] {
    const p = seq.req.params;
    let constraint: Constraint = { kind: "free" };
    if (seq.script) {
      const item = seq.script[seq.scriptPos] ?? "free";
      constraint = item === "free" ? { kind: "ban", ids: this.bannedInFree() } : { kind: "force", id: item };
    }
    const scope = seq.penalty === 1 ? [] : seq.tokens.slice(seq.kind === "branch" ? seq.ownStart : seq.req.prompt.length);
    return { params: p, rng: seq.rng, penaltyScope: scope, penalty: seq.penalty, constraint };
  }

  private banned: Set<number> | null = null;
  private bannedInFree(): Set<number> {
    this.banned ??= new Set([...this.vocab.tagIds, ...this.vocab.stopIds]);
    return this.banned;
  }

  private onSampled(seq: Seq, id: number, logprob: number, origin: TokenOrigin): void {
    const req = seq.req;
    const P = req.prompt.length;
    seq.tokens.push(id);
    seq.positions.push(nextPosition(seq.positions[seq.positions.length - 1]!));
    seq.logprobs.push(logprob);
    seq.origins.push(origin);
    seq.scriptPos++;
    this.events.push({ type: "token", requestId: req.id, seqId: seq.id, id });
    if (this.vocab.stopIds.has(id)) {
      if (seq.kind === "branch")
        this.finish(req, "malformed", `stop token inside step ${seq.branch + 1} of block ${seq.block + 1} (truncated)`);
      else this.finish(req, "stop", seq.parser.end());
      return;
    }
    const ev = seq.parser.push(this.vocab.parserToken(id));
    if (ev.kind === "malformed") {
      this.finish(req, "malformed", ev.reason);
      return;
    }
    const b = this.budgetOf(seq);
    if (budgetExhausted(b, req.params.maxNewTokens)) {
      if (seq.kind === "branch")
        this.finish(req, "length", `budget exhausted inside step ${seq.branch + 1} of block ${seq.block + 1} (truncated)`);
      else this.finish(req, "length", seq.parser.end());
      return;
    }
    if (req.params.mode === "parallel" && ev.kind === "fork") {
      const depth = seq.kind === "branch" ? 1 : 0;
      if (mayFork(b, req.params.maxNewTokens, req.params.minForkBudget, depth, req.params.maxDepth)) {
        seq.after = "fork";
        seq.pendingPlans = ev.plans;
      } else {
        // NOTE(engine): decoding goes on sequentially, as NPR's recovered GOAL requests do; the
        // block's layout then differs from the trainer's (documented in docs/engine.md).
        req.stats.forksDeclined++;
      }
    } else if (ev.kind === "branch-end" && seq.kind === "branch") {
      seq.after = "branch-end";
    }
  }

  private budgetOf(seq: Seq): BudgetState {
    const P = seq.req.prompt.length;
    const criticalPath = seq.positions[seq.positions.length - 1]! + 1 - P;
    if (seq.kind === "branch") {
      return {
        serializedBefore: seq.req.inherited - P,
        own: seq.tokens.length - seq.ownStart,
        degree: seq.req.branches!.length,
        criticalPath,
      };
    }
    return { serializedBefore: seq.tokens.length - P, own: 0, degree: 1, criticalPath };
  }

  /** </guideline> is computed: children take their references, then the parent lets go. */
  private fork(parent: Seq): void {
    const req = parent.req;
    const p = req.params;
    const plans = parent.pendingPlans;
    const block = req.stats.blocks++;
    req.stats.branchesPerBlock.push(plans.length);
    req.stats.depth = Math.max(req.stats.depth, 1);
    req.inherited = parent.tokens.length;
    const g = parent.positions[parent.positions.length - 1]!;
    const tables = this.kv.fork(parent.table!, plans.length);
    const children = plans.map((num, i) => {
      const child = this.newSeq(req, {
        kind: "branch",
        tokens: [...parent.tokens],
        positions: [...parent.positions],
        logprobs: [...parent.logprobs],
        origins: [...parent.origins],
        numComputed: parent.numComputed,
        table: tables[i]!,
        parser: parent.parser.branch(i),
        ownStart: parent.tokens.length,
        block,
        branch: i,
        rng: new Rng(streamSeed(p.seed, block, i)),
        penalty: p.branchRepetitionPenalty,
        script: p.forceStructure ? branchScript(this.vocab, p.forceStructure, block) : null,
      });
      this.pushForced(child, [this.vocab.tag("<step>"), ...this.vocab.numberIds(num)], stepStartPosition(g));
      return child;
    });
    this.kv.release(parent.table!);
    parent.table = null;
    this.seqById.delete(parent.id);
    req.seqs = children;
    req.branches = children;
    for (const c of children) this.events.push({ type: "branch-opened", requestId: req.id, seqId: c.id, block, branch: c.branch });
  }

  private closeBranch(seq: Seq): void {
    const req = seq.req;
    seq.done = true;
    this.events.push({
      type: "branch-closed",
      requestId: req.id,
      seqId: seq.id,
      block: seq.block,
      branch: seq.branch,
      tokens: seq.tokens.length - seq.ownStart,
    });
    if (req.branches!.every((b) => b.done)) this.join(req);
  }

  /** Every branch ended: one sequence over the merged table, no recomputation, then <takeaway>. */
  private join(req: Req): void {
    const p = req.params;
    const branches = req.branches!;
    const block = branches[0]!.block;
    const ser = this.serialize(req);
    const table = this.kv.join(
      branches.map((b) => b.table!),
      req.inherited,
    );
    // Every branch holds <step> through </step> past the shared prefix, whose last token is </guideline>.
    const g = branches[0]!.positions[req.inherited - 1]!;
    const longestStep = Math.max(...branches.map((b) => b.tokens.length - b.ownStart));
    const last = branches[branches.length - 1]!;
    const join = this.newSeq(req, {
      kind: "join",
      tokens: ser.tokens,
      positions: ser.positions,
      logprobs: ser.logprobs,
      origins: ser.origins,
      numComputed: ser.tokens.length,
      table,
      parser: last.parser.clone(),
      ownStart: ser.tokens.length,
      block,
      branch: -1,
      rng: new Rng(streamSeed(p.seed, block, -1)),
      penalty: p.repetitionPenalty,
      script: p.forceStructure ? joinScript(this.vocab, p.forceStructure, block) : null,
    });
    invariant(table.numTokens === join.tokens.length, () => `join: table holds ${table.numTokens} tokens, sequence ${join.tokens.length}`);
    this.releaseAll(req);
    this.seqById.set(join.id, join);
    req.seqs = [join];
    req.branches = null;
    this.pushForced(join, [this.vocab.tag("<takeaway>")], takeawayPosition(g, longestStep));
    this.events.push({ type: "joined", requestId: req.id, seqId: join.id, block });
    if (budgetExhausted(this.budgetOf(join), p.maxNewTokens)) this.finish(req, "length", join.parser.end());
  }

  /** Appends engine-forced tokens (known, not computed) at consecutive positions from `pos`. */
  private pushForced(seq: Seq, ids: number[], pos: number): void {
    for (const id of ids) {
      seq.tokens.push(id);
      seq.positions.push(pos);
      pos = nextPosition(pos);
      seq.logprobs.push(null);
      seq.origins.push("engine");
      const ev = seq.parser.push(this.vocab.parserToken(id));
      invariant(ev.kind !== "malformed", () => `forced token ${id} broke the structure: ${ev.kind === "malformed" ? ev.reason : ""}`);
    }
  }

  /** The serialized context: the trunk, or branch 0 whole + later branches' own tokens. */
  private serialize(req: Req): Pick<Seq, "tokens" | "positions" | "logprobs" | "origins"> {
    const P = req.prompt.length;
    if (!req.branches) {
      const s = req.seqs[0];
      if (!s)
        return {
          tokens: [...req.prompt],
          positions: req.prompt.map((_, i) => i),
          logprobs: req.prompt.map(() => null),
          origins: req.prompt.map(() => "engine"),
        };
      return { tokens: [...s.tokens], positions: [...s.positions], logprobs: [...s.logprobs], origins: [...s.origins] };
    }
    const out = { tokens: [] as number[], positions: [] as number[], logprobs: [] as Array<number | null>, origins: [] as TokenOrigin[] };
    req.branches.forEach((b, i) => {
      const from = i === 0 ? 0 : req.inherited;
      const start = (i === 0 ? req.inherited : out.tokens.length) - P;
      out.tokens.push(...b.tokens.slice(from));
      out.positions.push(...b.positions.slice(from));
      out.logprobs.push(...b.logprobs.slice(from));
      out.origins.push(...b.origins.slice(from));
      req.spans.push({ kind: "branch", block: b.block, branch: b.branch, start, end: out.tokens.length - P });
    });
    return out;
  }

  private finish(req: Req, reason: FinishReason, malformed: string | null): void {
    if (req.status === "finished") throw new InvariantError(`request ${req.id} finished twice`);
    const P = req.prompt.length;
    const ser = this.serialize(req);
    this.releaseAll(req);
    const ids = ser.tokens.slice(P);
    const tree = trunkSpans(req.spans, ids.length);
    const stats = req.stats;
    stats.serializedTokens = ids.length;
    stats.criticalPathTokens = ser.positions.length > P ? Math.max(...ser.positions.slice(P)) + 1 - P : 0;
    stats.wallMs = performance.now() - req.startMs;
    req.result = {
      requestId: req.id,
      promptIds: req.prompt,
      ids,
      logprobs: ser.logprobs.slice(P),
      origins: ser.origins.slice(P),
      positions: ser.positions.slice(P),
      text: this.vocab.decode(ids),
      finishReason: reason,
      malformed,
      tree,
      stats,
    };
    req.status = "finished";
    req.branches = null;
    this.admissionHold = false;
    const wi = this.waiting.indexOf(req);
    if (wi >= 0) this.waiting.splice(wi, 1);
    const ri = this.running.indexOf(req);
    if (ri >= 0) this.running.splice(ri, 1);
    this.events.push({ type: "finished", result: req.result });
  }

  private newSeq(req: Req, f: Omit<Seq, "id" | "req" | "after" | "pendingPlans" | "scriptPos" | "done">): Seq {
    const seq: Seq = { ...f, id: this.nextSeqId++, req, after: "sample", pendingPlans: [], scriptPos: 0, done: false };
    this.seqById.set(seq.id, seq);
    return seq;
  }
}

/** The table's slot ranges covering its first `tokens` tokens (what a step's new tokens see). */
export function rangesBefore(table: BlockTable, tokens: number): SlotRanges {
  const blocks: number[] = [];
  const starts: number[] = [];
  const ends: number[] = [];
  let left = tokens;
  for (let e = 0; e < table.numEntries && left > 0; e++) {
    const take = Math.min(left, table.ends[e]! - table.starts[e]!);
    blocks.push(table.blocks[e]!);
    starts.push(table.starts[e]!);
    ends.push(table.starts[e]! + take);
    left -= take;
  }
  return { blocks, starts, ends };
}

/** Branch spans plus the trunk spans between them, sorted. */
function trunkSpans(branches: TreeSpan[], length: number): TreeSpan[] {
  const out: TreeSpan[] = [];
  let at = 0;
  let block = 0;
  for (const s of [...branches].sort((a, b) => a.start - b.start)) {
    if (s.start > at) out.push({ kind: "trunk", block, branch: -1, start: at, end: s.start });
    out.push(s);
    at = s.end;
    block = s.block + 1;
  }
  if (length > at) out.push({ kind: "trunk", block, branch: -1, start: at, end: length });
  return out;
}
