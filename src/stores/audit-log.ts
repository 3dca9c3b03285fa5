// AuditLog: one Durable Object per UTC day holds that day's events, append-only and hash-chained
// (each row stores the previous row's hash). One more object, named "index", lists the days,
// prunes those older than AUDIT_RETENTION_DAYS on its alarm, and keeps a checkpoint chain of
// what it pruned, so verification still covers history that is gone (docs/adr/0012).
import { DurableObject } from "cloudflare:workers";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";
import type { Env } from "../env";
import { auditIndexFor, auditLogFor, webhooksFor } from "./index";
import { MAX_FANOUT_BATCH } from "../webhooks/model";

export const GENESIS = "0".repeat(64);
/** Largest page a single query returns: keeps every RPC result small (well under 32 MiB). */
export const MAX_QUERY_ROWS = 500;
/** A failed webhook fan-out is retried after this long (the outbox keeps the events meanwhile). */
const FANOUT_RETRY_MS = 30_000;

export interface AuditRow {
  /** Position in its day, from 1. */
  seq: number;
  /** Canonical JSON of the event, exactly as hashed. */
  body: string;
  prev: string;
  hash: string;
}

export interface AuditFilter {
  actor?: string;
  repository?: string;
  action?: string;
  outcome?: "success" | "failure";
  since?: number; // ms
  until?: number; // ms
}

export interface IndexedFields {
  time: number;
  actor: string;
  action: string;
  repository: string | null;
  outcome: string;
}

export type VerifyResult =
  | { ok: true; count: number; head: string }
  | { ok: false; count: number; seq: number; reason: string };

// Synchronous SHA-256 (@noble/hashes): an append never awaits, so concurrent appends cannot
// interleave and fork the chain (a DO runs other requests while one awaits).
function sha256hex(text: string): string {
  return bytesToHex(sha256(utf8ToBytes(text)));
}

/** The hash of one entry: its predecessor's hash and its own canonical body. */
export function entryHash(prev: string, body: string): string {
  return sha256hex(`${prev}\n${body}`);
}

