// Output of the operator commands: --json writes one stable JSON document to stdout; otherwise a
// plain table or lines. Messages for people (warnings, progress) go to stderr.
import { createInterface } from "node:readline";
import { Writable } from "node:stream";
import { CliError, EXIT } from "./session.mjs";

export function printJson(data) {
  process.stdout.write(JSON.stringify(data, null, 2) + "\n");
}

/** Columns: [header, row => value]. Empty tables print "(none)". */
export function printTable(rows, columns) {
  if (!rows.length) {
    process.stdout.write("(none)\n");
    return;
  }
  const cells = rows.map((r) => columns.map(([, f]) => cell(f(r))));
  const heads = columns.map(([h]) => h);
  const widths = heads.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals) => vals.map((v, i) => (i === vals.length - 1 ? v : v.padEnd(widths[i]))).join("  ").trimEnd() + "\n";
  process.stdout.write(line(heads));
  for (const c of cells) process.stdout.write(line(c));
}

function cell(v) {
  if (v === null || v === undefined) return "-";
  if (Array.isArray(v)) return v.join(",") || "-";
  return String(v);
}

/** Key/value lines for one object. */
export function printFields(pairs) {
  const w = Math.max(...pairs.map(([k]) => k.length));
  for (const [k, v] of pairs) process.stdout.write(`${(k + ":").padEnd(w + 1)} ${cell(v)}\n`);
}

export const note = (msg) => process.stderr.write(msg + "\n");

/** Seconds or milliseconds since the epoch → ISO time (the admin API uses both). */
export function when(t) {
  if (t === null || t === undefined) return null;
  const ms = t < 1e11 ? t * 1000 : t;
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function bytes(n) {
  if (n === null || n === undefined) return null;
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

/** A secret read from the terminal without echo; `what` names it in the prompt. */
export function promptHidden(what) {
  return new Promise((resolve, reject) => {
    if (!process.stdin.isTTY) return reject(new CliError(`${what} needed: run in a terminal, or use --password-stdin`, EXIT.USAGE));
    let muted = false;
    const out = new Writable({
      write(chunk, _enc, cb) {
        if (!muted) process.stderr.write(chunk);
        cb();
      },
    });
    const rl = createInterface({ input: process.stdin, output: out, terminal: true });
    rl.question(`${what}: `, (answer) => {
      rl.close();
      process.stderr.write("\n");
      resolve(answer);
    });
    muted = true;
  });
}

export function promptLine(what) {
  return new Promise((resolve, reject) => {
    if (!process.stdin.isTTY) return reject(new CliError(`${what} needed: pass it as an option (e.g. -u)`, EXIT.USAGE));
    const rl = createInterface({ input: process.stdin, output: process.stderr });
    rl.question(`${what}: `, (a) => {
      rl.close();
      resolve(a.trim());
    });
  });
}

/** First line of stdin (for --password-stdin). */
export async function readStdinLine() {
  let data = "";
  for await (const chunk of process.stdin) {
    data += chunk;
    if (data.includes("\n") || data.length > 65536) break;
  }
  return data.split(/\r?\n/)[0];
}

/** All of stdin as text (policy documents). */
export async function readStdin(max = 1024 * 1024) {
  let data = "";
  for await (const chunk of process.stdin) {
    data += chunk;
    if (data.length > max) throw new Error(`stdin is larger than ${max} bytes`);
  }
  return data;
}
