// Progress on stderr. On a TTY: a bar per blob and a total with bytes/s and ETA (cli-progress,
// a well-kept library for multi-bar terminal output). Without a TTY: one quiet line per finished
// blob. --quiet (and --json) print nothing here.
import cliProgress from "cli-progress";

export const fmtBytes = (n) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) (n /= 1024), i++;
  return `${i === 0 ? Math.round(n) : n.toFixed(1)} ${u[i]}`;
};

const rate = (bytes, ms) => (ms > 0 ? `${fmtBytes((bytes * 1000) / ms)}/s` : "");

/** `quiet` silences bars and per-blob lines; `notes` (warnings such as a resume) print unless false. */
export function createProgress({ quiet = false, notes = true, stream = process.stderr } = {}) {
  const tty = !!stream.isTTY;
  const t0 = Date.now();
  let totalBytes = 0;
  const done = new Map(); // bar → bytes done
  const sum = () => [...done.values()].reduce((a, b) => a + b, 0);
  let multi = null;
  let totalBar = null;
  if (!quiet && tty) {
    multi = new cliProgress.MultiBar(
      {
        stream,
        hideCursor: true,
        clearOnComplete: false,
        barsize: 24,
        fps: 8,
        format: (options, params, payload) => {
          const bar = cliProgress.Format.BarFormat(params.progress, options);
          const eta = params.value >= params.total ? "done" : `ETA ${cliProgress.Format.TimeFormat(params.eta, options, 5)}`;
          const speed = rate(params.value, (payload.end ?? Date.now()) - payload.start);
          return `${payload.label.padEnd(14)} ${bar} ${fmtBytes(params.value).padStart(10)} / ${fmtBytes(params.total).padEnd(10)} ${speed.padStart(12)}  ${payload.status ?? eta}`;
        },
      },
      cliProgress.Presets.shades_classic,
    );
    totalBar = multi.create(1, 0, { label: "total", start: t0 });
  }
  const line = (s) => {
    if (!quiet && !tty) stream.write(s + "\n");
  };
  return {
    /** Announce the bytes the whole transfer will move. */
    setTotal(bytes) {
      totalBytes = bytes;
      totalBar?.setTotal(Math.max(1, bytes));
    },
    blob(label, size) {
      const start = Date.now();
      const bar = multi?.create(Math.max(1, size), 0, { label, start });
      const handle = {
        update(n) {
          done.set(handle, Math.min(n, size));
          bar?.update(Math.min(n, size));
          totalBar?.update(sum());
        },
        finish(status) {
          handle.update(size);
          bar?.update(Math.max(1, size), { status, end: Date.now() });
          line(`${label}: ${status} ${fmtBytes(size)}${status === "uploaded" || status === "written" ? ` in ${((Date.now() - start) / 1000).toFixed(1)} s (${rate(size, Date.now() - start)})` : ""}`);
        },
      };
      return handle;
    },
    note(msg) {
      if (!notes) return;
      if (multi) multi.log(msg + "\n");
      else stream.write(msg + "\n");
    },
    /** Final render and stop (once; later calls do nothing, so the process can exit). */
    stop() {
      if (!multi) return;
      totalBar.update(Math.max(1, totalBytes), { status: "done", end: Date.now() });
      multi.stop();
      multi = null;
    },
    elapsedMs: () => Date.now() - t0,
  };
}
