// `cloister snapshot` and `cloister restore` (docs/adr/0016). A snapshot is NDJSON: a header line,
// one record per line, an "end" line with counts (a file without it is truncated and refused).
// Blob bytes are not in it: restore into a registry whose R2 bucket holds them.
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync } from "node:fs";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { CliError, EXIT } from "./session.mjs";
import { note, printFields, printJson } from "./output.mjs";

export const FORMAT = "cloister-snapshot";
export const VERSION = 1;

/**
 * Restore batches stay under the server's limits (1000 records, 8 MiB, 1000 rows, 500 blobs,
 * 500 accounts, 100 repositories) and keep each call's subrequests (R2 HEADs, store calls) modest.
 */
const BATCH_RECORDS = 500;
const BATCH_BYTES = 2 * 1024 * 1024;
const BATCH_ROWS = 1000;
const BATCH_BLOBS = 200;
const BATCH_ACCOUNTS = 500;
const BATCH_REPOS = 50;

export async function snapshot(c, file, { json, force }) {
  if (existsSync(file) && !force) throw new CliError(`${file} exists: pass --force to overwrite it`, EXIT.USAGE);
  const tmp = `${file}.${process.pid}.partial`;
  const out = createWriteStream(tmp, { mode: 0o600 });
  const counts = { users: 0, rules: 0, robots: 0, retention: 0, quotas: 0, blobs: 0, repositories: 0, rows: 0 };
  const write = async (rec) => {
    if (!out.write(JSON.stringify(rec) + "\n")) await once(out, "drain");
  };
  try {
    await write({ type: FORMAT, version: VERSION, createdAt: new Date().toISOString(), server: c.server });
    for (const [kind, type] of [["users", "user"], ["rules", "rule"], ["robots", "robot"]]) {
      let after = "";
      for (;;) {
        const p = (await c.json("GET", `/admin/snapshot/accounts?kind=${kind}&after=${encodeURIComponent(after)}`)).data;
        for (const item of p.items) await write({ type, ...item });
        counts[kind] += p.items.length;
        if (!p.next) break;
        after = p.next;
      }
    }
    for (const r of (await c.json("GET", "/admin/retention")).data.rules) {
      const { updatedAt: _u, ...rule } = r;
      await write({ type: "retention", rule });
      counts.retention++;
    }
    for (const q of (await c.json("GET", "/admin/quotas")).data.quotas) {
      await write({ type: "quota", pattern: q.pattern, limitBytes: q.limitBytes });
      counts.quotas++;
    }
    // Blob rows before repositories: a restore re-holds a repository's digests from them.
    let after = "";
    for (;;) {
      const p = (await c.json("GET", `/admin/snapshot/blobs?after=${encodeURIComponent(after)}`)).data;
      for (const b of p.items) await write({ type: "blob", ...b });
      counts.blobs += p.items.length;
      if (!p.next) break;
      after = p.next;
    }
    let last = "";
    for (;;) {
      const page = (await c.json("GET", `/admin/snapshot/repositories?last=${encodeURIComponent(last)}`)).data;
      for (const name of page.items) {
        let cursor = null;
        do {
          const q = cursor ? `?cursor=${encodeURIComponent(JSON.stringify(cursor))}` : "";
          const r = await c.json("GET", `/admin/snapshot/repositories/${name}${q}`, { ok: [200, 404] });
          if (r.status === 404) break; // emptied by GC since it was listed
          for (const part of r.data.parts) {
            await write({ type: "rows", repository: name, table: part.table, rows: part.rows });
            counts.rows += part.rows.length;
          }
          cursor = r.data.next;
        } while (cursor);
        counts.repositories++;
      }
      if (!page.next) break;
      last = page.next;
    }
    await write({ type: "end", counts });
    out.end();
    await once(out, "finish");
    renameSync(tmp, file);
  } catch (e) {
    out.destroy();
    rmSync(tmp, { force: true });
    throw e;
  }
  const result = { file, server: c.server, counts };
  if (json) return printJson(result);
  note(`Wrote ${file}: ${counts.repositories} repositories (${counts.rows} index rows), ${counts.blobs} blobs, ${counts.users} users, ${counts.rules} rules, ${counts.robots} robots, ${counts.retention} retention and ${counts.quotas} quota rules.`);
  note("Blob bytes are not in the snapshot: restore into a registry whose R2 bucket holds them (docs/cli.md).");
}

/**
 * Streams the records of a snapshot to `onRecord`, checking the header, the record types and the
 * end line with its counts (a truncated or damaged file throws). Restore reads the file twice:
 * once to check it, once to send it, so nothing is written from a file that fails the check.
 */
async function readSnapshot(file, onRecord = () => {}) {
  if (!existsSync(file)) throw new CliError(`${file} does not exist`, EXIT.NOT_FOUND);
  const rl = createInterface({ input: createReadStream(file, "utf8"), crlfDelay: Infinity });
  let header = null;
  let end = null;
  let n = 0;
  const seen = { users: 0, rules: 0, blobs: 0, rows: 0 };
  for await (const line of rl) {
    n++;
    if (!line.trim()) continue;
    let rec;
    try {
      rec = JSON.parse(line);
    } catch {
      throw new CliError(`${file}:${n}: not a JSON line; is this a cloister snapshot?`);
    }
    if (n === 1) {
      if (rec.type !== FORMAT) throw new CliError(`${file} is not a cloister snapshot`);
      if (rec.version !== VERSION) throw new CliError(`${file} is snapshot format version ${rec.version}; this cloister reads version ${VERSION}`);
      header = rec;
      continue;
    }
    if (end) throw new CliError(`${file}:${n}: records after the end line`);
    if (rec.type === "end") {
      end = rec;
      continue;
    }
    if (!["user", "rule", "robot", "retention", "quota", "blob", "rows"].includes(rec.type)) throw new CliError(`${file}:${n}: unknown record type ${JSON.stringify(rec.type)}`);
    if (rec.type === "user") seen.users++;
    if (rec.type === "rule") seen.rules++;
    if (rec.type === "blob") seen.blobs++;
    if (rec.type === "rows") seen.rows += Array.isArray(rec.rows) ? rec.rows.length : 0;
    await onRecord(rec);
  }
  if (!header) throw new CliError(`${file} is empty`);
  if (!end) throw new CliError(`${file} has no end line: the snapshot is truncated`);
  const c = end.counts ?? {};
  if (c.users !== seen.users || c.rules !== seen.rules || c.blobs !== seen.blobs || c.rows !== seen.rows) {
    throw new CliError(`${file}: the record counts do not match its end line: the snapshot is damaged`);
  }
  return header;
}

