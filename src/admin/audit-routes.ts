// /admin/audit: query, export, live tail and chain verification of the audit log
// (docs/audit.md). Mounted inside the admin API, so its admin gate applies.
import { Hono, type Context } from "hono";
import { streamSSE } from "hono/streaming";
import { oci } from "../oci/errors";
import type { Env } from "../env";
import { auditIndexFor, auditLogFor } from "../stores";
import { GENESIS, MAX_QUERY_ROWS, dayOf, type AuditFilter, type AuditRow } from "../stores/audit-log";
import { drainSpool } from "../audit/record";

type Ctx = Context<{ Bindings: Env }>;

const DEFAULT_PAGE = 100;
/** A live tail ends after this long; EventSource clients reconnect with Last-Event-ID. */
const STREAM_MAX_MS = 10 * 60_000;
const STREAM_POLL_MS = 1000;
/** A comment line this often: keeps proxies from closing an idle tail and notices a gone client. */
const STREAM_HEARTBEAT_MS = 15_000;
const CURSOR_RE = /^(\d{4}-\d{2}-\d{2})\.(\d{1,12})$/;

const bad = (message: string) => oci("UNSUPPORTED", message, undefined, 400);

function time(v: string | undefined, name: string): number | undefined {
  if (v === undefined || v === "") return undefined;
  const t = /^\d{1,15}$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(t)) throw bad(`${name} must be an ISO 8601 time or milliseconds since the epoch`);
  return t;
}

function filterOf(c: Ctx): AuditFilter {
  const q = (k: string) => {
    const v = c.req.query(k);
    if (v !== undefined && v.length > 512) throw bad(`${k} is longer than 512 characters`);
    return v || undefined;
  };
  const outcome = q("outcome");
  if (outcome !== undefined && outcome !== "success" && outcome !== "failure") throw bad('outcome must be "success" or "failure"');
  const since = time(q("since"), "since");
  const until = time(q("until"), "until");
  if (since !== undefined && until !== undefined && until < since) throw bad("until is before since");
  return { actor: q("actor"), repository: q("repository"), action: q("action"), outcome, since, until };
}

function cursorOf(v: string | undefined): { day: string; seq: number } | null {
  if (!v) return null;
  const m = CURSOR_RE.exec(v);
  if (!m) throw bad("invalid cursor (use the `next` value of the previous page)");
  return { day: m[1], seq: Number(m[2]) };
}

async function daysIn(env: Env, f: AuditFilter): Promise<string[]> {
  return auditIndexFor(env).listDays(f.since !== undefined ? dayOf(f.since) : undefined, f.until !== undefined ? dayOf(f.until) : undefined);
}

const parse = (r: AuditRow) => JSON.parse(r.body) as Record<string, unknown>;

export const auditRoutes = new Hono<{ Bindings: Env }>();

// GET /admin/audit — newest first, cursor paging.
auditRoutes.get("/", async (c) => {
  const f = filterOf(c);
  const limitText = c.req.query("limit");
  const limit = limitText === undefined ? DEFAULT_PAGE : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_QUERY_ROWS) throw bad(`limit must be an integer from 1 to ${MAX_QUERY_ROWS}`);
  const cursor = cursorOf(c.req.query("cursor"));
  await drainSpool(c.env).catch(() => 0);
  const days = (await daysIn(c.env, f)).reverse().filter((d) => !cursor || d <= cursor.day);
  const events: Record<string, unknown>[] = [];
  let next: string | null = null;
  for (const day of days) {
    const rows = await auditLogFor(c.env, day).query(f, { beforeSeq: cursor && cursor.day === day ? cursor.seq : undefined, limit: limit - events.length });
    events.push(...rows.map(parse));
    if (events.length >= limit) {
      next = `${day}.${rows[rows.length - 1].seq}`;
      break;
    }
  }
  return c.json({ events, next });
});

// GET /admin/audit/export — NDJSON, oldest first; each DO call returns at most 500 rows.
auditRoutes.get("/export", async (c) => {
  const f = filterOf(c);
  if (f.since === undefined) throw bad("export needs since= (ISO 8601 or epoch milliseconds)");
  const days = await daysIn(c.env, f);
  const env = c.env;
  let i = 0;
  let after = 0;
  const enc = new TextEncoder();
  const stream = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      while (i < days.length) {
        const rows = await auditLogFor(env, days[i]).query(f, { afterSeq: after, limit: MAX_QUERY_ROWS });
        if (rows.length === 0) {
          i++;
          after = 0;
          continue;
        }
        after = rows[rows.length - 1].seq;
        ctl.enqueue(enc.encode(rows.map((r) => r.body + "\n").join("")));
        return;
      }
      ctl.close();
    },
  });
  return new Response(stream, { headers: { "Content-Type": "application/x-ndjson; charset=utf-8", "Cache-Control": "no-store" } });
});

