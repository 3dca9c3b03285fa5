// record(): the one entry point that writes audit events (docs/audit.md "Durability").
//
// Registry mutations (push, mount, delete) do not come here: their event is drafted by the Worker
// (draftEvent) and written in the mutation's own transaction by the repository's TrustStore, whose
// alarm forwards it to the AuditLog (src/audit/outbox.ts, docs/adr/0021).
//
// Any other mutation's event is written BEFORE its 2xx response: the AuditLog append is awaited. If the
// AuditLog cannot be reached, the event goes to R2 (audit-spool/<day>/<id>.json) — durable too —
// and is moved into the log by drainSpool(). Only if both fail does the request answer 503 (the
// change itself is applied and idempotent to retry; the client is told it was not recorded).
// Reads and refusals (pulls, denials, failed sign-ins) are written in the background (waitUntil):
// they must never slow or fail the request they describe.
import type { Env } from "../env";
import { auditLogFor, auditIndexFor } from "../stores";
import { dayOf } from "../stores/audit-log";
import { currentRequest } from "../http/request-context";
import { oci } from "../oci/errors";
import { buildEvent, eventBody, indexedFields, type AuditEvent, type EventInput } from "./events";

const SPOOL = "audit-spool/";

export type Durability = "before-response" | "background";

function context() {
  const r = currentRequest();
  const c = r?.c;
  const principal = (c?.var as { principal?: { id: string } } | undefined)?.principal?.id ?? "anonymous";
  return {
    principal,
    address: (c?.req.header("CF-Connecting-IP") ?? "").trim() || "unknown",
    userAgent: c?.req.header("User-Agent") ?? null,
    requestId: r?.requestId ?? null,
    now: Date.now(),
  };
}

/** Append one event to its day's partition (and list the day in the index on its first event). */
export async function appendEvent(env: Env, ev: AuditEvent): Promise<void> {
  await appendEvents(env, dayOf(Date.parse(ev.time)), [ev]);
}

/**
 * Append events of one day, in order, in one AuditLog call. Idempotent per event id (the AuditLog
 * appends an id once), so a forward or drain that is retried after a lost answer never duplicates.
 */
export async function appendEvents(env: Env, day: string, evs: AuditEvent[]): Promise<void> {
  const rs = await auditLogFor(env, day).append(evs.map((ev) => ({ id: ev.id, body: eventBody(ev), fields: indexedFields(ev) })));
  // The events are durable now; listing the day is idempotent and retried by every 1,000th append.
  if (rs.some((r) => r.seq === 1 || r.seq % 1000 === 0)) await auditIndexFor(env).addDay(day).catch((e) => console.error(JSON.stringify({ type: "audit-index", day, error: String(e) })));
}

/**
 * The event of a registry mutation, for the committing store to write in the mutation's own
 * transaction (AuditOutbox.add): actor, address, user agent and request id from this request.
 */
export function draftEvent(input: EventInput): AuditEvent {
  return buildEvent(input, context());
}

/**
 * Record an event. "before-response" (mutations): resolves once the event is durable, throws a
 * 503 OciError if it cannot be made durable. "background": never throws, never waits.
 */
export async function record(env: Env, input: EventInput, durability: Durability = "before-response"): Promise<AuditEvent> {
  const ev = buildEvent(input, context());
  if (durability === "background") {
    const p = appendEvent(env, ev).catch((e) => console.error(JSON.stringify({ type: "audit-lost", id: ev.id, action: ev.action, error: String(e) })));
    try {
      currentRequest()?.c.executionCtx.waitUntil(p);
    } catch {
      await p; // no execution context: finish inline
    }
    return ev;
  }
  try {
    await appendEvent(env, ev);
  } catch (e) {
    console.error(JSON.stringify({ type: "audit-spooled", id: ev.id, action: ev.action, error: String(e) }));
    try {
      await env.BUCKET.put(`${SPOOL}${ev.time.slice(0, 10)}/${ev.id}.json`, JSON.stringify(ev));
    } catch (e2) {
      console.error(JSON.stringify({ type: "audit-unavailable", id: ev.id, action: ev.action, error: String(e2) }));
      throw oci("INTERNAL", "the change was applied but could not be recorded in the audit log; retry the request", { auditEventId: ev.id }, 503, { "Retry-After": "5" });
    }
  }
  return ev;
}

/** Events appended to the log per call by recordMany (each is at most MAX_EVENT_BYTES). */
const MANY_PER_CALL = 100;

/**
 * Record many events of one actor at once, durably (as "before-response"): one AuditLog call per
 * MANY_PER_CALL events, each spooled to R2 if the log fails, and a throw only if R2 fails too.
 * For work outside a request (GC's retention deletions), where one append per event would cost a
 * round trip each.
 */
export async function recordMany(env: Env, inputs: EventInput[]): Promise<void> {
  const ctx = context();
  for (let i = 0; i < inputs.length; i += MANY_PER_CALL) {
    const evs = inputs.slice(i, i + MANY_PER_CALL).map((input) => buildEvent(input, ctx));
    const day = dayOf(ctx.now);
    try {
      await appendEvents(env, day, evs);
    } catch (e) {
      console.error(JSON.stringify({ type: "audit-spooled", count: evs.length, error: String(e) }));
      for (const ev of evs) await env.BUCKET.put(`${SPOOL}${ev.time.slice(0, 10)}/${ev.id}.json`, JSON.stringify(ev));
    }
  }
}

/** Move spooled events into the log (oldest first, at most `max` per call). Returns how many. */
export async function drainSpool(env: Env, max = 100): Promise<number> {
  const list = await env.BUCKET.list({ prefix: SPOOL, limit: max });
  let moved = 0;
  for (const o of list.objects) {
    const obj = await env.BUCKET.get(o.key);
    if (!obj) continue;
    const ev = JSON.parse(await obj.text()) as AuditEvent;
    await appendEvent(env, ev);
    await env.BUCKET.delete(o.key);
    moved++;
  }
  return moved;
}

/** Pull events per AUDIT_PULLS: off, sampled (1 in AUDIT_PULL_SAMPLE, default 100) or all. */
export function pullAudited(env: Env): boolean {
  const mode = String(env.AUDIT_PULLS ?? "sampled").toLowerCase();
  if (mode === "off") return false;
  if (mode === "all") return true;
  const n = Number(env.AUDIT_PULL_SAMPLE ?? 100);
  const every = Number.isFinite(n) && n >= 1 ? Math.floor(n) : 100;
  return Math.random() * every < 1;
}