/** A rows record split so each piece's JSON is at most `max` bytes (one row may stand alone). */
function splitRows(rec, max) {
  const size = Buffer.byteLength(JSON.stringify(rec));
  if (size <= max || rec.rows.length <= 1) return [rec];
  const mid = Math.ceil(rec.rows.length / 2);
  return [...splitRows({ ...rec, rows: rec.rows.slice(0, mid) }, max), ...splitRows({ ...rec, rows: rec.rows.slice(mid) }, max)];
}

export async function restore(c, file, { json, resume }) {
  const users = [];
  const robots = [];
  const repositories = new Set();
  const settings = [];
  const header = await readSnapshot(file, (r) => {
    if (r.type === "user") users.push(r.name);
    else if (r.type === "robot") robots.push(r.account);
    else if (r.type === "rows") repositories.add(r.repository);
    else if (r.type === "retention" || r.type === "quota") settings.push(r);
  });
  const begin = (await c.json("POST", "/admin/restore", { body: { resume } })).data;
  const total = { users: 0, rules: 0, skippedRobotRules: 0, blobs: 0, rows: 0, missingBytes: [], missing: [] };
  let batch = [];
  let size = 0;
  let rows = 0;
  let blobs = 0;
  let accounts = 0;
  let repos = new Set();
  const flush = async () => {
    if (!batch.length) return;
    const r = (await c.json("POST", `/admin/restore/${begin.id}/records`, { body: { records: batch } })).data;
    for (const k of ["users", "rules", "skippedRobotRules", "blobs", "rows"]) total[k] += r[k];
    total.missingBytes.push(...r.missingBytes);
    total.missing.push(...r.missing);
    batch = [];
    size = rows = blobs = accounts = 0;
    repos = new Set();
  };
  await readSnapshot(file, async (r) => {
    if (!["user", "rule", "blob", "rows"].includes(r.type)) return;
    for (const rec of r.type === "rows" ? splitRows(r, BATCH_BYTES) : [r]) {
      const bytes = Buffer.byteLength(JSON.stringify(rec));
      const n = rec.type === "rows" ? rec.rows.length : 0;
      const blob = rec.type === "blob" ? 1 : 0;
      const account = rec.type === "user" || rec.type === "rule" ? 1 : 0;
      const newRepo = rec.type === "rows" && !repos.has(rec.repository) ? 1 : 0;
      if (batch.length + 1 > BATCH_RECORDS || size + bytes > BATCH_BYTES || rows + n > BATCH_ROWS || blobs + blob > BATCH_BLOBS || accounts + account > BATCH_ACCOUNTS || repos.size + newRepo > BATCH_REPOS) await flush();
      if (rec.type === "rows") repos.add(rec.repository);
      batch.push(rec);
      size += bytes;
      rows += n;
      blobs += blob;
      accounts += account;
    }
  });
  await flush();
  let retention = 0;
  let quotas = 0;
  for (const r of settings) {
    if (r.type === "retention") {
      await c.json("PUT", "/admin/retention", { body: r.rule });
      retention++;
    } else {
      await c.json("PUT", "/admin/quotas", { body: { pattern: r.pattern, limitBytes: r.limitBytes } });
      quotas++;
    }
  }
  const incomplete = total.missingBytes.length > 0 || total.missing.length > 0;
  // An incomplete restore stays open: copy the missing objects, then `restore --resume` sends it again.
  const done = incomplete ? begin : (await c.json("POST", `/admin/restore/${begin.id}/finish`)).data;
  const result = { file, from: header.server, snapshotAt: header.createdAt, restore: done, repositories: repositories.size, ...total, retention, quotas, usersWithoutPassword: users, robotsNotRestored: robots };
  if (json) printJson(result);
  else {
    printFields([
      ["restored from", `${header.server} (${header.createdAt})`],
      ["repositories", repositories.size],
      ["index rows", total.rows],
      ["blobs", total.blobs],
      ["users", total.users],
      ["policy rules", total.rules],
      ["retention/quota rules", `${retention}/${quotas}`],
    ]);
    if (users.length) note(`Users have no password after a restore (a snapshot holds no secrets): set one with \`cloister user passwd NAME\` for ${users.join(", ")}.`);
    if (robots.length) note(`Robots are not restored (their secrets are not in a snapshot): recreate ${robots.join(", ")} with \`cloister robot create\`.`);
  }
  if (incomplete) {
    throw new CliError(`${total.missingBytes.length} blobs have no bytes in this registry's bucket and were left out, with ${total.missing.reduce((n, m) => n + m.digests.length, 0)} index rows that need them; the restore stays open: copy the R2 objects (docs/cli.md), then run \`cloister restore --resume ${file}\``);
  }
}
