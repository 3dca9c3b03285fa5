// Webhooks end to end (docs/audit.md "Webhooks"): the registry under `wrangler dev`, two local
// receivers started by this test on 127.0.0.1, pushes with curl. The first receiver answers 500
// once, then 200: the retry arrives with the same delivery id, and both signatures verify with
// node:crypto. The second receiver never answers: a push made while it holds a delivery still
// returns, and the first receiver still gets its events. A manual redelivery arrives again.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createHmac, createHash, timingSafeEqual } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { needClients, run } from "./helpers/exec";
import { request, describe as show } from "./helpers/http";

const clients = needClients("webhooks.e2e", ["curl"]);
const SECRET = "e2e-webhook-secret-0123456789";
const HANG_SECRET = "e2e-hanging-secret-0123456789";

interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
  answered: boolean;
}

/** A receiver on 127.0.0.1; `answer` decides each request's status, or null to never answer. */
function receiver(answer: (n: number) => number | null) {
  const got: Received[] = [];
  const open = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const r: Received = { headers: req.headers, body: Buffer.concat(chunks).toString("utf8"), at: Date.now(), answered: false };
      got.push(r);
      const status = answer(got.length);
      if (status === null) return void open.add(res); // held open until the test ends
      r.answered = true;
      res.writeHead(status, { "Content-Type": "text/plain" }).end(status === 200 ? "ok" : "try again");
    });
  });
  return {
    got,
    async listen(): Promise<string> {
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
    },
    async close() {
      for (const res of open) res.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** What a receiver does: recompute HMAC-SHA256(secret, "<t>.<raw body>") and refuse old timestamps. */
function verify(r: Received, secret: string): { ok: boolean; t: number } {
  const header = String(r.headers["cloister-signature"] ?? "");
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!m) return { ok: false, t: 0 };
  const expected = createHmac("sha256", secret).update(`${m[1]}.${r.body}`).digest();
  const fresh = Math.abs(Date.now() / 1000 - Number(m[1])) < 300;
  return { ok: fresh && timingSafeEqual(expected, Buffer.from(m[2], "hex")), t: Number(m[1]) };
}

async function until<T>(what: string, fn: () => T | undefined | null | false | Promise<T | undefined | null | false>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

let reg: RunningRegistry;
let dir: string;
const good = receiver((n) => (n === 1 ? 500 : 200));
const hang = receiver(() => null);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  dir = mkdtempSync(join(tmpdir(), "cloister-e2e-webhooks-"));
  // Fast retries for the test; an attempt's timeout well past the test, so the hanging receiver
  // holds its delivery throughout.
  reg = await startRegistry({ https: false, vars: { WEBHOOK_BACKOFF_MS: "200", WEBHOOK_TIMEOUT_MS: "60000" } });
});

afterAll(async () => {
  await reg?.stop();
  await good.close().catch(() => {});
  await hang.close().catch(() => {});
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const digestOf = (b: Buffer) => "sha256:" + createHash("sha256").update(b).digest("hex");

async function curl(args: string[]): Promise<{ status: number; headers: string }> {
  const r = await run("curl", ["-s", "-o", "/dev/null", "-D", "-", "--max-time", "20", "-H", "Expect:", ...args], { allowFail: true, timeoutMs: 30_000 });
  return { status: Number(/^HTTP\/[\d.]+ (\d{3})/.exec(r.stdout)?.[1] ?? 0), headers: r.stdout };
}

/** Push a one-layer image with curl: two monolithic blob POSTs and a manifest PUT. */
async function pushImage(repo: string, tag: string, seed: string): Promise<string> {
  const layer = Buffer.from(`layer ${seed} `.repeat(50));
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", seed }));
  for (const b of [layer, config]) {
    const f = join(dir, "blob");
    writeFileSync(f, b);
    const r = await curl(["-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", `@${f}`, `${reg.url}/v2/${repo}/blobs/uploads/?digest=${digestOf(b)}`]);
    expect(r.status, r.headers).toBe(201);
  }
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: digestOf(config), size: config.length },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: digestOf(layer), size: layer.length }],
  }));
  const f = join(dir, "manifest.json");
  writeFileSync(f, manifest);
  const r = await curl(["-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json", "--data-binary", `@${f}`, `${reg.url}/v2/${repo}/manifests/${tag}`]);
  expect(r.status, r.headers).toBe(201);
  return digestOf(manifest);
}

