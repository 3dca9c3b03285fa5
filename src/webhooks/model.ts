// Webhooks: the rules in one place (docs/audit.md "Webhooks", docs/adr/0014) — endpoint schema
// and limits, which events an endpoint receives, the payload and its signature, and the retry
// state machine. The Webhooks Durable Object (./store.ts) and the admin routes only call these.
import { z } from "zod";
import { AUDIT_ACTIONS } from "../audit/events";
import { matchGlob } from "../auth/policy";
import { toHex } from "../util/encoding";

// ---- limits (README "Limits") -------------------------------------------------------------------

/** Endpoints one registry may configure. */
export const MAX_ENDPOINTS = 50;
export const MAX_URL_LENGTH = 2048;
/** Repository globs per endpoint. */
export const MAX_GLOBS = 20;
export const MIN_SECRET_LENGTH = 16;
export const MAX_SECRET_LENGTH = 256;
export const MAX_DESCRIPTION_LENGTH = 200;
/** Undelivered deliveries one endpoint may queue; events beyond are logged as failed ("queue full"). */
export const MAX_PENDING_PER_ENDPOINT = 1000;
/** Finished deliveries kept in one endpoint's log (older ones are dropped). */
export const MAX_LOG_PER_ENDPOINT = 1000;
/** Events one fan-out call carries (each at most MAX_EVENT_BYTES): keeps every RPC small. */
export const MAX_FANOUT_BATCH = 100;
/** Deliveries one alarm starts, and at most this many attempts in flight per endpoint. */
export const SEND_BATCH = 20;
export const SEND_PER_ENDPOINT = 4;
/** Longest wait between two attempts, whatever the backoff base. */
export const MAX_BACKOFF_MS = 3600_000;
/** Longest error text kept for a delivery. */
export const MAX_ERROR_LENGTH = 300;

// ---- configuration (wrangler.toml [vars]) ---------------------------------------------------------

export interface WebhookConfig {
  /** One attempt's limit: connect, send, and the response headers. */
  timeoutMs: number;
  /** Wait before the 2nd attempt; doubles for each further one (capped at MAX_BACKOFF_MS). */
  backoffMs: number;
  /** Attempts before a delivery is given up (state "failed"). */
  maxAttempts: number;
  /** A delivery older than this is given up after its next failed attempt. */
  maxAgeMs: number;
}

const int = (v: unknown, dflt: number, min: number, max: number) => {
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  return Number.isFinite(n) ? Math.min(max, Math.max(min, Math.floor(n))) : dflt;
};

export function webhookConfig(env: Record<string, unknown>): WebhookConfig {
  return {
    timeoutMs: int(env.WEBHOOK_TIMEOUT_MS, 10_000, 100, 60_000),
    backoffMs: int(env.WEBHOOK_BACKOFF_MS, 10_000, 10, MAX_BACKOFF_MS),
    maxAttempts: int(env.WEBHOOK_MAX_ATTEMPTS, 10, 1, 50),
    maxAgeMs: int(env.WEBHOOK_MAX_AGE_SECONDS, 86_400, 1, 30 * 86_400) * 1000,
  };
}

// ---- endpoint schema ------------------------------------------------------------------------------

