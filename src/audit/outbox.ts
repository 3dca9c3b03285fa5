// The audit outbox (docs/adr/0021): a registry mutation's event is written in the mutation's own
// SQLite transaction, in the Durable Object that commits it (a repository's TrustStore), and that
// object's alarm forwards it to the AuditLog day partition in the background — so a push waits on
// no audit call, and its event is durable before the 2xx (it commits or rolls back with the change).
//
// Forwarding is at least once and batched (FORWARD_BATCH per run, one AuditLog call per day in the
// batch); the AuditLog appends an event id once (a retry after a lost answer is a no-op). A failed
// forward keeps the rows and retries with backoff; nothing is dropped.
import type { Env } from "../env";
import { dayOf } from "../stores/audit-log";
import { appendEvents } from "./record";
import { eventBody, type AuditEvent } from "./events";

/** Events one alarm run forwards (each ≤ MAX_EVENT_BYTES: ≤ 1.6 MiB per AuditLog call, well under the RPC cap). */
export const FORWARD_BATCH = 100;
/** Delay from a mutation to its forward: mutations landing meanwhile go in the same batch. */
export const FORWARD_DELAY_MS = 100;
/** Backoff after a failed forward: doubles per consecutive failure, up to the maximum. */
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;

export class AuditOutbox {
  /** When the alarm is known to be armed (in memory only; a cold object asks storage). */
  private armedAt: number | null = null;
  private failures = 0;

  constructor(private readonly ctx: DurableObjectState, private readonly env: Env) {}

  /** The table; part of the owner's schema. */
  schema(): void {
    this.ctx.storage.sql.exec(`CREATE TABLE IF NOT EXISTS audit_outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, body TEXT NOT NULL)`);
  }

  /**
   * Write `ev` (built by the Worker, draftEvent) — call INSIDE the mutation's transactionSync.
   * `details` adds what only the transaction knows (e.g. the tag's previous digest).
   */
  add(ev: AuditEvent | null | undefined, details?: Record<string, unknown>): void {
    if (!ev) return;
    const body = eventBody(details ? { ...ev, details: { ...(ev.details ?? {}), ...details } } : ev);
    this.ctx.storage.sql.exec(`INSERT INTO audit_outbox (id, body) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, ev.id, body);
  }

  /** After a committed write that added an event: make sure the alarm will forward it. */
  async arm(): Promise<void> {
    if (this.armedAt !== null) return;
    const at = (await this.ctx.storage.getAlarm()) ?? Date.now() + FORWARD_DELAY_MS;
    this.armedAt = at;
    await this.ctx.storage.setAlarm(at);
  }

  /** Rows waiting to be forwarded. */
  pending(): number {
    return this.ctx.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM audit_outbox`).one().n;
  }

  /**
   * The alarm's work: forward one batch, oldest first, then delete exactly what was forwarded and
   * re-arm if more is waiting (or, after a failure, later). Never throws.
   */
  async alarm(): Promise<void> {
    this.armedAt = null;
    const rows = this.ctx.storage.sql
      .exec<{ seq: number; body: string }>(`SELECT seq, body FROM audit_outbox ORDER BY seq LIMIT ${FORWARD_BATCH}`)
      .toArray();
    if (rows.length === 0) return;
    const byDay = new Map<string, { seq: number; ev: AuditEvent }[]>();
    for (const r of rows) {
      const ev = JSON.parse(r.body) as AuditEvent;
      const day = dayOf(Date.parse(ev.time));
      byDay.set(day, [...(byDay.get(day) ?? []), { seq: r.seq, ev }]);
    }
    let forwarded = 0;
    try {
      // Days in order; within a day the outbox's order is the append order.
      for (const [day, batch] of [...byDay].sort(([a], [b]) => (a < b ? -1 : 1))) {
        await appendEvents(this.env, day, batch.map((b) => b.ev));
        // Deleted only once appended: a crash in between forwards again, and the AuditLog drops the repeat.
        for (let i = 0; i < batch.length; i += 90) {
          const seqs = batch.slice(i, i + 90).map((b) => b.seq);
          this.ctx.storage.sql.exec(`DELETE FROM audit_outbox WHERE seq IN (${seqs.map(() => "?").join(",")})`, ...seqs);
        }
        forwarded += batch.length;
      }
      this.failures = 0;
    } catch (e) {
      this.failures++;
      const wait = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.failures - 1));
      console.error(JSON.stringify({ type: "audit-forward", error: String(e), forwarded, pending: rows.length - forwarded, retryInMs: wait }));
      this.armedAt = Date.now() + wait;
      await this.ctx.storage.setAlarm(this.armedAt);
      return;
    }
    if (rows.length === FORWARD_BATCH || this.pending() > 0) {
      this.armedAt = Date.now();
      await this.ctx.storage.setAlarm(this.armedAt);
    }
  }
}
