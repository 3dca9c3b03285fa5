// Webhooks inside workerd (docs/audit.md "Webhooks", docs/adr/0014): signing, the endpoint
// filter, the retry state machine, the admin API (validation, limits, write-only secret, admin
// only), and the real pipeline — a push through the Worker, the AuditLog outbox and its alarm,
// the Webhooks object's queue, attempts against a closed port, backoff and manual redelivery.
// Successful deliveries to a live receiver are in test/e2e/webhooks.e2e.test.ts (workerd tests
// cannot listen on a port).
import { env } from "cloudflare:workers";
import { createExecutionContext, runDurableObjectAlarm, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, utf8ToBytes } from "@noble/hashes/utils.js";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import { webhooksFor } from "../../src/stores";
import type { Webhooks } from "../../src/webhooks/store";
import {
  MAX_BACKOFF_MS,
  MAX_ENDPOINTS,
  MAX_PENDING_PER_ENDPOINT,
  afterAttempt,
  endpointWants,
  payloadOf,
  retryDelayMs,
  signatureHeader,
  webhookConfig,
  type DeliveryView,
  type EndpointView,
} from "../../src/webhooks/model";
import { BASE, bytes, sha256 } from "./helpers";

const app = buildApp();
const e = env as unknown as Env;
const ADMIN_PW = "webhooks-admin-password";
const TOKEN = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW };
const asAdmin = { Authorization: `Basic ${btoa(`admin:${ADMIN_PW}`)}` };
const SECRET = "a-webhook-secret-of-some-length";
/** Nothing listens on port 9 of the loopback: every attempt fails at once (connection refused). */
const DEAD_URL = "http://127.0.0.1:9/hook";

async function call(path: string, init: RequestInit = {}, vars: Record<string, string> = {}): Promise<Response> {
  const ctx = createExecutionContext();
  const res = await app.fetch(new Request(BASE + path, init), { ...e, ...vars }, ctx);
  await waitOnExecutionContext(ctx);
  return res;
}

const json = (method: string, body: unknown) => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

async function createEndpoint(body: Record<string, unknown>): Promise<EndpointView> {
  const res = await call("/admin/webhooks", json("POST", { url: DEAD_URL, secret: SECRET, ...body }));
  expect(res.status, await res.clone().text()).toBe(201);
  return (await res.json()) as EndpointView;
}

