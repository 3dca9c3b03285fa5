// The audit event model (docs/audit.md). Every event is built here and written by record();
// the domain layer calls record() with what happened, never a secret (no passwords, tokens or
// robot secrets: only names, digests, scopes and codes).

/** Every action an event can carry (docs/audit.md); webhooks subscribe to these names. */
export const AUDIT_ACTIONS = [
  "auth.signin", // sign-in at the token service: success or failure
  "auth.token", // access token issued (details.scopes: what was granted)
  "auth.denied", // a request refused by authentication or policy
  "manifest.put", // details.previous: the digest the tag pointed at before
  "manifest.delete",
  "tag.delete",
  "blob.delete",
  "blob.upload", // a completed upload: size, mode
  "blob.mount",
  "pull.manifest", // per AUDIT_PULLS
  "user.create", "user.delete", "user.password",
  "robot.create", "robot.delete",
  "policy.create", "policy.update", "policy.delete",
  "key.rotate", "key.delete",
  "trustkey.create", "trustkey.delete", // signature verification keys (docs/signatures.md)
  "gate.denied", // a pull refused by a signature-gate rule: rule, minimum, keys, found
  "attestation.record", // a verification pass that changed a subject's verified signers (details.trigger: push, listing, pull)
  "attestation.revoke", // rows that stopped counting: their signature or its .sig tag was deleted, or their key (details.reason)
  "lock.lock", "lock.unlock",
  "gc.run", // a finished or failed GC/retention run: what it scanned, condemned and deleted
  "quota.denied", // a push refused by a namespace quota
  "proxy.config", // a proxy namespace set or removed (never its credentials)
  "proxy.digest_mismatch", // an upstream sent bytes that do not match their digest (discarded)
  "retention.tag", // a tag removed by a retention rule (details: run, rule)
  "retention.manifest", // a manifest deleted by a retention rule (details: run, why)
  "restore.begin", "restore.finish", // an index restore from a snapshot (docs/adr/0016)
  "webhook.create", "webhook.update", "webhook.delete", // webhook endpoint changes (never the secret)
] as const;

export type AuditAction = (typeof AUDIT_ACTIONS)[number];

export interface AuditEvent {
  id: string;
  /** ISO 8601, UTC, milliseconds. */
  time: string;
  actor: { principal: string; address: string; userAgent: string | null };
  action: AuditAction;
  target: { repository: string | null; tag: string | null; digest: string | null };
  outcome: { status: number; code: string | null };
  requestId: string | null;
  details: Record<string, unknown> | null;
}

export interface EventInput {
  action: AuditAction;
  target?: Partial<AuditEvent["target"]>;
  outcome?: Partial<AuditEvent["outcome"]>;
  details?: Record<string, unknown>;
  /** Only where the actor is not the request's principal (e.g. the account signing in). */
  principal?: string;
}

/** Largest stored event body; bigger details are replaced by a marker (SQLite rows cap at 2 MB). */
export const MAX_EVENT_BYTES = 16 * 1024;
const MAX_FIELD = 512;

const cut = (s: string | null | undefined, n = MAX_FIELD) => (s == null ? null : s.length > n ? s.slice(0, n) : s);

/** Canonical JSON: fields in a fixed order, so the stored text is exactly what is hashed. */
export function buildEvent(
  input: EventInput,
  ctx: { principal: string; address: string; userAgent: string | null; requestId: string | null; now: number },
): AuditEvent {
  const ev: AuditEvent = {
    id: crypto.randomUUID(),
    time: new Date(ctx.now).toISOString(),
    actor: { principal: cut(input.principal ?? ctx.principal)!, address: cut(ctx.address, 64)!, userAgent: cut(ctx.userAgent, 256) },
    action: input.action,
    target: { repository: cut(input.target?.repository ?? null), tag: cut(input.target?.tag ?? null, 128), digest: cut(input.target?.digest ?? null, 200) },
    outcome: { status: input.outcome?.status ?? 200, code: input.outcome?.code ?? null },
    requestId: ctx.requestId,
    details: input.details ?? null,
  };
  if (JSON.stringify(ev).length > MAX_EVENT_BYTES) ev.details = { truncated: true };
  return ev;
}

export function indexedFields(ev: AuditEvent) {
  return {
    time: Date.parse(ev.time),
    actor: ev.actor.principal,
    action: ev.action,
    repository: ev.target.repository,
    outcome: ev.outcome.status < 400 ? "success" : "failure",
  };
}
