// Webhooks: one Durable Object holding the endpoints and their delivery queue and log
// (docs/adr/0014). Audit events reach it only from the AuditLog's alarm (fanOut), never from a
// request; it sends due deliveries from its own alarm, each attempt bounded by a timeout, and
// reschedules failures with exponential backoff. Nothing on a push's path waits for it.
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import {
  MAX_ENDPOINTS,
  MAX_ERROR_LENGTH,
  MAX_FANOUT_BATCH,
  MAX_LOG_PER_ENDPOINT,
  MAX_PENDING_PER_ENDPOINT,
  SEND_BATCH,
  SEND_PER_ENDPOINT,
  SIGNATURE_HEADER,
  afterAttempt,
  endpointWants,
  payloadOf,
  signatureHeader,
  webhookConfig,
  type AttemptOutcome,
  type DeliveryState,
  type DeliveryView,
  type EndpointInput,
  type EndpointPatch,
  type EndpointView,
} from "./model";

type EndpointRow = {
  id: string;
  url: string;
  secret: string;
  events: string;
  repositories: string;
  enabled: number;
  description: string;
  created_at: number;
  updated_at: number;
};

type DeliveryRow = {
  seq: number;
  id: string;
  endpoint: string;
  event_id: string;
  action: string;
  body: string;
  state: DeliveryState;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  next_at: number | null;
  created_at: number;
  updated_at: number;
  round: number;
  round_at: number;
  sending: number;
};