async function deliveries(id: string): Promise<DeliveryView[]> {
  const res = await call(`/admin/webhooks/${id}/deliveries?limit=100`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { deliveries: DeliveryView[] }).deliveries;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function pushManifest(repo: string, tag: string, seed: number): Promise<string> {
  const put = async (data: Uint8Array) => {
    const d = await sha256(data);
    expect((await call(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data, headers: { "Content-Length": String(data.length) } })).status).toBe(201);
    return d;
  };
  const config = new TextEncoder().encode(`{"seed":${seed}}`);
  const layer = bytes(64, seed);
  const m = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await put(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: await put(layer), size: layer.length }],
  });
  const res = await call(`/v2/${repo}/manifests/${tag}`, { method: "PUT", body: m, headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" } });
  expect(res.status).toBe(201);
  return res.headers.get("Docker-Content-Digest")!;
}

describe("signing, filter and retry rules", () => {
  it("signs t.<body> with HMAC-SHA256 of the secret (checked against an independent HMAC)", async () => {
    const body = payloadOf("ep", "dl", '{"id":"x","action":"manifest.put"}');
    expect(JSON.parse(body)).toEqual({ webhook: "ep", delivery: "dl", event: { id: "x", action: "manifest.put" } });
    const h = await signatureHeader(SECRET, 1700000000, body);
    const expected = bytesToHex(hmac(nobleSha256, utf8ToBytes(SECRET), utf8ToBytes(`1700000000.${body}`)));
    expect(h).toBe(`t=1700000000,v1=${expected}`);
    // The timestamp is part of what is signed: another time, another signature.
    expect((await signatureHeader(SECRET, 1700000001, body)).split("v1=")[1]).not.toBe(expected);
    expect((await signatureHeader(SECRET + "x", 1700000000, body)).split("v1=")[1]).not.toBe(expected);
  });

  it("an endpoint takes listed actions (or *) on repositories matching a glob; repository-less events only with **", () => {
    const ep = { events: ["manifest.put", "tag.delete"], repositories: ["team/*", "prod/**"] };
    expect(endpointWants(ep, { action: "manifest.put", repository: "team/api" })).toBe(true);
    expect(endpointWants(ep, { action: "manifest.put", repository: "team/api/sub" })).toBe(false); // * stays in one segment
    expect(endpointWants(ep, { action: "tag.delete", repository: "prod/a/b" })).toBe(true);
    expect(endpointWants(ep, { action: "blob.upload", repository: "team/api" })).toBe(false);
    expect(endpointWants(ep, { action: "manifest.put", repository: "other/x" })).toBe(false);
    expect(endpointWants(ep, { action: "manifest.put", repository: null })).toBe(false);
    expect(endpointWants({ events: ["*"], repositories: ["**"] }, { action: "user.create", repository: null })).toBe(true);
    expect(endpointWants({ events: ["*"], repositories: ["**"] }, { action: "blob.delete", repository: "a/b" })).toBe(true);
  });

  it("retries with doubling backoff, delivers on 2xx, gives up after the attempts or the age", () => {
    const cfg = { timeoutMs: 1000, backoffMs: 1000, maxAttempts: 4, maxAgeMs: 3600_000 };
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, cfg))).toEqual([1000, 2000, 4000, 8000]);
    expect(retryDelayMs(40, cfg)).toBe(MAX_BACKOFF_MS);
    const fail = { ok: false, status: 500, error: null };
    let d = { attempts: 0, createdAt: 0 };
    const s1 = afterAttempt(d, fail, 10, cfg);
    expect(s1).toEqual({ state: "pending", attempts: 1, nextAt: 1010, lastStatus: 500, lastError: "HTTP 500" });
    d = { attempts: 1, createdAt: 0 };
    expect(afterAttempt(d, fail, 2000, cfg)).toMatchObject({ state: "pending", attempts: 2, nextAt: 4000 });
    expect(afterAttempt({ attempts: 3, createdAt: 0 }, fail, 9000, cfg)).toMatchObject({ state: "failed", attempts: 4, nextAt: null, lastError: "gave up after 4 attempts: HTTP 500" });
    expect(afterAttempt({ attempts: 2, createdAt: 0 }, { ok: true, status: 204, error: null }, 5, cfg)).toEqual({ state: "delivered", attempts: 3, nextAt: null, lastStatus: 204, lastError: null });
    // The next wait would end past the maximum age: give up now, keeping the reason.
    expect(afterAttempt({ attempts: 1, createdAt: 0 }, { ok: false, status: null, error: "no answer within 1000 ms" }, 3599_000, cfg)).toMatchObject({ state: "failed", lastError: "gave up at the maximum age: no answer within 1000 ms" });
  });

  it("reads its variables with defaults and bounds", () => {
    expect(webhookConfig({})).toEqual({ timeoutMs: 10_000, backoffMs: 10_000, maxAttempts: 10, maxAgeMs: 86_400_000 });
    expect(webhookConfig({ WEBHOOK_TIMEOUT_MS: "5", WEBHOOK_BACKOFF_MS: "250", WEBHOOK_MAX_ATTEMPTS: "999", WEBHOOK_MAX_AGE_SECONDS: "x" })).toEqual({ timeoutMs: 100, backoffMs: 250, maxAttempts: 50, maxAgeMs: 86_400_000 });
  });
});