async function admin(method: string, path: string, body?: unknown) {
  const r = await request(reg, method, path, body === undefined ? {} : { headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  return { status: r.status, json: () => r.json(), show: () => show(r) };
}

describe.skipIf(clients.skip)("webhooks deliver signed events to a local receiver", () => {
  test("signed delivery, a retry after 500, a dead endpoint that slows nothing, and a manual redelivery", async () => {
    const goodUrl = await good.listen();
    const hangUrl = await hang.listen();
    const a = await admin("POST", "/admin/webhooks", { url: goodUrl, secret: SECRET, events: ["manifest.put"], repositories: ["e2e/**"] });
    expect(a.status, a.show()).toBe(201);
    const epA = a.json() as { id: string };
    const b = await admin("POST", "/admin/webhooks", { url: hangUrl, secret: HANG_SECRET, events: ["manifest.put"] });
    expect(b.status, b.show()).toBe(201);
    const epB = b.json() as { id: string };

    // 1. A push delivers a signed event; the receiver answers 500, and the retry arrives.
    const d1 = await pushImage("e2e/hooks", "v1", "one");
    await until("the first attempt and its retry", () => good.got.length >= 2).catch(async (e) => {
      const l = await admin("GET", `/admin/webhooks/${epA.id}/deliveries`);
      throw new Error(`${(e as Error).message}; received ${good.got.length}; log: ${l.show()}\n--- registry log tail ---\n${reg.logs().slice(-3000)}`);
    });
    const [first, retry] = good.got;
    for (const r of [first, retry]) {
      expect(verify(r, SECRET).ok, r.headers["cloister-signature"] as string).toBe(true);
      expect(verify(r, "some-other-secret-0123").ok).toBe(false);
      expect(r.headers["content-type"]).toBe("application/json");
      expect(r.headers["cloister-event"]).toBe("manifest.put");
    }
    const p1 = JSON.parse(first.body) as { webhook: string; delivery: string; event: { id: string; action: string; target: { repository: string; tag: string; digest: string } } };
    expect(p1.webhook).toBe(epA.id);
    expect(p1.event).toMatchObject({ action: "manifest.put", target: { repository: "e2e/hooks", tag: "v1", digest: d1 } });
    expect(retry.body).toBe(first.body); // the same delivery, byte for byte; a fresh timestamp and signature
    expect(first.headers["cloister-delivery"]).toBe(p1.delivery);
    expect([first.headers["cloister-attempt"], retry.headers["cloister-attempt"]]).toEqual(["1", "2"]);
    expect(retry.at - first.at).toBeGreaterThanOrEqual(150); // WEBHOOK_BACKOFF_MS=200 after the 500

    // 2. The dead endpoint holds its delivery open; another push is not held up by it, and the
    // live endpoint still gets that push's event.
    await until("the hanging receiver to hold a delivery", () => hang.got.length >= 1);
    expect(verify(hang.got[0], HANG_SECRET).ok).toBe(true);
    const d2 = await pushImage("e2e/hooks", "v2", "two");
    expect(hang.got[0].answered).toBe(false); // still in flight while the push returned
    await until("v2's event at the live receiver", () => good.got.find((r) => r.body.includes(d2)));
    const logB = await admin("GET", `/admin/webhooks/${epB.id}/deliveries`);
    expect(logB.json().deliveries[0]).toMatchObject({ state: "pending", attempts: 0 });

    // 3. The delivery log, then a manual redelivery that arrives again.
    const log = await admin("GET", `/admin/webhooks/${epA.id}/deliveries`);
    expect(log.status, log.show()).toBe(200);
    const entries = log.json().deliveries as { id: string; eventId: string; state: string; attempts: number; lastStatus: number; lastError: string | null }[];
    const e1 = entries.find((e) => e.id === p1.delivery)!;
    expect(e1).toMatchObject({ eventId: p1.event.id, state: "delivered", attempts: 2, lastStatus: 200, lastError: null });
    expect(JSON.stringify(log.json())).not.toContain(SECRET);
    const before = good.got.length;
    const re = await admin("POST", `/admin/webhooks/${epA.id}/deliveries/${p1.delivery}/redeliver`);
    expect(re.status, re.show()).toBe(202);
    const again = await until("the redelivery", () => good.got.slice(before).find((r) => r.headers["cloister-delivery"] === p1.delivery));
    expect(verify(again, SECRET).ok).toBe(true);
    expect(JSON.parse(again.body).event.id).toBe(p1.event.id);
    const logged = await until("the log to show the redelivery", async () => {
      const l = (await admin("GET", `/admin/webhooks/${epA.id}/deliveries`)).json().deliveries as { id: string; state: string; attempts: number; redeliveries: number }[];
      const e = l.find((x) => x.id === p1.delivery);
      return e && e.state === "delivered" && e.redeliveries === 1 ? e : null;
    });
    expect(logged).toMatchObject({ attempts: 1, lastStatus: 200 });
  });
});
