/**
 * The answer normaliser: turns a raw answer string (as extracted from `\boxed{}` or as given by a
 * benchmark) into a canonical LaTeX string that the equivalence checker can parse, plus flags for
 * what was stripped (percent, degrees, units), because some comparisons depend on them.
 * The steps follow Qwen2.5-Math's `strip_string` (evaluation/math_normalization + parser.py at
 * QwenLM/Qwen2.5-Math@a45202bd) where they are safe, and keep set braces `\{ \}` which Qwen drops.
 * This file knows strings only: no compute engine, no structure (lists, intervals) beyond text.
 */

export interface Normalized {
  /** Canonical LaTeX, single spaces kept only where a command name needs one. */
  text: string;
  /** `text` with every space removed: the key for the fast exact-match path. */
  key: string;
  /** A `%` or "percent" was stripped. */
  percent: boolean;
  /** A `^\circ` (or `°`, "degrees") was stripped. */
  degrees: boolean;
}

// Units removed when they trail a value. Qwen's list is far larger (it strips one-letter words such
// as "a" or "m" anywhere); NOTE(h3): we only strip these after a value, to keep `m` as a variable.
const UNIT_WORDS = [
  "degrees?",
  "radians?",
  "cm\\^?2?",
  "mm",
  "km/h",
  "km",
  "kg",
  "mg",
  "mph",
  "m/s\\^?2?",
  "m\\^?[23]?",
  "meters?",
  "metres?",
  "centimeters?",
  "kilometers?",
  "inch(es)?",
  "feet",
  "foot",
  "ft\\^?2?",
  "yards?",
  "miles?",
  "units?",
  "square units",
  "sq\\.? ?units",
  "cents?",
  "dollars?",
  "hours?",
  "hrs?",
  "minutes?",
  "mins?",
  "seconds?",
  "secs?",
  "s",
  "days?",
  "weeks?",
  "months?",
  "years?",
  "grams?",
  "g",
  "pounds?",
  "lbs?",
  "liters?",
  "litres?",
  "ml",
  "gallons?",
  "points?",
  "people",
  "students?",
  "ways",
  "times",
  "percent",
  "sq ?ft",
  "sq ?in",
  "mi",
  "ohms?",
  "volts?",
  "V",
  "J",
  "N",
  "K",
  "Hz",
  "W",
  "erg",
  "ergs",
  "eV",
  "keV",
  "MeV",
  "AU",
  "pc",
  "kpc",
  "Mpc",
  "nm",
  "\\\\mu m",
  "\\\\AA",
  "arcsec",
  "tiles?",
  "coins?",
  "books?",
  "apples?",
];
const UNIT_RE = new RegExp(`^(.*?[\\d}).a-zA-Z])\\s*(?:${UNIT_WORDS.join("|")})$`);

// Wrappers whose content is kept: `\text{(C)}` -> `(C)`.
const WRAPPERS = [
  "boxed",
  "text",
  "textnormal",
  "textbf",
  "textit",
  "textrm",
  "mathrm",
  "mathbf",
  "mathit",
  "mbox",
  "operatorname",
  "boldsymbol",
  "mathsf",
  "textsf",
  "displaystyle",
];

const WORD_NUMBERS: Record<string, string> = {
  zero: "0",
  one: "1",
  two: "2",
  three: "3",
  four: "4",
  five: "5",
  six: "6",
  seven: "7",
  eight: "8",
  nine: "9",
  ten: "10",
  eleven: "11",
  twelve: "12",
};

/** Index just past the `}` matching the `{` at `open`, or -1 when unbalanced. */
export function matchBrace(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (c === "\\") {
      i++; // `\{` and `\}` are literal braces, not grouping
      continue;
    }
    if (c === "{") depth++;
    else if (c === "}") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

/** Replaces `\name{X}` by `X` for every wrapper command, innermost content kept verbatim. */
function unwrapCommands(s: string, names: readonly string[]): string {
  for (const name of names) {
    const pat = `\\${name}`;
    let from = 0;
    for (;;) {
      const at = s.indexOf(pat, from);
      if (at < 0) break;
      let j = at + pat.length;
      // `\text` must not match `\textbf`: the next char must not be a letter.
      if (/[a-zA-Z]/.test(s[j] ?? "")) {
        from = j;
        continue;
      }
      while (s[j] === " ") j++;
      if (s[j] !== "{") {
        from = j;
        continue;
      }
      const end = matchBrace(s, j);
      if (end < 0) break;
      s = s.slice(0, at) + s.slice(j + 1, end - 1) + s.slice(end);
      from = at;
    }
  }
  return s;
}

/** `\frac12` -> `\frac{1}{2}`, `\frac1{x}` -> `\frac{1}{x}`; `\sqrt2` -> `\sqrt{2}` (Qwen's _fix_fracs/_fix_sqrt). */
function fixFracsAndSqrt(s: string): string {
  s = s.replace(/\\sqrt\s*([0-9a-zA-Z])/g, "\\sqrt{$1}");
  s = s.replace(/\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])/g, "\\frac{$1}{$2}");
  s = s.replace(/\\frac\s*([0-9a-zA-Z])\s*\{/g, "\\frac{$1}{");
  s = s.replace(/\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])/g, "\\frac$1{$2}");
  return s;
}