interface Endpoint {
  id: string;
  url: string;
  secret: string;
  events: string[];
  repositories: string[];
  enabled: boolean;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export class Webhooks extends DurableObject<Env> {
  private readonly sql: SqlStorage;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = ctx.storage.sql;
    this.sql.exec(`CREATE TABLE IF NOT EXISTS endpoints (
      id TEXT PRIMARY KEY,
      url TEXT NOT NULL,
      secret TEXT NOT NULL,
      events TEXT NOT NULL,
      repositories TEXT NOT NULL,
      enabled INTEGER NOT NULL,
      description TEXT NOT NULL,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL
    ) WITHOUT ROWID`);
    // seq orders an endpoint's log; (endpoint, event_id) is unique, so an event fanned out twice
    // (the AuditLog retries a fan-out whose answer it lost) is queued once.
    this.sql.exec(`CREATE TABLE IF NOT EXISTS deliveries (
      seq INTEGER PRIMARY KEY AUTOINCREMENT,
      id TEXT NOT NULL UNIQUE,
      endpoint TEXT NOT NULL,
      event_id TEXT NOT NULL,
      action TEXT NOT NULL,
      body TEXT NOT NULL,
      state TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      last_status INTEGER,
      last_error TEXT,
      next_at INTEGER,
      created_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      round INTEGER NOT NULL DEFAULT 0,
      round_at INTEGER NOT NULL,
      sending INTEGER NOT NULL DEFAULT 0,
      UNIQUE (endpoint, event_id)
    )`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_at)`);
    this.sql.exec(`CREATE INDEX IF NOT EXISTS deliveries_log ON deliveries (endpoint, seq)`);
  }

  // ---- endpoints ------------------------------------------------------------------------------

  private endpointRows(): Endpoint[] {
    return this.sql
      .exec<EndpointRow>(`SELECT * FROM endpoints ORDER BY created_at, id LIMIT ${MAX_ENDPOINTS * 2}`)
      .toArray()
      .map((r) => ({ id: r.id, url: r.url, secret: r.secret, events: JSON.parse(r.events) as string[], repositories: JSON.parse(r.repositories) as string[], enabled: r.enabled === 1 }));
  }

  private view(id: string): EndpointView | null {
    const r = this.sql.exec<EndpointRow>(`SELECT * FROM endpoints WHERE id = ?`, id).toArray()[0];
    if (!r) return null;
    const pending = this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM deliveries WHERE endpoint = ? AND state = 'pending'`, id).one().n;
    return {
      id: r.id,
      url: r.url,
      events: JSON.parse(r.events) as string[],
      repositories: JSON.parse(r.repositories) as string[],
      enabled: r.enabled === 1,
      description: r.description,
      createdAt: iso(r.created_at)!,
      updatedAt: iso(r.updated_at)!,
      pending,
    };
  }

  createEndpoint(input: EndpointInput): { ok: true; endpoint: EndpointView } | { ok: false; reason: "limit" } {
    const n = this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM endpoints`).one().n;
    if (n >= MAX_ENDPOINTS) return { ok: false, reason: "limit" };
    const id = crypto.randomUUID();
    const now = Date.now();
    this.sql.exec(
      `INSERT INTO endpoints (id, url, secret, events, repositories, enabled, description, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      id, input.url, input.secret, JSON.stringify(input.events), JSON.stringify(input.repositories), input.enabled ? 1 : 0, input.description, now, now,
    );
    return { ok: true, endpoint: this.view(id)! };
  }

  listEndpoints(): EndpointView[] {
    return this.sql.exec<{ id: string }>(`SELECT id FROM endpoints ORDER BY created_at, id LIMIT ${MAX_ENDPOINTS * 2}`).toArray().map((r) => this.view(r.id)!);
  }

  getEndpoint(id: string): EndpointView | null {
    return this.view(id);
  }

  updateEndpoint(id: string, p: EndpointPatch): EndpointView | null {
    const r = this.sql.exec<EndpointRow>(`SELECT * FROM endpoints WHERE id = ?`, id).toArray()[0];
    if (!r) return null;
    this.sql.exec(
      `UPDATE endpoints SET url = ?, secret = ?, events = ?, repositories = ?, enabled = ?, description = ?, updated_at = ? WHERE id = ?`,
      p.url ?? r.url,
      p.secret ?? r.secret,
      p.events ? JSON.stringify(p.events) : r.events,
      p.repositories ? JSON.stringify(p.repositories) : r.repositories,
      p.enabled === undefined ? r.enabled : p.enabled ? 1 : 0,
      p.description ?? r.description,
      Date.now(),
      id,
    );
    return this.view(id);
  }

  /** Removes the endpoint and its whole delivery log. */
  deleteEndpoint(id: string): boolean {
    const exists = this.sql.exec(`SELECT 1 FROM endpoints WHERE id = ?`, id).toArray().length > 0;
    if (!exists) return false;
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(`DELETE FROM deliveries WHERE endpoint = ?`, id);
      this.sql.exec(`DELETE FROM endpoints WHERE id = ?`, id);
    });
    return true;
  }

  // ---- fan-out (from the AuditLog's alarm) ---------------------------------------------------

  /**
   * Queue one delivery per (enabled endpoint that wants it, event). Idempotent per event id.
   * An endpoint already holding MAX_PENDING_PER_ENDPOINT undelivered deliveries gets the event
   * logged as failed ("queue full") rather than queued: the queue stays bounded and the loss shows.
   */
  async fanOut(events: string[]): Promise<{ queued: number }> {
    if (events.length > MAX_FANOUT_BATCH) throw new Error(`fanOut takes at most ${MAX_FANOUT_BATCH} events per call`);
    const endpoints = this.endpointRows().filter((e) => e.enabled);
    if (endpoints.length === 0) return { queued: 0 };
    const now = Date.now();
    let queued = 0;
    const pending = new Map(endpoints.map((e) => [e.id, this.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM deliveries WHERE endpoint = ? AND state = 'pending'`, e.id).one().n]));
    this.ctx.storage.transactionSync(() => {
      for (const body of events) {
        let ev: { id: string; action: string; target?: { repository?: string | null } };
        try {
          ev = JSON.parse(body);
        } catch {
          continue; // a damaged row is the chain verifier's business, not a delivery
        }
        const repository = ev.target?.repository ?? null;
        for (const ep of endpoints) {
          if (!endpointWants(ep, { action: ev.action, repository })) continue;
          const full = pending.get(ep.id)! >= MAX_PENDING_PER_ENDPOINT;
          const inserted = this.sql.exec(
            `INSERT INTO deliveries (id, endpoint, event_id, action, body, state, last_error, next_at, created_at, updated_at, round_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (endpoint, event_id) DO NOTHING RETURNING seq`,
            crypto.randomUUID(), ep.id, ev.id, ev.action, body,
            full ? "failed" : "pending",
            full ? `queue full: ${MAX_PENDING_PER_ENDPOINT} deliveries were waiting for this endpoint` : null,
            full ? null : now, now, now, now,
          ).toArray().length > 0;
          if (inserted && !full) {
            pending.set(ep.id, pending.get(ep.id)! + 1);
            queued++;
          }
        }
      }
      for (const ep of endpoints) this.trimLog(ep.id);
    });
    if (queued > 0) await this.schedule();
    return { queued };
  }

  /** Keep the newest MAX_LOG_PER_ENDPOINT deliveries of an endpoint; pending ones always stay. */
  private trimLog(endpoint: string): void {
    const edge = this.sql.exec<{ seq: number }>(`SELECT seq FROM deliveries WHERE endpoint = ? ORDER BY seq DESC LIMIT 1 OFFSET ${MAX_LOG_PER_ENDPOINT}`, endpoint).toArray()[0];
    if (edge) this.sql.exec(`DELETE FROM deliveries WHERE endpoint = ? AND seq <= ? AND state != 'pending'`, endpoint, edge.seq);
  }

  // ---- delivery log ----------------------------------------------------------------------------

  private deliveryView(r: DeliveryRow, redeliveries = r.round): DeliveryView {
    return {
      id: r.id,
      eventId: r.event_id,
      action: r.action,
      state: r.state,
      attempts: r.attempts,
      lastStatus: r.last_status,
      lastError: r.last_error,
      nextAttemptAt: r.state === "pending" ? iso(r.next_at) : null,
      createdAt: iso(r.created_at)!,
      updatedAt: iso(r.updated_at)!,
      redeliveries,
    };
  }

  /** An endpoint's deliveries, newest first, below the cursor `before` (a seq). null: no such endpoint. */
  deliveries(endpoint: string, page: { limit: number; before?: number }): { deliveries: DeliveryView[]; next: number | null } | null {
    if (this.sql.exec(`SELECT 1 FROM endpoints WHERE id = ?`, endpoint).toArray().length === 0) return null;
    const limit = Math.max(1, Math.min(100, Math.floor(page.limit)));
    const rows = this.sql
      .exec<DeliveryRow>(`SELECT * FROM deliveries WHERE endpoint = ? AND seq < ? ORDER BY seq DESC LIMIT ?`, endpoint, page.before ?? Number.MAX_SAFE_INTEGER, limit + 1)
      .toArray();
    const more = rows.length > limit;
    const shown = rows.slice(0, limit);
    return { deliveries: shown.map((r) => this.deliveryView(r)), next: more ? shown[shown.length - 1].seq : null };
  }

  /**
   * Manual redelivery: the delivery becomes pending again, due now, with a fresh round of
   * attempts (attempts count from 0, the maximum age from now). An attempt already in flight still records its answer but cannot end the new round.
   */
  async redeliver(endpoint: string, deliveryId: string): Promise<{ ok: true; delivery: DeliveryView } | { ok: false; reason: "not-found" | "disabled" }> {
    const ep = this.sql.exec<{ enabled: number }>(`SELECT enabled FROM endpoints WHERE id = ?`, endpoint).toArray()[0];
    const row = this.sql.exec<DeliveryRow>(`SELECT * FROM deliveries WHERE id = ? AND endpoint = ?`, deliveryId, endpoint).toArray()[0];
    if (!ep || !row) return { ok: false, reason: "not-found" };
    if (ep.enabled !== 1) return { ok: false, reason: "disabled" };
    const now = Date.now();
    this.sql.exec(`UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ?, round_at = ?, updated_at = ?, round = round + 1, sending = 0 WHERE id = ?`, now, now, now, deliveryId);
    await this.schedule();
    return { ok: true, delivery: this.deliveryView(this.sql.exec<DeliveryRow>(`SELECT * FROM deliveries WHERE id = ?`, deliveryId).one()) };
  }

  // ---- sending ---------------------------------------------------------------------------------

  /**
   * Set the alarm to the earliest due delivery (or clear it). `floorMs`: not before now + this
   * (an alarm that could send nothing because every due endpoint is at its in-flight cap).
   */
  private async schedule(floorMs = 0): Promise<void> {
    const next = this.sql.exec<{ t: number | null }>(`SELECT min(next_at) AS t FROM deliveries WHERE state = 'pending'`).one().t;
    if (next === null) return void (await this.ctx.storage.deleteAlarm());
    const at = Math.max(next, Date.now() + floorMs);
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at || floorMs > 0) await this.ctx.storage.setAlarm(at);
  }

  /**
   * Start the due attempts and return at once: attempts run on, each bounded by its timeout and
   * rescheduling when it ends, so a slow endpoint never holds up the next alarm or the others.
   */
  override async alarm(): Promise<void> {
    const { started, done } = this.sendDue();
    this.ctx.waitUntil(done.catch((e) => console.error(JSON.stringify({ type: "webhook-send", error: String(e) }))));
    await this.schedule(started === 0 ? 1000 : 0);
  }

  /**
   * Claim and send due deliveries: at most SEND_BATCH per call and SEND_PER_ENDPOINT in flight
   * per endpoint. A claimed delivery's next attempt moves past the attempt's timeout (a lease):
   * if this object dies mid-send, the delivery is due again then (at least once).
   */
  sendDue(now = Date.now()): { started: number; done: Promise<void> } {
    const cfg = webhookConfig(this.env);
    const inflight = new Map(
      this.sql.exec<{ endpoint: string; n: number }>(`SELECT endpoint, count(*) AS n FROM deliveries WHERE state = 'pending' AND sending = 1 AND next_at > ? GROUP BY endpoint`, now).toArray().map((r) => [r.endpoint, r.n]),
    );
    const due = this.sql.exec<DeliveryRow>(`SELECT * FROM deliveries WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, seq LIMIT ${SEND_BATCH * 5}`, now).toArray();
    const picked: DeliveryRow[] = [];
    for (const d of due) {
      const n = inflight.get(d.endpoint) ?? 0;
      if (n >= SEND_PER_ENDPOINT || picked.length >= SEND_BATCH) continue;
      inflight.set(d.endpoint, n + 1);
      picked.push(d);
    }
    const endpoints = new Map(this.endpointRows().map((e) => [e.id, e]));
    for (const d of picked) this.sql.exec(`UPDATE deliveries SET next_at = ?, sending = 1 WHERE id = ?`, now + cfg.timeoutMs + 5000, d.id);
    // Each attempt reschedules as it ends: a fast endpoint's retry must not wait for a slow one.
    const done = Promise.all(picked.map((d) => this.attempt(d, endpoints.get(d.endpoint), cfg).then(() => this.schedule()))).then(() => {});
    return { started: picked.length, done };
  }

  private async attempt(d: DeliveryRow, ep: Endpoint | undefined, cfg: ReturnType<typeof webhookConfig>): Promise<void> {
    if (!ep || !ep.enabled) {
      this.sql.exec(`UPDATE deliveries SET state = 'failed', next_at = NULL, sending = 0, last_error = ?, updated_at = ? WHERE id = ? AND round = ?`, "endpoint disabled", Date.now(), d.id, d.round);
      return;
    }
    const outcome = await send(ep, d, cfg.timeoutMs);
    const now = Date.now();
    const s = afterAttempt({ attempts: d.attempts, createdAt: d.round_at }, outcome, now, cfg);
    // round = ?: a redelivery asked for while this attempt ran starts a new round; leave it be.
    this.sql.exec(
      `UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, last_error = ?, next_at = ?, updated_at = ?, sending = 0 WHERE id = ? AND round = ?`,
      s.state, s.attempts, s.lastStatus, s.lastError, s.nextAt, now, d.id, d.round,
    );
    if (s.state === "failed") console.error(JSON.stringify({ type: "webhook-failed", endpoint: ep.id, delivery: d.id, event: d.event_id, attempts: s.attempts, error: s.lastError }));
  }
}

/** One attempt: POST the signed payload; any 2xx is success. The timeout covers the answer's headers. */
async function send(ep: Endpoint, d: DeliveryRow, timeoutMs: number): Promise<AttemptOutcome> {
  const body = payloadOf(ep.id, d.id, d.body);
  const signature = await signatureHeader(ep.secret, Math.floor(Date.now() / 1000), body);
  try {
    const res = await fetch(ep.url, {
      method: "POST",
      body,
      redirect: "manual", // a redirect is an answer, not a new target: it counts as a failure
      signal: AbortSignal.timeout(timeoutMs),
      headers: {
        "Content-Type": "application/json",
        "User-Agent": "cloister-webhooks/1",
        [SIGNATURE_HEADER]: signature,
        "Cloister-Event": d.action,
        "Cloister-Delivery": d.id,
        "Cloister-Attempt": String(d.attempts + 1),
      },
    });
    await res.body?.cancel().catch(() => {});
    const ok = res.status >= 200 && res.status < 300;
    return { ok, status: res.status, error: ok ? null : `HTTP ${res.status}` };
  } catch (e) {
    const name = (e as { name?: string }).name;
    const error = name === "TimeoutError" || name === "AbortError" ? `no answer within ${timeoutMs} ms` : String((e as Error).message ?? e);
    return { ok: false, status: null, error: error.slice(0, MAX_ERROR_LENGTH) };
  }
}