export class AuditLog extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.schema();
  }

  private schema(): void {
    // Day partitions use `events`; the index object uses `days` and `pruned`.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS events (
      seq INTEGER PRIMARY KEY,
      time INTEGER NOT NULL,
      actor TEXT NOT NULL,
      action TEXT NOT NULL,
      repository TEXT,
      outcome TEXT NOT NULL,
      body TEXT NOT NULL,
      prev TEXT NOT NULL,
      hash TEXT NOT NULL
    )`);
    // Events appended but not yet handed to the Webhooks object (docs/adr/0014): written in the
    // append's transaction, so an event that is in the log is also, eventually, fanned out.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY)`);
    // Event ids appended here (docs/adr/0021): an id is appended once, so the at-least-once
    // forward of a TrustStore's audit outbox, or a spool drain retried, never duplicates an event.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS event_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID`);
    // The link to the previous day (one row, written before this day's first entry): the first
    // entry's prev is linkHash(previous day, its entry count then, its hash at that entry), so
    // days form one chain. No row and entries present: a day from before links (prev = GENESIS).
    this.sql.exec(`CREATE TABLE IF NOT EXISTS link (
      id INTEGER PRIMARY KEY CHECK (id = 1), prev_day TEXT, prev_count INTEGER NOT NULL, prev_head TEXT NOT NULL
    )`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS days (day TEXT PRIMARY KEY) WITHOUT ROWID`);
    this.sql.exec(`CREATE TABLE IF NOT EXISTS pruned (
      day TEXT PRIMARY KEY, count INTEGER NOT NULL, head TEXT NOT NULL, checkpoint TEXT NOT NULL
    ) WITHOUT ROWID`);
  }

  // ---- day partition ----------------------------------------------------------------------

  /**
   * Append events in order. The rows are written synchronously before the first await, so
   * appends never interleave and the chain stays linear; the caller registers the day in the
   * index (separately, idempotent). Each event is also put in the outbox, which this object's
   * alarm forwards to the webhooks after the caller has its answer. An event whose `id` was
   * appended before is skipped (its first seq and hash are answered): appends are idempotent.
   */
  async append(events: { id?: string; body: string; fields: IndexedFields }[]): Promise<{ seq: number; hash: string }[]> {
    if (events.length > 0 && this.needsLink()) {
      // Once per day: look up the previous day's head (other objects; may throw, and then the
      // append fails and record() spools the event). Then, synchronously, the first of
      // concurrent first appends writes the link.
      const link = await this.previousDayHead(dayOf(events[0].fields.time));
      if (this.needsLink()) this.sql.exec(`INSERT INTO link (id, prev_day, prev_count, prev_head) VALUES (1, ?, ?, ?)`, link.day, link.count, link.head);
    }
    const last = this.sql.exec<{ seq: number; hash: string }>(`SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1`).toArray()[0];
    let seq = last?.seq ?? 0;
    let prev = last?.hash ?? this.anchor();
    // All rows in one synchronous transaction: all of them or none.
    const rows: { seq: number; id?: string; body: string; fields: IndexedFields; prev: string; hash: string }[] = [];
    const answers: { seq: number; hash: string }[] = [];
    const seen = new Set<string>();
    for (const e of events) {
      const before = e.id === undefined ? undefined : this.sql.exec<{ seq: number; hash: string }>(
        `SELECT e.seq, e.hash FROM event_ids i JOIN events e ON e.seq = i.seq WHERE i.id = ?`, e.id).toArray()[0];
      if (before) {
        answers.push(before);
        continue;
      }
      if (e.id !== undefined && seen.has(e.id)) continue;
      if (e.id !== undefined) seen.add(e.id);
      const hash = entryHash(prev, e.body);
      rows.push({ seq: ++seq, id: e.id, body: e.body, fields: e.fields, prev, hash });
      answers.push({ seq, hash });
      prev = hash;
    }
    this.ctx.storage.transactionSync(() => {
      for (const r of rows) {
        this.sql.exec(
          `INSERT INTO events (seq, time, actor, action, repository, outcome, body, prev, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          r.seq, r.fields.time, r.fields.actor, r.fields.action, r.fields.repository, r.fields.outcome, r.body, r.prev, r.hash,
        );
        this.sql.exec(`INSERT INTO outbox (seq) VALUES (?)`, r.seq);
        if (r.id !== undefined) this.sql.exec(`INSERT INTO event_ids (id, seq) VALUES (?, ?)`, r.id, r.seq);
      }
    });
    if (rows.length === 0) return answers;
    const alarm = await this.ctx.storage.getAlarm();
    if (alarm === null || alarm > Date.now()) await this.ctx.storage.setAlarm(Date.now());
    return answers;
  }

  /**
   * Hand up to MAX_FANOUT_BATCH outbox events to the Webhooks object (which queues them per
   * endpoint, idempotently per event id), then drop them from the outbox.
   */
  async forwardOutbox(): Promise<"done" | "more" | "failed"> {
    const rows = this.sql
      .exec<{ seq: number; body: string | null }>(`SELECT o.seq, e.body FROM outbox o LEFT JOIN events e ON e.seq = o.seq ORDER BY o.seq LIMIT ${MAX_FANOUT_BATCH}`)
      .toArray();
    if (rows.length === 0) return "done";
    try {
      await webhooksFor(this.env).fanOut(rows.flatMap((r) => (r.body === null ? [] : [r.body])));
    } catch (e) {
      console.error(JSON.stringify({ type: "webhook-fanout", error: String(e), retryInMs: FANOUT_RETRY_MS }));
      return "failed";
    }
    this.sql.exec(`DELETE FROM outbox WHERE seq <= ?`, rows[rows.length - 1].seq);
    return rows.length === MAX_FANOUT_BATCH ? "more" : "done";
  }

  private needsLink(): boolean {
    return this.sql.exec(`SELECT 1 FROM link UNION ALL SELECT 1 FROM events LIMIT 1`).toArray().length === 0;
  }

  /** The newest day before `day` (kept or pruned) and its entry count and head now. */
  private async previousDayHead(day: string): Promise<{ day: string | null; count: number; head: string }> {
    const prev = await auditIndexFor(this.env).previousDay(day);
    if (!prev) return { day: null, count: 0, head: GENESIS };
    if (prev.pruned) return { day: prev.day, count: prev.pruned.count, head: prev.pruned.head };
    const s = await auditLogFor(this.env, prev.day).summary();
    return { day: prev.day, ...s };
  }

  /** The prev of this day's first entry: GENESIS, or the hash of its link to the previous day. */
  private anchor(): string {
    const l = this.sql.exec<{ prev_day: string | null; prev_count: number; prev_head: string }>(`SELECT prev_day, prev_count, prev_head FROM link`).toArray()[0];
    return l?.prev_day ? linkHash(l.prev_day, l.prev_count, l.prev_head) : GENESIS;
  }

  /** This day's link: the previous day and its count and head when this day began; null for days from before links. */
  link(): { previousDay: string | null; count: number; head: string } | null {
    const l = this.sql.exec<{ prev_day: string | null; prev_count: number; prev_head: string }>(`SELECT prev_day, prev_count, prev_head FROM link`).toArray()[0];
    return l ? { previousDay: l.prev_day, count: l.prev_count, head: l.prev_head } : null;
  }

  /** The stored hash of entry `seq` (GENESIS for 0), or null when there is no such entry. */
  hashAt(seq: number): string | null {
    if (seq === 0) return GENESIS;
    return this.sql.exec<{ hash: string }>(`SELECT hash FROM events WHERE seq = ?`, seq).toArray()[0]?.hash ?? null;
  }

  /** Rows matching `f`, newest first below `beforeSeq` or oldest first above `afterSeq`. */
  query(f: AuditFilter, page: { beforeSeq?: number; afterSeq?: number; limit: number }): AuditRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (f.actor) (where.push("actor = ?"), args.push(f.actor));
    if (f.repository) (where.push("repository = ?"), args.push(f.repository));
    if (f.action) (where.push("(action = ? OR action LIKE ?)"), args.push(f.action, `${f.action}.%`));
    if (f.outcome) (where.push("outcome = ?"), args.push(f.outcome));
    if (f.since !== undefined) (where.push("time >= ?"), args.push(f.since));
    if (f.until !== undefined) (where.push("time < ?"), args.push(f.until));
    const asc = page.afterSeq !== undefined;
    if (page.beforeSeq !== undefined) (where.push("seq < ?"), args.push(page.beforeSeq));
    if (page.afterSeq !== undefined) (where.push("seq > ?"), args.push(page.afterSeq));
    const limit = Math.max(1, Math.min(MAX_QUERY_ROWS, Math.floor(page.limit)));
    return this.sql
      .exec<{ seq: number; body: string; prev: string; hash: string }>(
        `SELECT seq, body, prev, hash FROM events ${where.length ? "WHERE " + where.join(" AND ") : ""} ORDER BY seq ${asc ? "ASC" : "DESC"} LIMIT ${limit}`,
        ...args,
      )
      .toArray();
  }

  /**
   * Recompute the chain from the first row (or from `from`, continuing `prev`), at most
   * `limit` rows per call so a big day is verified in bounded steps.
   */
  verify(from = 1, expectedPrev?: string, limit = 5000): VerifyResult & { next: number | null } {
    const rows = this.sql
      .exec<{ seq: number; time: number; actor: string; action: string; repository: string | null; outcome: string; body: string; prev: string; hash: string }>(
        `SELECT * FROM events WHERE seq >= ? ORDER BY seq LIMIT ?`, from, limit + 1)
      .toArray();
    let prev = expectedPrev ?? this.anchor();
    let expectSeq = from;
    let count = 0;
    for (const r of rows.slice(0, limit)) {
      if (r.seq !== expectSeq) return { ok: false, count, seq: expectSeq, reason: `entry ${expectSeq} is missing`, next: null };
      if (r.prev !== prev) return { ok: false, count, seq: r.seq, reason: "its previous-hash does not match the entry before it", next: null };
      if (entryHash(prev, r.body) !== r.hash) return { ok: false, count, seq: r.seq, reason: "its content does not match its hash", next: null };
      const ev = safeParse(r.body);
      if (!ev || ev.time !== r.time || ev.action !== r.action || ev.actor !== r.actor || ev.repository !== r.repository || ev.outcome !== r.outcome) {
        return { ok: false, count, seq: r.seq, reason: "its indexed columns differ from its hashed content", next: null };
      }
      prev = r.hash;
      expectSeq++;
      count++;
    }
    return { ok: true, count, head: prev, next: rows.length > limit ? expectSeq : null };
  }

  /** Number of entries and the last hash. */
  summary(): { count: number; head: string } {
    const r = this.sql.exec<{ seq: number; hash: string }>(`SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1`).toArray()[0];
    return { count: r?.seq ?? 0, head: r?.hash ?? GENESIS };
  }

  /** Drop this whole partition (retention; called by the index after it took a checkpoint). */
  async destroy(): Promise<void> {
    await this.ctx.storage.deleteAll();
    this.schema(); // this instance may still be asked (a late event for a pruned day)
  }

  // ---- index ------------------------------------------------------------------------------

  /** Register a day (idempotent) and make sure the daily retention alarm is set. */
  async addDay(day: string): Promise<void> {
    this.sql.exec(`INSERT OR IGNORE INTO days (day) VALUES (?)`, day);
    if ((await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now() + 3600_000);
  }

  /** The newest day before `day`: a kept one, or a pruned one with its checkpointed count and head. */
  previousDay(day: string): { day: string; pruned: { count: number; head: string } | null } | null {
    const kept = this.sql.exec<{ day: string }>(`SELECT day FROM days WHERE day < ? ORDER BY day DESC LIMIT 1`, day).toArray()[0];
    const pruned = this.sql.exec<{ day: string; count: number; head: string }>(`SELECT day, count, head FROM pruned WHERE day < ? ORDER BY day DESC LIMIT 1`, day).toArray()[0];
    if (kept && (!pruned || kept.day > pruned.day)) return { day: kept.day, pruned: null };
    return pruned ? { day: pruned.day, pruned: { count: pruned.count, head: pruned.head } } : null;
  }

  /** Days with events in [fromDay, toDay], ascending; bounded by retention (<= ~3700 rows). */
  listDays(fromDay = "0000-00-00", toDay = "9999-99-99"): string[] {
    return this.sql.exec<{ day: string }>(`SELECT day FROM days WHERE day >= ? AND day <= ? ORDER BY day LIMIT 4000`, fromDay, toDay).toArray().map((r) => r.day);
  }

  /** Checkpoints of pruned days, oldest first. */
  checkpoints(): { day: string; count: number; head: string; checkpoint: string }[] {
    return this.sql.exec<{ day: string; count: number; head: string; checkpoint: string }>(`SELECT * FROM pruned ORDER BY day LIMIT 4000`).toArray();
  }

  /**
   * Retention: every day older than `retentionDays` is summarised into the checkpoint chain
   * (checkpoint = sha256(previous checkpoint, day, count, head)) and then deleted.
   */
  async prune(now: number, retentionDays: number): Promise<string[]> {
    const cutoff = dayOf(now - retentionDays * 86400_000);
    const old = this.sql.exec<{ day: string }>(`SELECT day FROM days WHERE day < ? ORDER BY day LIMIT 100`, cutoff).toArray().map((r) => r.day);
    for (const day of old) {
      const part = this.env.AUDIT_LOG.get(this.env.AUDIT_LOG.idFromName(`day:${day}`));
      const s = await part.summary();
      const before = this.sql.exec<{ checkpoint: string }>(`SELECT checkpoint FROM pruned ORDER BY day DESC LIMIT 1`).toArray()[0]?.checkpoint ?? GENESIS;
      const checkpoint = sha256hex(`${before}\n${day}\n${s.count}\n${s.head}`);
      this.ctx.storage.transactionSync(() => {
        this.sql.exec(`INSERT OR REPLACE INTO pruned (day, count, head, checkpoint) VALUES (?, ?, ?, ?)`, day, s.count, s.head, checkpoint);
        this.sql.exec(`DELETE FROM days WHERE day = ?`, day);
      });
      await part.destroy();
    }
    return old;
  }

  override async alarm(): Promise<void> {
    // A day partition: forward its outbox to the webhooks. The index object has no events.
    const fanout = await this.forwardOutbox();
    const isIndex = this.sql.exec(`SELECT 1 FROM days UNION ALL SELECT 1 FROM pruned LIMIT 1`).toArray().length > 0;
    if (!isIndex) {
      if (fanout === "more") await this.ctx.storage.setAlarm(Date.now());
      else if (fanout === "failed") await this.ctx.storage.setAlarm(Date.now() + FANOUT_RETRY_MS);
      return;
    }
    const days = Number(this.env.AUDIT_RETENTION_DAYS ?? 90);
    await this.prune(Date.now(), Number.isFinite(days) && days >= 1 ? Math.floor(days) : 90);
    await this.ctx.storage.setAlarm(Date.now() + 86400_000);
  }
}

/** What a day's first entry chains to: its previous day, that day's entry count and head then. */
export function linkHash(prevDay: string, prevCount: number, prevHead: string): string {
  return sha256hex(`link\n${prevDay}\n${prevCount}\n${prevHead}`);
}

export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function safeParse(body: string): { time: number; action: string; actor: string; repository: string | null; outcome: string } | null {
  try {
    const e = JSON.parse(body) as { time: string; action: string; actor: { principal: string }; target: { repository: string | null }; outcome: { status: number } };
    return { time: Date.parse(e.time), action: e.action, actor: e.actor.principal, repository: e.target.repository, outcome: e.outcome.status < 400 ? "success" : "failure" };
  } catch {
    return null;
  }
}