// GET /admin/audit/stream — server-sent events of new entries (filters apply), one per event,
// id "<day>.<seq>"; resumes after Last-Event-ID (or ?after=) when the client reconnects.
auditRoutes.get("/stream", async (c) => {
  const f = filterOf(c);
  const start = cursorOf(c.req.header("Last-Event-ID") ?? c.req.query("after"));
  const env = c.env;
  return streamSSE(c, async (s) => {
    let pos = start ?? { day: dayOf(Date.now()), seq: (await auditLogFor(env, dayOf(Date.now())).summary()).count };
    const until = Date.now() + STREAM_MAX_MS;
    let beat = Date.now();
    await s.writeSSE({ event: "ready", data: JSON.stringify({ after: `${pos.day}.${pos.seq}` }), id: `${pos.day}.${pos.seq}` });
    while (!s.aborted && Date.now() < until) {
      const rows = await auditLogFor(env, pos.day).query(f, { afterSeq: pos.seq, limit: MAX_QUERY_ROWS });
      for (const r of rows) await s.writeSSE({ event: "audit", data: r.body, id: `${pos.day}.${r.seq}` });
      if (rows.length) pos = { day: pos.day, seq: rows[rows.length - 1].seq };
      else if (pos.day < dayOf(Date.now())) pos = { day: dayOf(Date.now()), seq: 0 }; // midnight
      else {
        await s.sleep(STREAM_POLL_MS);
        if (Date.now() - beat >= STREAM_HEARTBEAT_MS) {
          beat = Date.now();
          await s.write(": heartbeat\n\n");
        }
      }
    }
  });
});

// GET /admin/audit/verify — recompute every retained day's chain and the checkpoint chain of
// pruned days; name the first entry that does not match.
auditRoutes.get("/verify", async (c) => {
  await drainSpool(c.env).catch(() => 0);
  const index = auditIndexFor(c.env);
  const checkpoints = await index.checkpoints();
  let prevCp = GENESIS;
  for (const cp of checkpoints) {
    const expect = await sha256Checkpoint(prevCp, cp);
    if (expect !== cp.checkpoint) return c.json({ ok: false, firstMismatch: { day: cp.day, seq: null, id: null, reason: "the retention checkpoint of this pruned day does not match" }, checkpoints: checkpoints.length }, 200);
    prevCp = cp.checkpoint;
  }
  const days: { day: string; count: number; head: string; previous: { day: string; count: number } | null }[] = [];
  const kept = await index.listDays();
  const prunedDays = new Map(checkpoints.map((cp) => [cp.day, cp]));
  for (const day of kept) {
    const part = auditLogFor(c.env, day);
    const mismatch = async (seq: number, reason: string) => {
      const row = (await part.query({}, { afterSeq: seq - 1, limit: 1 }))[0];
      let id: string | null = null;
      try {
        id = row ? ((JSON.parse(row.body) as { id?: string }).id ?? null) : null;
      } catch {
        /* the body itself was damaged */
      }
      return c.json({ ok: false, firstMismatch: { day, seq, id, reason }, verifiedDays: days, checkpoints: checkpoints.length });
    };
    // Across days: the day's first entry chains to the previous day's hash at the count it had
    // then (the day's own verify checks that link hash); here, that the previous day still has
    // that hash there — a rewritten or removed earlier day shows up at the next day's link.
    const link = await part.link();
    if (link?.previousDay) {
      const p = link.previousDay;
      const cp = prunedDays.get(p);
      if (kept.includes(p) && kept.indexOf(p) < kept.indexOf(day)) {
        const h = await auditLogFor(c.env, p).hashAt(link.count);
        if (h !== link.head) return mismatch(1, `its link to ${p} (entry ${link.count}) does not match that day's chain`);
      } else if (cp) {
        if (cp.count < link.count || (cp.count === link.count && cp.head !== link.head)) return mismatch(1, `its link to ${p} does not match that pruned day's checkpoint`);
      } else {
        return mismatch(1, `it is linked to ${p}, which is neither kept nor in the retention checkpoints (a day was removed)`);
      }
    }
    let from = 1;
    let prev: string | undefined = undefined; // the day's first entry chains to its link
    let count = 0;
    for (;;) {
      const v = await part.verify(from, prev);
      if (!v.ok) return mismatch(v.seq, v.reason);
      count += v.count;
      if (v.next === null) {
        days.push({ day, count, head: v.head, previous: link?.previousDay ? { day: link.previousDay, count: link.count } : null });
        break;
      }
      from = v.next;
      prev = v.head;
    }
  }
  return c.json({ ok: true, firstMismatch: null, verifiedDays: days, checkpoints: checkpoints.length, checkpoint: prevCp === GENESIS ? null : prevCp });
});

// POST /admin/audit/drain — move events spooled in R2 (AuditLog was unreachable) into the log.
auditRoutes.post("/drain", async (c) => c.json({ moved: await drainSpool(c.env) }));

async function sha256Checkpoint(prev: string, cp: { day: string; count: number; head: string }): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${prev}\n${cp.day}\n${cp.count}\n${cp.head}`)));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

