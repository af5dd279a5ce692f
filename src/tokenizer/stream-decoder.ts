/**
 * Streaming detokenization: turns ids arriving one at a time into text pieces whose
 * concatenation equals decoding all ids at once, and never emits a broken UTF-8 character. A
 * byte-level token can end in the middle of a multi-byte character (an emoji spans up to 4
 * tokens); decoding it alone gives U+FFFD, so such a tail is held back until the character
 * completes. Same scheme as HF text-generation-inference's `decode_token`: decode a short window
 * that starts a few tokens back, so decoders that look at neighbours (Metaspace's leading space)
 * see context, and emit only the new suffix.
 * Knows ids and strings; the tokenizer is passed in.
 */

/** What the stream decoder needs from a tokenizer. */
export interface Decodes {
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
}

export class StreamDecoder {
  private readonly tok: Decodes;
  private readonly skipSpecialTokens: boolean;
  private readonly ids: number[] = [];
  /** Start of the decode window: text of ids[prefix..read) has been emitted. */
  private prefix = 0;
  private read = 0;

  constructor(tok: Decodes, opts: { skipSpecialTokens?: boolean } = {}) {
    this.tok = tok;
    this.skipSpecialTokens = opts.skipSpecialTokens ?? false;
  }

  /** Adds one id; returns the newly complete text (possibly ""). */
  push(id: number): string {
    this.ids.push(id);
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read), opts);
    const after = this.tok.decode(this.ids.slice(this.prefix), opts);
    // An incomplete character decodes to U+FFFD at the end: wait for the rest of its bytes.
    if (after.length > before.length && !after.endsWith("\uFFFD") && after.startsWith(before)) {
      this.prefix = this.read;
      this.read = this.ids.length;
      return after.slice(before.length);
    }
    return "";
  }

  /** Emits whatever is held back (at end of stream; a truly broken tail stays U+FFFD). */
  flush(): string {
    const opts = { skipSpecialTokens: this.skipSpecialTokens };
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read), opts);
    const after = this.tok.decode(this.ids.slice(this.prefix), opts);
    this.prefix = this.read = this.ids.length;
    return after.startsWith(before) ? after.slice(before.length) : after;
  }
}
