/**
 * Equivalence rules, each in both directions (equal and not equal) and both argument orders:
 * fractions/decimals, degrees, percent, dollars, thousands separators, leading zeros, mixed numbers,
 * `x=5` vs 5, integers exact, decimals with tolerance, symbolic forms, variables at random points,
 * tuples ordered, sets/lists unordered, intervals with their ends, matrices, text answers, equations.
 * Plus extraction (last non-empty box, nested braces, fallbacks), the normaliser and grader quirks.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { answersEqual } from "../../src/tasks/equivalence.ts";
import { extractAnswer, lastBoxed } from "../../src/tasks/extract.ts";
import { gradeAnswer } from "../../src/tasks/grader.ts";
import { normalizeAnswer } from "../../src/tasks/normalize.ts";

// [a, b, equal?]: every pair is checked as (a, b) and (b, a).
const cases: [string, string, boolean][] = [
  ["\\frac{1}{2}", "0.5", true],
  ["1/2", "\\frac12", true],
  ["\\dfrac{1}{2}", "\\frac{1}{2}", true],
  ["0.5", "\\frac{1}{3}", false],
  ["336^\\circ", "336", true],
  ["336", "337", false],
  ["50\\%", "50", true],
  ["50\\%", "0.5", true],
  ["50", "0.5", false],
  ["\\$32,\\!348", "32348", true],
  ["10,\\!080", "10080", true],
  ["025", "25", true],
  ["x=5", "5", true],
  ["x=5", "6", false],
  ["y = 2x+3", "2x+3", true],
  ["2x+3", "3+2x", true],
  ["2x+3", "2x+4", false],
  ["\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", true],
  ["(3,4]", "(3,4)", false],
  ["(3,4]", "(3, 4]", true],
  ["\\{1,2\\}", "\\{2,1\\}", true],
  ["(1,2)", "(2,1)", false],
  ["1,-2", "-2, 1", true],
  ["\\text{(C)}", "C", true],
  ["\\text{(C)}", "(D)", false],
  ["\\text{Evelyn}", "evelyn", true],
  ["1\\frac{4}{5}", "\\frac95", true],
  ["\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}", "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\\\ \\frac53 \\end{pmatrix}", true],
  ["\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 1 & 0 \\\\ 1 & 0 \\end{pmatrix}", false],
  ["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", true],
  ["\\sqrt{2}", "1.41421", true],
  ["\\pi", "3.14", false],
  ["\\pi", "3.1416", true],
  ["2^{100}", "1267650600228229401496703205376", true],
  ["2^{100}+1", "1267650600228229401496703205376", false],
  ["1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", true],
  ["\\frac{-1+\\sqrt{17}}{2}, \\frac{-1-\\sqrt{17}}{2}", "\\frac{-1-\\sqrt{17}}{2}, \\frac{-1+\\sqrt{17}}{2}", true],
  ["(-\\infty, 0]", "(-\\infty,0]", true],
  ["x \\in [-2,7]", "[-2,7]", true],
  ["x > 5", "(5, \\infty)", true],
  ["5x - 7y + 11z + 4 = 0", "-5x+7y-11z-4=0", true],
  ["5x - 7y + 11z + 4 = 0", "10x-14y+22z+8=0", true],
  ["5x - 7y + 11z + 4 = 0", "5x-7y+11z+5=0", false],
  ["52_8", "42", false],
  ["52_8", "52_{8}", true],
  ["6 - 5i", "6-5i", true],
  ["6-5i", "6+5i", false],
  ["\\cot x", "\\frac{\\cos x}{\\sin x}", true],
  ["(a+5)(b+2)", "ab+2a+5b+10", true],
  ["27", "27.0", true],
  ["26.9999", "27", false],
  ["4.5e33", "4.5\\times10^{33}", true],
  ["864 \\mbox{ inches}^2", "864", true],
  ["5.4 \\text{ cents}", "5.4", true],
  ["\\frac{270}7\\text{ degrees}", "\\frac{270}{7}", true],
  [".0000672", "0.0000672", true],
  ["11,\\! 111,\\! 111,\\! 100", "11111111100", true],
  ["(0,9) \\cup (9,36)", "(9,36)\\cup(0,9)", true],
  ["\\emptyset", "\\{\\}", true],
  ["\\infty", "\\infty", true],
  ["-\\infty", "\\infty", false],
  ["np.arcsin(10/13)", "\\arcsin\\left(\\frac{10}{13}\\right)", true],
  ["\\frac{1}{2n+2}", "\\frac{1}{2(n+1)}", true],
  ["$\\frac{1}{2 n+2}$", "\\frac{1}{2n+3}", false],
  ["p - q", "-q+p", true],
];

cases.push(
  ["\\frac{1}{3}", "0.3333", true],
  ["\\frac{1}{3}", "0.33", false],
  ["0", "10^{-20}", false],
  ["2.88e-19", "1.325e-27", false],
  ["2.88e-19", "2.88\\times10^{-19}", true],
  ["\\frac{x+1}{x}", "1+\\frac1x", true],
  ["x+1", "y+1", false],
  ["[1,2]", "(1,2)", false],
  ["\\{1,2,3\\}", "\\{1,2\\}", false],
  ["(1,2),(3,4)", "(3,4),(1,2)", true],
  ["(1,2),(3,4)", "(2,1),(3,4)", false],
  ["\\text{east}", "East", true],
  ["\\text{east}", "west", false],
  ["1,000", "1000", true],
  ["\\$5", "5 dollars", true],
  ["007", "7", true],
  ["2\\frac{1}{2}", "2.5", true],
  ["2\\frac{1}{2}", "1", false],
  ["45^{\\circ}", "45", true],
  ["x^2", "x\\cdot x", true],
  ["x^2", "2x", false],
);

test("equivalence: every rule, both directions", () => {
  const failures: string[] = [];
  for (const [a, b, want] of cases) {
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      if (answersEqual(x, y) !== want) failures.push(`${JSON.stringify(x)} vs ${JSON.stringify(y)}: want ${want}`);
    }
  }
  console.log(`# ${cases.length * 2 - failures.length}/${cases.length * 2} equivalence checks agree`);
  assert.deepEqual(failures, []);
});

test("extraction: last non-empty box, nested braces, fbox, fallbacks", () => {
  assert.equal(lastBoxed("\\boxed{1} then \\boxed{\\frac{a}{b^{2}}} and \\boxed{}"), "\\frac{a}{b^{2}}");
  assert.equal(extractAnswer("so \\fbox{7}."), "7");
  assert.equal(extractAnswer("The answer is 12. Done", ["answer-is"]), "12");
  assert.equal(extractAnswer("we get 3 and then 4.5 apples", ["last-number"]), "4.5");
  assert.equal(extractAnswer("we get 3 and then 4.5 apples", []), null);
  assert.equal(extractAnswer("\\boxed{unterminated"), null);
  assert.equal(extractAnswer("\\boxed 5$"), "5");
});

test("normaliser steps", () => {
  assert.equal(normalizeAnswer("\\left( 3, \\dfrac{\\pi}{2} \\right)").key, "(3,\\frac{\\pi}{2})");
  assert.equal(normalizeAnswer("336^\\circ").text, "336");
  assert.equal(normalizeAnswer("336^\\circ").degrees, true);
  assert.equal(normalizeAnswer("50\\%").percent, true);
  assert.equal(normalizeAnswer("\\$32,\\!348").key, "32348");
  assert.equal(normalizeAnswer("025").key, "25");
  assert.equal(normalizeAnswer("\\frac12").key, "\\frac{1}{2}");
  assert.equal(normalizeAnswer("\\text{(C)}").key, "(C)");
});

test("grader: HMMT list answers boxed one by one, OlympiadBench unit and error", () => {
  const gold = "\\frac{-1+\\sqrt{17}}{2}, \\frac{-1-\\sqrt{17}}{2}";
  assert.equal(gradeAnswer("\\boxed{\\frac{-1-\\sqrt{17}}{2}} and \\boxed{\\frac{-1+\\sqrt{17}}{2}}", gold).correct, true);
  assert.equal(gradeAnswer("\\boxed{\\frac{-1-\\sqrt{17}}{2}}", gold).correct, false);
  assert.equal(gradeAnswer("\\boxed{4.25}", "4.2", { absTol: 0.1 }).correct, true);
  assert.equal(gradeAnswer("\\boxed{4.35}", "4.2", { absTol: 0.1 }).correct, false);
  assert.equal(gradeAnswer("\\boxed{45 \\text{minutes}}", "45", { unit: "minute" }).correct, true);
  assert.deepEqual(gradeAnswer("nothing here", "3", { fallbacks: [] }), { correct: false, extracted: null });
});

// Values outside float64 (overflow to Infinity, underflow to 0) are never compared as doubles:
// `\infty` is not 10^{400}, 10^{-400} is not 0, and two huge numbers compare by their exact quotient.
const outOfRange: [string, string, boolean][] = [
  ["\\infty", "10^{400}", false],
  ["-\\infty", "-10^{400}", false],
  ["\\infty", "1e400", false],
  ["\\infty", "2^{2000}", false],
  ["\\infty", "1.7976931348623157e308", false],
  ["(1, \\infty)", "(1, 10^{999})", false],
  ["e^{1000}", "e^{1001}", false],
  ["1.5\\times10^{400}", "10^{401}", false],
  ["10^{400}+1", "10^{400}", false],
  ["e^{1000x}", "e^{1001x}", false],
  ["\\frac{1}{10^{400}}", "0", false],
  ["10^{-400}", "10^{-401}", false],
  ["\\infty", "\\infty", true],
  ["(1, \\infty)", "(1,\\infty)", true],
  ["10^{400}", "1e400", true],
  ["1.5\\times 10^{400}", "15\\times10^{399}", true],
  ["10^{308}\\cdot 10", "10^{309}", true],
  ["10^{-400}", "1e-400", true],
];

test("equivalence: numbers outside float64 are not equal to infinity, to 0 or to each other by accident", () => {
  for (const [a, b, want] of outOfRange) {
    assert.equal(answersEqual(a, b), want, `${a} vs ${b}`);
    assert.equal(answersEqual(b, a), want, `${b} vs ${a}`);
  }
  assert.equal(gradeAnswer("so \\boxed{\\infty}", "10^{400}").correct, false);
});
