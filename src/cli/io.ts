/**
 * Terminal plumbing shared by the cli commands: a closed stdout (`npr ... | head`) ends the
 * command quietly with exit code 0, and long work reports progress on stderr (a redrawn line on
 * a TTY, a line every few seconds otherwise, so logs and CI show that work goes on).
 * Knows process streams and clocks; nothing about any command's work.
 */

/**
 * Thrown by writeOut once stdout is gone (the reader closed the pipe): main() ends the command
 * with exit code 0 and no message, as `head` expects of the commands before it.
 */
export class OutputClosed extends Error {
  override name = "OutputClosed";
}

function isPipeClosed(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === "EPIPE" || code === "ERR_STREAM_DESTROYED";
}

/**
 * Ends the process quietly (exit code 0) when stdout or stderr reports EPIPE. Installed once by
 * main.ts; without it Node prints an "Unhandled 'error' event" stack for `npr ... | head -1`.
 */
export function installPipeHandlers(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err) => {
      if (isPipeClosed(err)) process.exit(0);
      // Any other write error on a standard stream: nothing sensible can be printed anywhere.
      process.exit(1);
    });
  }
}

/**
 * Writes `text` to stdout; throws OutputClosed when stdout is already closed, so a loop that
 * prints many lines stops at the first one nobody reads (the EPIPE event comes a tick later).
 */
export function writeOut(text: string): void {
  if (process.stdout.destroyed) throw new OutputClosed("stdout closed");
  process.stdout.write(text);
  if (process.stdout.destroyed) throw new OutputClosed("stdout closed");
}

/** Seconds as a short human string: "4.2 s", "3 min 5 s". */
export function formatSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s - 60 * m)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

export interface ProgressOptions {
  /** Prefix of every line, e.g. "npr engine fuzz". */
  label: string;
  /** Units of work in all (for "n/total" and the ETA); null when unknown. */
  total: number | null;
  /** Redraw one line in place (default: stderr is a TTY). */
  tty?: boolean;
  /** Without a TTY, the least time between two lines (ms; default 5000). */
  intervalMs?: number;
}

/**
 * Progress of long work on stderr: `label: done/total (pct), rate, ETA`. On a TTY the line is
 * redrawn at most every 100 ms; otherwise a line is printed at most every `intervalMs`, so short
 * runs print nothing and long ones show they are alive.
 */
export class Progress {
  private readonly label: string;
  private readonly total: number | null;
  private readonly tty: boolean;
  private readonly intervalMs: number;
  private readonly t0 = performance.now();
  private last = performance.now();
  private drawn = false;

  constructor(opts: ProgressOptions) {
    this.label = opts.label;
    this.total = opts.total;
    this.tty = opts.tty ?? Boolean(process.stderr.isTTY);
    this.intervalMs = opts.intervalMs ?? 5000;
  }

  /** Reports `done` units (and an optional note such as "1234 tokens"). */
  update(done: number, note = ""): void {
    const now = performance.now();
    if (now - this.last < (this.tty ? 100 : this.intervalMs)) return;
    this.last = now;
    const line = this.line(done, note, now);
    if (this.tty) process.stderr.write(`\r\x1b[K${line}`);
    else process.stderr.write(`${line}\n`);
    this.drawn = true;
  }

  /** Clears the TTY line (the caller prints its own summary). */
  finish(): void {
    if (this.tty && this.drawn) process.stderr.write("\r\x1b[K");
  }

  private line(done: number, note: string, now: number): string {
    const secs = (now - this.t0) / 1000;
    const parts = [this.total === null ? `${done}` : `${done}/${this.total} (${((100 * done) / Math.max(1, this.total)).toFixed(0)}%)`];
    if (note) parts.push(note);
    parts.push(formatSeconds(secs));
    if (this.total !== null && done > 0 && done < this.total) parts.push(`ETA ${formatSeconds((secs / done) * (this.total - done))}`);
    return `${this.label}: ${parts.join(", ")}`;
  }
}