/** Repository globs as elsewhere in the admin API: "*" within a path segment, "**" across. */
const glob = z.string().min(1).max(256).regex(/^[a-z0-9._\/*-]+$/, "a repository glob: lowercase name characters, '/', '*' and '**'");
const url = z
  .string()
  .max(MAX_URL_LENGTH, `at most ${MAX_URL_LENGTH} characters`)
  .refine((u) => {
    try {
      const p = new URL(u);
      return (p.protocol === "http:" || p.protocol === "https:") && p.hostname !== "";
    } catch {
      return false;
    }
  }, "an absolute http:// or https:// URL");
const eventTypes = z
  .array(z.enum(["*", ...AUDIT_ACTIONS]))
  .min(1)
  .max(AUDIT_ACTIONS.length + 1)
  .transform((a) => [...new Set(a)]);
const secret = z.string().min(MIN_SECRET_LENGTH).max(MAX_SECRET_LENGTH);

export const endpointCreateSchema = z
  .object({
    url,
    events: eventTypes,
    repositories: z.array(glob).min(1).max(MAX_GLOBS).default(["**"]),
    secret,
    enabled: z.boolean().default(true),
    description: z.string().max(MAX_DESCRIPTION_LENGTH).default(""),
  })
  .strict();

export const endpointPatchSchema = z
  .object({
    url: url.optional(),
    events: eventTypes.optional(),
    repositories: z.array(glob).min(1).max(MAX_GLOBS).optional(),
    secret: secret.optional(),
    enabled: z.boolean().optional(),
    description: z.string().max(MAX_DESCRIPTION_LENGTH).optional(),
  })
  .strict()
  .refine((p) => Object.keys(p).length > 0, "change at least one field");

export type EndpointInput = z.output<typeof endpointCreateSchema>;
export type EndpointPatch = z.output<typeof endpointPatchSchema>;

/** An endpoint as the admin API shows it: the secret is write-only and never leaves the store. */
export interface EndpointView {
  id: string;
  url: string;
  events: string[];
  repositories: string[];
  enabled: boolean;
  description: string;
  createdAt: string;
  updatedAt: string;
  /** Undelivered deliveries queued now. */
  pending: number;
}

export type DeliveryState = "pending" | "delivered" | "failed";

export interface DeliveryView {
  id: string;
  eventId: string;
  action: string;
  state: DeliveryState;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  /** ISO time of the next attempt (pending only). */
  nextAttemptAt: string | null;
  createdAt: string;
  updatedAt: string;
  /** Manual redeliveries asked for. */
  redeliveries: number;
}

// ---- matching -------------------------------------------------------------------------------------

/**
 * Does an endpoint take this event? Its action must be listed (or "*"), and its repository must
 * match one glob. Events without a repository (sign-ins, account changes) match only "**".
 */
export function endpointWants(ep: { events: readonly string[]; repositories: readonly string[] }, ev: { action: string; repository: string | null }): boolean {
  if (!ep.events.includes("*") && !ep.events.includes(ev.action)) return false;
  if (ev.repository === null) return ep.repositories.includes("**");
  return ep.repositories.some((g) => matchGlob(g, ev.repository!));
}

// ---- payload and signature ------------------------------------------------------------------------

/**
 * The body POSTed to an endpoint: the event exactly as stored in the audit log (canonical JSON,
 * docs/audit.md "Event schema"), wrapped with the endpoint and delivery ids. The same bytes on
 * every attempt; receivers deduplicate on event.id (delivery is at least once).
 */
export function payloadOf(endpointId: string, deliveryId: string, eventJson: string): string {
  return `{"webhook":${JSON.stringify(endpointId)},"delivery":${JSON.stringify(deliveryId)},"event":${eventJson}}`;
}

export const SIGNATURE_HEADER = "Cloister-Signature";

/**
 * `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` — the scheme Stripe and others
 * use: the timestamp is signed with the body, so a receiver refuses old timestamps (replays).
 */
export async function signatureHeader(secret: string, timestampSeconds: number, body: string): Promise<string> {
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${timestampSeconds}.${body}`));
  return `t=${timestampSeconds},v1=${toHex(new Uint8Array(mac))}`;
}

// ---- retry state machine --------------------------------------------------------------------------

/** Wait before attempt n+1 after n failed attempts: backoff · 2^(n−1), at most MAX_BACKOFF_MS. */
export function retryDelayMs(failedAttempts: number, cfg: Pick<WebhookConfig, "backoffMs">): number {
  return Math.min(MAX_BACKOFF_MS, cfg.backoffMs * 2 ** Math.max(0, Math.min(30, failedAttempts - 1)));
}

export interface AttemptOutcome {
  /** A 2xx answer. */
  ok: boolean;
  status: number | null;
  error: string | null;
}

/**
 * The delivery after one attempt: delivered on 2xx; otherwise retried after the backoff, or given
 * up ("failed") once it has had maxAttempts attempts or is older than maxAge.
 */
export function afterAttempt(
  d: { attempts: number; createdAt: number },
  r: AttemptOutcome,
  now: number,
  cfg: WebhookConfig,
): { state: DeliveryState; attempts: number; nextAt: number | null; lastStatus: number | null; lastError: string | null } {
  const attempts = d.attempts + 1;
  const lastError = r.ok ? null : (r.error ?? `HTTP ${r.status}`).slice(0, MAX_ERROR_LENGTH);
  if (r.ok) return { state: "delivered", attempts, nextAt: null, lastStatus: r.status, lastError };
  if (attempts >= cfg.maxAttempts) return { state: "failed", attempts, nextAt: null, lastStatus: r.status, lastError: `gave up after ${attempts} attempts: ${lastError}`.slice(0, MAX_ERROR_LENGTH) };
  const nextAt = now + retryDelayMs(attempts, cfg);
  if (nextAt - d.createdAt > cfg.maxAgeMs) return { state: "failed", attempts, nextAt: null, lastStatus: r.status, lastError: `gave up at the maximum age: ${lastError}`.slice(0, MAX_ERROR_LENGTH) };
  return { state: "pending", attempts, nextAt, lastStatus: r.status, lastError };
}
