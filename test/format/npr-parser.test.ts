/**
 * The streaming parser (src/format/npr-parser.ts) token by token: regions, the fork / branch-end /
 * join events the engine acts on, branch parsers, and one case per malformed structure with its
 * reason. Also the text-level response parser and canonicalization (npr-response.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { NprParser, type NprEvent } from "../../src/format/npr-parser.ts";
import { canonicalizeResponse, parseResponse } from "../../src/format/npr-response.ts";
import { splitOnTags } from "../../src/format/npr-tags.ts";
import { CountdownTask, LogicGridTask } from "../../src/tasks/index.ts";
import { Rng } from "../../src/util/rng.ts";

function feed(tokens: string[], opts?: { requirePlanNumbers?: boolean }): { p: NprParser; events: NprEvent[] } {
  const p = new NprParser(opts);
  return { p, events: tokens.map((t) => p.push(t)) };
}

const GOOD = [
  "intro",
  "<guideline>",
  "<plan>",
  "1",
  ":",
  " a",
  "</plan>",
  "\n",
  "<plan>",
  "2.1:",
  "b",
  "</plan>",
  "</guideline>",
  "<step>",
  "1:",
  "x",
  "</step>",
  "<step>",
  "2.1:",
  "y",
  "</step>",
  "<takeaway>",
  "t",
  "</takeaway>",
  "so",
  "\\boxed{1}",
];

test("regions and engine events over a well-formed response", () => {
  const { p, events } = feed(GOOD);
  const regions = events.map((e) => (e.kind === "token" ? e.region : e.kind));
  assert.deepEqual(regions, [
    "free",
    "guideline",
    "plan",
    "plan",
    "plan",
    "plan",
    "guideline",
    "guideline",
    "plan",
    "plan",
    "plan",
    "guideline",
    "fork",
    "step",
    "step",
    "step",
    "branch-end",
    "step",
    "step",
    "step",
    "branch-end",
    "join",
    "takeaway",
    "conclusion",
    "conclusion",
    "conclusion",
  ]);
  assert.deepEqual(events[12], { kind: "fork", plans: ["1", "2.1"] });
  assert.deepEqual(events[16], { kind: "branch-end", step: 0 });
  assert.deepEqual(events[20], { kind: "branch-end", step: 1 });
  assert.deepEqual(events[21], { kind: "join", steps: 2 });
  assert.equal(p.end(), null);
  assert.equal(p.blockCount, 1);
});

test("branch parsers: each branch expects its own <step> and ends at </step>", () => {
  const { p } = feed(GOOD.slice(0, 13));
  assert.equal(p.state, "gap");
  const b1 = p.branch(1);
  assert.deepEqual(b1.push("<step>"), { kind: "token", region: "step" });
  b1.push("2.1:");
  assert.deepEqual(b1.push("</step>"), { kind: "branch-end", step: 1 });
  // A third step in a two-plan block is malformed, in a branch as in the serialized sequence.
  assert.equal(b1.push("<step>").kind, "malformed");
  assert.equal(p.state, "gap", "branching must not touch the parent");
  assert.throws(() => p.branch(2), RangeError);
  const c = p.clone();
  c.push("x");
  assert.equal(c.state, "malformed");
  assert.equal(p.state, "gap");
});

test("every malformed structure is reported with a reason, and the error is sticky", () => {
  const G = ["<guideline>", "<plan>", "1:", "</plan>", "</guideline>"];
  const cases: Array<[string, string[], RegExp, number]> = [
    ["nested guideline in a step", [...G, "<step>", "<guideline>"], /nested <guideline> inside step 1 of block 1/, 6],
    [
      "step count below plan count",
      [...G.slice(0, 4), "<plan>", "2:", "</plan>", "</guideline>", "<step>", "</step>", "<takeaway>"],
      /1 step\(s\) for 2 plan\(s\)/,
      10,
    ],
    ["step count above plan count", [...G, "<step>", "</step>", "<step>"], /step 2 in block 1, which has 1 plan/, 7],
    ["text after </guideline>", [...G, "\n"], /text "\\n" after <\/guideline>.*canonical form/, 5],
    [
      "text between steps",
      [...G.slice(0, 4), "<plan>", "2:", "</plan>", "</guideline>", "<step>", "</step>", " "],
      /after step 1's <\/step>/,
      10,
    ],
    ["text before <takeaway>", [...G, "<step>", "</step>", "x"], /text "x" after step 1's <\/step>/, 7],
    ["zero plans", ["<guideline>", "</guideline>"], /has no plan/, 1],
    [
      "six plans",
      ["<guideline>", ...Array.from({ length: 6 }, (_, k) => ["<plan>", `${k + 1}:`, "</plan>"]).flat(), "</guideline>"],
      /6 plans; at most 5/,
      19,
    ],
    ["plan without a number", ["<guideline>", "<plan>", "try", "</plan>"], /plan 1 of block 1 does not start with a number/, 3],
    ["tag inside a plan", ["<guideline>", "<plan>", "<step>"], /<step> inside plan 1/, 2],
    ["nested guideline in a guideline", ["<guideline>", "<guideline>"], /nested <guideline> inside the guideline/, 1],
    ["step inside the guideline", ["<guideline>", "<step>"], /<step> inside the guideline of block 1, outside any plan/, 1],
    ["tag inside a takeaway", [...G, "<step>", "</step>", "<takeaway>", "<plan>"], /<plan> inside the takeaway/, 8],
    ["stray closing tag in free text", ["hi", "</plan>"], /<\/plan> outside a block \(the text before the first block\)/, 1],
    [
      "stray tag in the conclusion",
      [...G, "<step>", "</step>", "<takeaway>", "</takeaway>", "<step>"],
      /<step> outside a block \(the text after block 1\)/,
      9,
    ],
    ["other tag in a step", [...G, "<step>", "<takeaway>"], /<takeaway> inside step 1/, 6],
  ];
  for (const [name, toks, re, at] of cases) {
    const { p, events } = feed(toks);
    const last = events[events.length - 1]!;
    assert.equal(last.kind, "malformed", name);
    assert.match((last as { reason: string }).reason, re, name);
    assert.equal(p.malformedAt, at, name);
    assert.equal(p.push("more").kind, "malformed", `${name}: sticky`);
    assert.match(p.end()!, re);
  }
});

test("end() names where an incomplete response stops", () => {
  const cases: Array<[string[], RegExp]> = [
    [[], /no <guideline> block/],
    [["<guideline>"], /inside the guideline of block 1/],
    [["<guideline>", "<plan>"], /inside plan 1 of block 1/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>"], /after 0 of 1 step/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "<step>"], /inside step 1 of block 1/],
    [["<guideline>", "<plan>", "1:", "</plan>", "</guideline>", "<step>", "</step>", "<takeaway>"], /inside the takeaway/],
  ];
  for (const [toks, re] of cases) assert.match(feed(toks).p.end()!, re, JSON.stringify(toks));
});

test("without required plan numbers, plans get their ordinals", () => {
  const { events } = feed(["<guideline>", "<plan>", "a", "</plan>", "<plan>", "7:", "</plan>", "</guideline>"], {
    requirePlanNumbers: false,
  });
  assert.deepEqual(events[7], { kind: "fork", plans: ["1", "7"] });
});

test("response parser: trajectory tree, conclusion and last non-empty boxed", () => {
  const text =
    "Let me think.\n<guideline>\n<plan>1: small cases</plan>\n<plan>2: algebra</plan>\n</guideline>\n" +
    "<step>\n1: n=1 gives 2</step>\n<step>\n2: factor</step>\n<takeaway>\nboth give 2</takeaway>\n" +
    "So \\boxed{} no, \\boxed{2} and \\boxed{ }.";
  const t = parseResponse(text);
  assert.equal(t.error, null);
  assert.equal(t.blocks.length, 1);
  const b = t.blocks[0]!;
  assert.equal(b.before, "Let me think.\n");
  assert.deepEqual(
    b.plans.map((p) => p.num),
    ["1", "2"],
  );
  assert.deepEqual(
    b.steps.map((s) => [s.num, s.text]),
    [
      ["1", "1: n=1 gives 2"],
      ["2", "2: factor"],
    ],
  );
  assert.equal(b.takeaway, "\nboth give 2");
  assert.equal(t.answer, "2");
  assert.match(t.conclusion, /^\nSo /);
  const bad = parseResponse("<guideline><plan>1: a</plan></guideline><step>1: b</step> note <takeaway>c</takeaway>");
  assert.match(bad.error!, /text " note " after step 1's <\/step>/);
});

test("canonicalization: sampled whitespace removed, text round-trips through the tree", () => {
  const rng = new Rng(5);
  const task = new CountdownTask(20, 3);
  const grid = new LogicGridTask(5, 4);
  const solutions = [
    ...Array.from({ length: 20 }, (_, i) => task.parallelSolution(task.get(i), i)),
    ...Array.from({ length: 5 }, (_, i) => grid.parallelSolution(grid.get(i), i)),
  ];
  for (const canonical of solutions) {
    assert.equal(canonicalizeResponse(canonical), canonical, "a canonical solution is a fixed point");
    const tree = parseResponse(canonical);
    assert.equal(tree.error, null);
    // NPR's engine writes "\n<step>\n{N}:" and newlines after </step>; canonicalization undoes it.
    const ws = () => [" ", "\n", "\n\n", " \n"][rng.int(4)]!;
    const noisy = canonical
      .replaceAll("</guideline><step>", `</guideline>${ws()}<step>`)
      .replaceAll("</step><step>", `</step>${ws()}<step>`)
      .replaceAll("</step><takeaway>", `</step>${ws()}<takeaway>`)
      .replace(/<step>(\d)/g, (_m, d: string) => `<step>${ws()}${d}`);
    assert.notEqual(noisy, canonical);
    assert.equal(canonicalizeResponse(noisy), canonical);
    assert.deepEqual(parseResponse(noisy), tree);
    assert.equal(splitOnTags(canonical).join(""), canonical);
  }
});
