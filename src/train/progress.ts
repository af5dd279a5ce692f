/**
 * Progress of a training stage for the person watching: on a TTY a redrawn bar (cli-progress)
 * with step, loss, tokens/s and ETA; anywhere else (a log file, CI, a pipe) one plain line every
 * `everySteps` steps and at the last one. The ETA is measured over the steps this process ran,
 * never over the steps a resumed run inherited (verl #795: ETAs from the wrong step count).
 * Knows a writable stream and numbers; nothing about models or files.
 */
import cliProgress from "cli-progress";

export interface ProgressUpdate {
  /** Optimizer steps done (1-based count of the last finished step). */
  step: number;
  loss: number;
  lr: number;
  tokensPerS: number;
}

export interface Progress {
  /** A message that must not be overwritten by the bar (evaluations, checkpoints, warnings). */
  log(line: string): void;
  /** The loop begins at `startStep` (0, or a resumed checkpoint's step); the ETA clock starts here. */
  start(startStep: number): void;
  update(u: ProgressUpdate): void;
  stop(): void;
}

export interface ProgressOptions {
  stage: string;
  totalSteps: number;
  stream?: NodeJS.WriteStream;
  /** Plain mode: a line every this many steps (default 1). */
  everySteps?: number;
  /** Force plain lines even on a TTY (tests, --no-progress). */
  plain?: boolean;
}

/** "1:02:03", "4:05", "0:07". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** Seconds left, from this session's rate: (total - step) * elapsed / (step - startStep). */
export function etaSeconds(step: number, startStep: number, totalSteps: number, elapsedS: number): number {
  const done = step - startStep;
  if (done <= 0) return NaN;
  return ((totalSteps - step) * elapsedS) / done;
}

export function makeProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  let t0 = performance.now();
  let startStep = 0;
  const elapsed = () => (performance.now() - t0) / 1000;
  const describe = (u: ProgressUpdate) =>
    `loss ${u.loss.toFixed(4)} | lr ${u.lr.toExponential(2)} | ${u.tokensPerS.toFixed(0)} tok/s | ETA ${formatDuration(etaSeconds(u.step, startStep, opts.totalSteps, elapsed()))}`;
  const begin = (step: number) => {
    startStep = step;
    t0 = performance.now();
  };

  if (opts.plain || !stream.isTTY) {
    const every = Math.max(1, opts.everySteps ?? 1);
    return {
      log: (line) => void stream.write(`${line}\n`),
      start: begin,
      update(u) {
        if (u.step % every !== 0 && u.step !== opts.totalSteps) return;
        stream.write(`${opts.stage} step ${u.step}/${opts.totalSteps} | ${describe(u)}\n`);
      },
      stop() {},
    };
  }

  let bar: cliProgress.SingleBar | null = null;
  return {
    log(line) {
      // Clear the bar's line, print the message, let the next update redraw the bar under it.
      stream.write(bar ? `\r\x1b[2K${line}\n` : `${line}\n`);
    },
    start(step) {
      begin(step);
      bar = new cliProgress.SingleBar(
        { stream, format: `${opts.stage} |{bar}| {value}/{total} | {info}`, hideCursor: true, barsize: 24, fps: 5 },
        cliProgress.Presets.shades_classic,
      );
      bar.start(opts.totalSteps, step, { info: "starting" });
    },
    update(u) {
      bar?.update(u.step, { info: describe(u) });
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