describe("admin API", () => {
  it("creates, lists, reads, changes and deletes endpoints; the secret is never returned", async () => {
    const ep = await createEndpoint({ events: ["manifest.put", "manifest.put"], repositories: ["apps/**"], description: "ci" });
    expect(ep).toMatchObject({ url: DEAD_URL, events: ["manifest.put"], repositories: ["apps/**"], enabled: true, description: "ci", pending: 0 });
    expect(ep.id).toMatch(/^[0-9a-f-]{36}$/);
    const texts: string[] = [JSON.stringify(ep)];
    const got = await call(`/admin/webhooks/${ep.id}`);
    texts.push(await got.clone().text());
    expect(await got.json()).toEqual(ep);
    const list = await call("/admin/webhooks");
    texts.push(await list.clone().text());
    expect(((await list.json()) as { webhooks: EndpointView[] }).webhooks.map((w) => w.id)).toContain(ep.id);
    const patched = await call(`/admin/webhooks/${ep.id}`, json("PATCH", { enabled: false, secret: "another-secret-0123456789" }));
    expect(patched.status).toBe(200);
    texts.push(await patched.clone().text());
    expect(await patched.json()).toMatchObject({ id: ep.id, enabled: false, events: ["manifest.put"] });
    for (const t of texts) {
      expect(t).not.toContain(SECRET);
      expect(t).not.toContain("another-secret-0123456789");
      expect(t).not.toContain('"secret"');
    }
    // Changes are audit events, without the secret or the URL's path.
    const audit = await (await call("/admin/audit?action=webhook&limit=500")).text();
    expect(audit).toContain('"action":"webhook.create"');
    expect(audit).toContain('"action":"webhook.update"');
    expect(audit).not.toContain(SECRET);
    expect(audit).not.toContain("another-secret-0123456789");
    expect(audit).not.toContain("/hook");

    expect((await call(`/admin/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(204);
    expect(await (await call("/admin/audit?action=webhook.delete")).text()).toContain(ep.id);
    expect((await call(`/admin/webhooks/${ep.id}`)).status).toBe(404);
    expect((await call(`/admin/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(404);
    expect((await call(`/admin/webhooks/${ep.id}/deliveries`)).status).toBe(404);
  });

  it("refuses bad endpoints with 400 and a message naming the field", async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ url: "ftp://example.com/x", events: ["manifest.put"] }, "url"],
      [{ url: "not a url", events: ["manifest.put"] }, "url"],
      [{ url: "https://example.com/" + "a".repeat(2048), events: ["manifest.put"] }, "url"],
      [{ url: DEAD_URL, events: ["manifest.pushed"] }, "events"],
      [{ url: DEAD_URL, events: [] }, "events"],
      [{ url: DEAD_URL, events: ["manifest.put"], secret: "short" }, "secret"],
      [{ url: DEAD_URL, events: ["manifest.put"], repositories: Array.from({ length: 21 }, (_, i) => `r${i}/**`) }, "repositories"],
      [{ url: DEAD_URL, events: ["manifest.put"], repositories: ["Bad Glob"] }, "repositories"],
      [{ url: DEAD_URL, events: ["manifest.put"], extra: 1 }, "extra"],
    ];
    for (const [body, field] of cases) {
      const res = await call("/admin/webhooks", json("POST", { secret: SECRET, ...body }));
      expect(res.status, field).toBe(400);
      const err = ((await res.json()) as { errors: { code: string; message: string }[] }).errors[0];
      expect(err.code).toBe("BAD_REQUEST");
      expect(err.message, field).toContain(field);
    }
    const noSecret = await call("/admin/webhooks", json("POST", { url: DEAD_URL, events: ["manifest.put"] }));
    expect(noSecret.status).toBe(400);
    expect((await call("/admin/webhooks", { method: "POST", body: "{}" })).status).toBe(400); // no JSON content type
    expect((await call("/admin/webhooks/not-an-id", json("PATCH", { enabled: true }))).status).toBe(404);
    const ep = await createEndpoint({ events: ["tag.delete"] });
    expect((await call(`/admin/webhooks/${ep.id}`, json("PATCH", {}))).status).toBe(400);
    expect((await call(`/admin/webhooks/${ep.id}/deliveries?limit=101`)).status).toBe(400);
    expect((await call(`/admin/webhooks/${ep.id}/deliveries?cursor=abc`)).status).toBe(400);
    expect((await call(`/admin/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(204);
  });

  it(`holds at most ${MAX_ENDPOINTS} endpoints (409 beyond)`, async () => {
    const before = ((await (await call("/admin/webhooks")).json()) as { webhooks: EndpointView[] }).webhooks.length;
    const made: string[] = [];
    for (let i = before; i < MAX_ENDPOINTS; i++) made.push((await createEndpoint({ events: ["blob.delete"], enabled: false })).id);
    const over = await call("/admin/webhooks", json("POST", { url: DEAD_URL, secret: SECRET, events: ["blob.delete"] }));
    expect(over.status).toBe(409);
    expect(((await over.json()) as { errors: { code: string; message: string }[] }).errors[0]).toMatchObject({ code: "CONFLICT" });
    for (const id of made) expect((await call(`/admin/webhooks/${id}`, { method: "DELETE" })).status).toBe(204);
  });

  it("is admin only", async () => {
    expect((await call("/admin/webhooks", {}, TOKEN)).status).toBe(401);
    const mk = await call("/admin/users", { method: "POST", headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify({ name: "hookuser", password: "password-1234" }) }, TOKEN);
    expect(mk.status).toBe(201);
    const user = { Authorization: `Basic ${btoa("hookuser:password-1234")}` };
    expect((await call("/admin/webhooks", { headers: user }, TOKEN)).status).toBe(403);
    expect((await call("/admin/webhooks", { ...json("POST", { url: DEAD_URL, secret: SECRET, events: ["*"] }), headers: { ...user, "Content-Type": "application/json" } }, TOKEN)).status).toBe(403);
    expect((await call("/admin/webhooks", { headers: asAdmin }, TOKEN)).status).toBe(200);
  });
});

describe("delivery pipeline", () => {
  it("a push is queued for matching endpoints only, retried with backoff after failures, and redelivered by hand", async () => {
    const wanted = await createEndpoint({ events: ["manifest.put"], repositories: ["hooks/*"] });
    const otherAction = await createEndpoint({ events: ["tag.delete"], repositories: ["**"] });
    const otherRepo = await createEndpoint({ events: ["manifest.put"], repositories: ["elsewhere/**"] });
    const disabled = await createEndpoint({ events: ["*"], repositories: ["**"], enabled: false });

    const digest = await pushManifest("hooks/app", "v1", 1);
    // The AuditLog's alarm forwards the event, the Webhooks alarm makes the first attempt.
    const [d] = await until("a failed first attempt", async () => {
      const l = await deliveries(wanted.id);
      return l.length === 1 && l[0].attempts >= 1 ? l : null;
    });
    expect(d).toMatchObject({ action: "manifest.put", state: "pending", attempts: 1, lastStatus: null, redeliveries: 0 });
    expect(d.lastError).toBeTruthy();
    const wait1 = Date.parse(d.nextAttemptAt!) - Date.parse(d.updatedAt);
    expect(wait1).toBe(10_000); // WEBHOOK_BACKOFF_MS default
    const audit = ((await (await call(`/admin/audit?action=manifest.put&repository=hooks/app`)).json()) as { events: { id: string; target: { digest: string } }[] }).events;
    expect(d.eventId).toBe(audit[0].id);
    expect(audit[0].target.digest).toBe(digest);
    for (const ep of [otherAction, otherRepo, disabled]) expect(await deliveries(ep.id), ep.id).toEqual([]);

    // Due now: the next alarm makes attempt 2, and the wait doubles.
    const hooks = webhooksFor(e);
    await runInDurableObject(hooks, (_i: Webhooks, state) => state.storage.sql.exec(`UPDATE deliveries SET next_at = ? WHERE id = ?`, Date.now(), d.id));
    expect(await runDurableObjectAlarm(hooks)).toBe(true);
    const [d2] = await until("attempt 2", async () => {
      const l = await deliveries(wanted.id);
      return l[0].attempts === 2 ? l : null;
    });
    expect(d2).toMatchObject({ state: "pending", attempts: 2 });
    expect(Date.parse(d2.nextAttemptAt!) - Date.parse(d2.updatedAt)).toBe(20_000);

    // Manual redelivery: pending again, due now, a fresh round of attempts.
    const re = await call(`/admin/webhooks/${wanted.id}/deliveries/${d.id}/redeliver`, { method: "POST" });
    expect(re.status).toBe(202);
    expect(await re.json()).toMatchObject({ id: d.id, state: "pending", attempts: 0, redeliveries: 1 });
    const [d3] = await until("the redelivery attempt", async () => {
      const l = await deliveries(wanted.id);
      return l[0].attempts === 1 ? l : null;
    });
    expect(d3).toMatchObject({ id: d.id, state: "pending", redeliveries: 1 });
    expect((await call(`/admin/webhooks/${wanted.id}/deliveries/00000000-0000-0000-0000-000000000000/redeliver`, { method: "POST" })).status).toBe(404);
    expect((await call(`/admin/webhooks/${otherRepo.id}/deliveries/${d.id}/redeliver`, { method: "POST" })).status).toBe(404);

    // Give-up: with one attempt left the next failure ends the delivery, and the log keeps why.
    await runInDurableObject(hooks, (_i: Webhooks, state) => state.storage.sql.exec(`UPDATE deliveries SET next_at = ?, attempts = 9 WHERE id = ?`, Date.now(), d.id));
    expect(await runDurableObjectAlarm(hooks)).toBe(true);
    const [d4] = await until("the last attempt", async () => {
      const l = await deliveries(wanted.id);
      return l[0].state !== "pending" ? l : null;
    });
    expect(d4).toMatchObject({ state: "failed", attempts: 10, nextAttemptAt: null });
    expect(d4.lastError).toMatch(/^gave up after 10 attempts: /);

    // A disabled endpoint: its deliveries cannot be redelivered until it is enabled again.
    expect((await call(`/admin/webhooks/${wanted.id}`, json("PATCH", { enabled: false }))).status).toBe(200);
    expect((await call(`/admin/webhooks/${wanted.id}/deliveries/${d.id}/redeliver`, { method: "POST" })).status).toBe(409);
    for (const ep of [wanted, otherAction, otherRepo, disabled]) expect((await call(`/admin/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(204);
  });

  it("queues an event once per endpoint however often it is fanned out, and bounds the queue", async () => {
    const ep = await createEndpoint({ events: ["blob.delete"], repositories: ["bulk/**"] });
    const hooks = webhooksFor(e);
    const ev = (i: number) => JSON.stringify({ id: `ev-${i}`, action: "blob.delete", target: { repository: "bulk/x" } });
    expect(await hooks.fanOut([ev(0)])).toEqual({ queued: 1 });
    expect(await hooks.fanOut([ev(0)])).toEqual({ queued: 0 });
    // Fill the queue to its bound (attempts against the dead URL may run meanwhile; they stay pending).
    for (let i = 1; i < MAX_PENDING_PER_ENDPOINT; i += 100) await hooks.fanOut(Array.from({ length: Math.min(100, MAX_PENDING_PER_ENDPOINT - i) }, (_, k) => ev(i + k)));
    expect((await hooks.getEndpoint(ep.id))!.pending).toBe(MAX_PENDING_PER_ENDPOINT);
    expect(await hooks.fanOut([ev(5000)])).toEqual({ queued: 0 });
    const [newest] = (await hooks.deliveries(ep.id, { limit: 1 }))!.deliveries;
    expect(newest).toMatchObject({ eventId: "ev-5000", state: "failed", attempts: 0 });
    expect(newest.lastError).toMatch(/^queue full/);
    expect((await call(`/admin/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(204);
    expect(await runInDurableObject(hooks, (_i: Webhooks, state) => state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM deliveries WHERE endpoint = ?`, ep.id).one().n)).toBe(0);
  });

  it("disabling an endpoint ends its queued deliveries as failed (endpoint disabled)", async () => {
    const ep = await createEndpoint({ events: ["tag.delete"], repositories: ["off/**"] });
    const hooks = webhooksFor(e);
    expect(await hooks.fanOut([JSON.stringify({ id: "off-1", action: "tag.delete", target: { repository: "off/x" } })])).toEqual({ queued: 1 });
    expect((await call(`/admin/webhooks/${ep.id}`, json("PATCH", { enabled: false }))).status).toBe(200);
    await runInDurableObject(hooks, (_i: Webhooks, state) => state.storage.sql.exec(`UPDATE deliveries SET next_at = ?, sending = 0 WHERE endpoint = ?`, Date.now(), ep.id));
    await runDurableObjectAlarm(hooks);
    const [d] = await until("the delivery to end", async () => {
      const l = await deliveries(ep.id);
      return l[0]?.state === "failed" ? l : null;
    });
    expect(d).toMatchObject({ eventId: "off-1", state: "failed", lastError: "endpoint disabled", nextAttemptAt: null });
    expect((await call(`/admin/webhooks/${ep.id}`, { method: "DELETE" })).status).toBe(204);
  });
});