/** Drops spaces except where one separates a command name from a following letter (`\pi r`). */
function squeezeSpaces(s: string): string {
  s = s.replace(/\s+/g, " ").trim();
  return s.replace(/(\\[a-zA-Z]+)? (?=(.))/g, (m, cmd: string | undefined, next: string) =>
    cmd !== undefined && /[a-zA-Z]/.test(next) ? `${cmd} ` : (cmd ?? ""),
  );
}

/**
 * Normalises one answer. Steps, in order (docs/grading.md lists them with examples):
 * trim and drop `$`/`\(`/`\[` delimiters; drop `\!`, `\,`, `\;`, `~`, `\left`/`\right`, `\displaystyle`;
 * `\dfrac`/`\tfrac` -> `\frac`; `\le(q)`/`\ge(q)`/`\ne(q)` unified; trailing units and `\text{unit}` removed;
 * degrees and percent stripped (flagged); `\$` and "dollars" removed; text wrappers unwrapped;
 * thousands separators removed; word numbers ("five") mapped; leading zeros and trailing `.0` dropped;
 * `.5` -> `0.5`; `\frac`/`\sqrt` shorthands braced; spaces squeezed.
 */
export function normalizeAnswer(raw: string): Normalized {
  let s = raw.trim();
  let percent = false;
  let degrees = false;

  s = s.replace(/\n/g, " ");
  // Math delimiters around the whole answer or parts of it (OlympiadBench keeps `$...$`).
  s = s
    .replace(/\\\$/g, "\u0000DOLLAR\u0000")
    .replace(/\$/g, "")
    .replace(/\u0000DOLLAR\u0000/g, "\\$");
  s = s.replace(/\\\(|\\\)/g, "");
  s = s.replace(/^\\\[|\\\]$/g, "");
  s = s.replace(/(\d),\\!\s*(?=\d{3})/g, "$1,"); // `10,\!080`: a thousands comma, not a list
  s = s.replace(/(?<!\\)\\[!,;: ]|\\q?quad\b/g, " "); // not the row break `\\`
  s = s.replace(/~/g, " ");
  s = s.replace(/\\left\b|\\right\b|\\bigl?\b|\\bigr\b|\\Bigl?\b|\\Bigr\b/g, "");
  s = s.replace(/\\middle\b/g, "");
  s = s.replace(/\\displaystyle\b/g, "");
  s = s.replace(/\\[dtc]frac\b/g, "\\frac").replace(/\\[dt]binom\b/g, "\\binom");
  // Vectors written with angle brackets are tuples: `\langle 1, 2 \rangle` -> `(1, 2)`.
  s = s.replace(/\\langle\b|⟨/g, "(").replace(/\\rangle\b|⟩/g, ")");
  // Plain-text `sqrt(2)` (no nested parentheses) -> `\sqrt{2}`.
  s = s.replace(/(?<![\\a-zA-Z])sqrt\s*\(([^()]*)\)/g, "\\sqrt{$1}");
  // Connectives between answers become list commas *before* spaces are squeezed ("2 and 3", not
  // "2and3"): `\text{ and }`, `\text{or}`, and bare " and " / " or " between tokens.
  s = s.replace(/\\(?:text|mbox|textrm|textnormal|mathrm)\s*\{\s*(?:and|or)\s*\}/g, ",");
  s = s.replace(/\s+(?:and|or)\s+/g, ", ");
  s = s.replace(/\\lt(?![a-zA-Z])/g, "<").replace(/\\gt(?![a-zA-Z])/g, ">");
  s = s.replace(/<=/g, "\\le ").replace(/>=/g, "\\ge ").replace(/!=/g, "\\ne ");
  s = s.replace(/\\leq?(?![a-zA-Z])|\\leqslant\b|≤/g, "\\le ").replace(/\\geq?(?![a-zA-Z])|\\geqslant\b|≥/g, "\\ge ");
  s = s.replace(/\\neq?(?![a-zA-Z])|≠/g, "\\ne ");
  s = s.replace(/\\cdot(?![a-zA-Z])|×/g, "\\times ");
  s = s.replace(/−/g, "-").replace(/π/g, "\\pi ").replace(/∞/g, "\\infty ");
  s = s.replace(/\\mathbb\s*\{?R\}?/g, "\\mathbb{R}");
  // bmatrix/vmatrix/array all compare as pmatrix.
  s = s.replace(/\\begin\{array\}\{[^}]*\}/g, "\\begin{pmatrix}").replace(/\\end\{array\}/g, "\\end{pmatrix}");
  s = s.replace(/\{(b|B|v|V|small)matrix\}/g, "{pmatrix}");
  s = s.replace(/\.+\s*$/, "").trim(); // a sentence's final period
  s = s.replace(/^(?:=|\\approx\b)\s*/, ""); // "= 5", "\approx 3.14": a relation with its lhs cut off
  // Minerva writes numpy: `np.arcsin(10/13)`.
  s = s.replace(/\bnp\.(arcsin|arccos|arctan|sin|cos|tan|exp|log|sqrt|pi)\b/g, (_m, f: string) => (f === "pi" ? "\\pi " : `\\${f}`));

  // A degree sign inside a trig argument is a unit conversion, not decoration: `\sin 30^\circ` is
  // sin(pi/6), so it becomes radians before the flag-and-strip below.
  s = s.replace(
    /(\\(?:sin|cos|tan|sec|csc|cot))\s*(\(?)\s*(-?\d+(?:\.\d+)?)\s*(?:\^\s*\{?\s*\\circ\s*\}?|°)\s*(\)?)/g,
    (_m, f: string, open: string, v: string, close: string) => `${f}(\\frac{${v}\\pi}{180})${open === "" ? close : ""}`,
  );
  // Degrees: `336^\circ`, `336^{\circ}`, `336°`, `\degree`; `^{\circ}C` temperatures too.
  const deg = s.replace(/(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b)(?:\s*(?:\\(?:text|mathrm)\s*\{\s*[CFK]\s*\}|[CFK](?![a-zA-Z])))?/g, "");
  if (deg !== s) {
    degrees = true;
    s = deg;
  }
  // Percent: `\%`, `%`, `\text{ percent}`.
  const pct = s.replace(/\\?%|\\text\{\s*percent\s*\}|(?<=\d\s*)(?:percent|pct)\b/g, "");
  if (pct !== s) {
    percent = true;
    s = pct;
  }
  s = s.replace(/\\\$|\bdollars?\b|US\$/g, "");

  // A trailing `\text{...}`/`\mbox{...}`/`\mathrm{...}` after a value is a unit (Qwen drops `\text{.*}$`).
  for (let k = 0; k < 3; k++) {
    const m = /^(.*[\d}).a-zA-Z\\])\s*\\(?:text|textnormal|mbox|mathrm|textrm|rm)\s*\{\s*((?:[^{}]|\{[^{}]*\})*)\}(\^\{?\d\}?)?$/.exec(s);
    if (!m || m[1]!.trim() === "") break;
    // `m/s^{2}` inside the unit: its exponent is part of the unit, not a value.
    const inner = m[2]!
      .replace(/\^\s*\{?\d\}?/g, "")
      .replace(/[~{}]/g, " ")
      .trim();
    // Keep text that is the answer itself ("\text{(C)}", "\text{east}") or a connective.
    if (inner === "" || /^(and|or|,)$/.test(inner)) break;
    if (/^[a-zA-Z\s.\/^\\]+$/.test(inner) && !/^\(?[A-E]\)?$/.test(inner)) {
      if (/^\s*degrees?\s*$/.test(inner)) degrees = true;
      if (/^\s*percent\s*$/.test(inner)) percent = true;
      s = m[1]!.trim();
    } else break;
  }
  s = unwrapCommands(s, WRAPPERS);
  s = s.replace(/\\(?:textstyle|scriptstyle)\b/g, "");
  // Plain unit words after a value ("5 cm", "10 inches").
  for (let k = 0; k < 2; k++) {
    const m = UNIT_RE.exec(s.trim());
    if (m && /\d/.test(m[1]!)) s = m[1]!;
  }

  // Thousands separators: `58,500`, `1{,}000`, and `10,\!080` (already `10,080`, see above).
  s = s.replace(/(\d)\{,\}(\d{3})/g, "$1$2");
  if (/^\s*-?\d{1,3}(,\d{3})+(\.\d+)?\s*$/.test(s)) s = s.replace(/,/g, "");
  // Thin-space grouping "1\,000" became "1 000".
  if (/^\s*-?\d{1,3}( \d{3})+(\.\d+)?\s*$/.test(s)) s = s.replace(/ /g, "");

  // A plain-text mixed number "7 1/2" is 7 + 1/2; squeezing its space would make it 71/2.
  s = s.replace(/^\s*(-?\d+)\s+(\d+)\s*\/\s*(\d+)\s*$/, "$1\\frac{$2}{$3}");

  // Word numbers as whole answers ("five").
  const lw = s.trim().toLowerCase();
  if (WORD_NUMBERS[lw] !== undefined) s = WORD_NUMBERS[lw]!;
  s = s.replace(/\binfinity\b/gi, "\\infty").replace(/(^|[^\\a-z])inf\b/g, "$1\\infty");

  s = fixFracsAndSqrt(s);
  // Leading zeros of integers ("025" -> "25"), never of "0.5".
  s = s.replace(/(^|[^\d.])0+(?=\d)/g, "$1");
  // Trailing zeros of decimals ("27.0" -> "27", "1.50" -> "1.5").
  s = s.replace(/(\d)\.0+(?!\d)/g, "$1").replace(/(\d\.\d*?[1-9])0+(?!\d)/g, "$1");
  // ".5" -> "0.5", "-.5" -> "-0.5".
  s = s.replace(/(^|[^\d])\.(\d)/g, "$10.$2");
  s = squeezeSpaces(s);
  return { text: s, key: s.replace(/\s+/g, ""), percent, degrees };
}
