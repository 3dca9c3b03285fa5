// Proxy namespaces (docs/proxy.md): the admin API validates and never returns credentials, pushes
// into a namespace are refused, and an unreachable upstream is a clear 502/504, never a 500.
// Blob fills from a loopback upstream (streaming, digest mismatch, single flight) are below; pulls
// with real clients through real upstreams are in test/e2e/proxy.e2e.test.ts.
import { env } from "cloudflare:workers";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { BASE, bytes, expectError, ociError, pushBlob, req, reqWith, sha256 } from "./helpers";
import { buildApp } from "../../src/app";
import { PROXY_CONFIG_KEY, proxyFor, saveApiNamespaces } from "../../src/proxy/config";
import type { Env } from "../../src/env";
import { memberBlob } from "../../src/storage/backfill";
import { uploadSessionFor } from "../../src/stores";
import { fillSessionId } from "../../src/proxy/fill";

const E = env as unknown as Env;

const json = (body: unknown, method = "PUT"): RequestInit => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

describe("proxy namespaces", () => {
  it("name their credentials' secret: the value is never returned, the name is", async () => {
    const vars = { PXUNIT_CREDS: "mirror:secret-pw" };
    const put = await reqWith(vars, "/admin/proxies", json({ prefix: "pxunit", upstream: "http://127.0.0.1:1", credentialsSecret: "PXUNIT_CREDS", timeoutSeconds: 1 }));
    expect(put.status).toBe(200);
    const shown = await put.json();
    expect(shown).toMatchObject({ prefix: "pxunit", credentials: "secret", credentialsSecret: "PXUNIT_CREDS", tagTtlSeconds: 300, libraryPrefix: false, unpulledDays: 30, source: "api" });
    expect(shown).not.toHaveProperty("warning");
    const text = await (await reqWith(vars, "/admin/proxies")).text();
    expect(text).toContain("PXUNIT_CREDS");
    expect(text).not.toContain("secret-pw");
    expect(text).not.toContain("mirror");
    // The upstream requests get the secret's value.
    const t = await proxyFor({ ...E, ...vars }, "pxunit/app");
    expect(t?.ns).toMatchObject({ username: "mirror", password: "secret-pw" });
    expect(t?.credentialsProblem).toBeNull();
    // Unbound later (e.g. a deploy without the secret): the listing says so, the pull path knows why.
    const listed = ((await (await reqWith({}, "/admin/proxies")).json()) as { proxies: { prefix: string; warning?: string }[] }).proxies.find((p) => p.prefix === "pxunit");
    expect(listed?.warning).toContain("wrangler secret put PXUNIT_CREDS");
    expect((await proxyFor(E, "pxunit/app"))?.credentialsProblem).toContain("not bound");
    expect((await reqWith({}, "/admin/proxies/pxunit", { method: "DELETE" })).status).toBe(204);
    expect((await reqWith({}, "/admin/proxies/pxunit", { method: "DELETE" })).status).toBe(404);
    expect(await (await reqWith({}, "/admin/proxies")).text()).not.toContain("pxunit");
  });

  it("refuse an unbound, malformed or reserved secret and inline credentials with a 400 saying what to do", async () => {
    const cases: [Record<string, string>, Record<string, unknown>, string][] = [
      [{}, { credentialsSecret: "NOPE_CREDS" }, "wrangler secret put NOPE_CREDS"],
      [{ HALF_CREDS: "no-colon" }, { credentialsSecret: "HALF_CREDS" }, "must hold user:token"],
      [{}, { credentialsSecret: "ADMIN_PASSWORD" }, "cloister's own"],
      [{}, { credentialsSecret: "not a name" }, "NAME of a Worker secret"],
      [{}, { username: "u", password: "p" }, "wrangler secret put"],
    ];
    for (const [vars, extra, message] of cases) {
      const r = await reqWith(vars, "/admin/proxies", json({ prefix: "pxbad", upstream: "http://127.0.0.1:1", ...extra }));
      expect(r.status, JSON.stringify(extra)).toBe(400);
      expect(await r.text(), JSON.stringify(extra)).toContain(message);
    }
    expect(await (await reqWith({}, "/admin/proxies")).text()).not.toContain("pxbad");
  });

  it("keep R2-stored credentials of older versions working, flagged until replaced by a secret", async () => {
    // What an older version wrote through the API: the password inside the R2 object.
    await saveApiNamespaces(E, [{ prefix: "pxold", upstream: "http://127.0.0.1:1", libraryPrefix: false, tagTtlSeconds: 300, timeoutSeconds: 1, username: "olduser", password: "old-secret-pw" } as never]);
    const t = await proxyFor(E, "pxold/app");
    expect(t?.ns).toMatchObject({ username: "olduser", password: "old-secret-pw", unpulledDays: 30 });
    const list = await (await reqWith({}, "/admin/proxies")).text();
    expect(list).not.toContain("old-secret-pw");
    const shown = (JSON.parse(list) as { proxies: { prefix: string; credentials: string; warning?: string }[] }).proxies.find((p) => p.prefix === "pxold");
    expect(shown).toMatchObject({ credentials: "r2" });
    expect(shown?.warning).toContain("stored in R2; move to a secret");
    // Replaced with a secret: nothing of the old password is kept.
    const vars = { PXOLD_CREDS: "newuser:new-pw" };
    expect((await reqWith(vars, "/admin/proxies", json({ prefix: "pxold", upstream: "http://127.0.0.1:1", credentialsSecret: "PXOLD_CREDS" }))).status).toBe(200);
    const obj = await E.BUCKET.get(PROXY_CONFIG_KEY);
    expect(await obj!.text()).not.toContain("old-secret-pw");
    expect((await proxyFor({ ...E, ...vars }, "pxold/app"))?.ns).toMatchObject({ username: "newuser", password: "new-pw" });
    expect((await reqWith({}, "/admin/proxies/pxold", { method: "DELETE" })).status).toBe(204);
  });

  it("come from PROXY_NAMESPACES too: validated, merged, winning on the same prefix, read-only in the API", async () => {
    expect((await reqWith({}, "/admin/proxies", json({ prefix: "pxtoml", upstream: "http://127.0.0.1:2" }))).status).toBe(200);
    const toml = { PROXY_NAMESPACES: JSON.stringify([{ prefix: "pxtoml", upstream: "http://127.0.0.1:1", credentialsSecret: "TOML_CREDS", tagTtlSeconds: 60 }, { prefix: "pxtoml2", upstream: "http://127.0.0.1:3", unpulledDays: null }]), TOML_CREDS: "t:toml-pw" };
    const list = (await (await reqWith(toml, "/admin/proxies")).json()) as { proxies: { prefix: string; source: string; upstream: string }[] };
    const mine = list.proxies.filter((p) => p.prefix.startsWith("pxtoml"));
    expect(mine).toEqual([
      expect.objectContaining({ prefix: "pxtoml", source: "wrangler.toml", upstream: "http://127.0.0.1:1", credentialsSecret: "TOML_CREDS", tagTtlSeconds: 60, unpulledDays: 30 }),
      expect.objectContaining({ prefix: "pxtoml2", source: "wrangler.toml", unpulledDays: null }),
    ]);
    expect(JSON.stringify(list)).not.toContain("toml-pw");
    expect((await proxyFor({ ...E, ...toml }, "pxtoml/a"))?.ns).toMatchObject({ upstream: "http://127.0.0.1:1", password: "toml-pw" });
    // The admin API can neither change nor delete them, nor overlap them.
    for (const r of [
      await reqWith(toml, "/admin/proxies", json({ prefix: "pxtoml2", upstream: "http://127.0.0.1:9" })),
      await reqWith(toml, "/admin/proxies/pxtoml2", { method: "DELETE" }),
      await reqWith(toml, "/admin/proxies/pxtoml", { method: "DELETE" }),
    ]) {
      expect(r.status).toBe(409);
      expect(await r.text()).toContain("wrangler.toml");
    }
    expect((await reqWith(toml, "/admin/proxies", json({ prefix: "pxtoml2/sub", upstream: "http://127.0.0.1:9" }))).status).toBe(400);
    // They act: pushes are refused.
    await expectError(reqWith(toml, "/v2/pxtoml2/app/blobs/uploads/", { method: "POST" }), 405, "UNSUPPORTED");
    // A TOML array of tables in [vars] arrives already parsed: the same list.
    const parsed = { PROXY_NAMESPACES: JSON.parse(toml.PROXY_NAMESPACES) } as unknown as Record<string, string>;
    expect((await proxyFor({ ...E, ...parsed }, "pxtoml2/a"))?.ns.upstream).toBe("http://127.0.0.1:3");
    // Without the var, the API's own entry is back.
    expect(((await (await reqWith({}, "/admin/proxies")).json()) as { proxies: { prefix: string; upstream: string }[] }).proxies.find((p) => p.prefix === "pxtoml")?.upstream).toBe("http://127.0.0.1:2");
    expect((await reqWith({}, "/admin/proxies/pxtoml", { method: "DELETE" })).status).toBe(204);
  });

  it("an invalid PROXY_NAMESPACES answers 503 naming the var and the fault, never a 500", async () => {
    for (const [raw, why] of [
      ["[{", "not JSON"],
      [JSON.stringify([{ prefix: "x", upstream: "ftp://x" }]), "upstream must be an http(s) URL"],
      [JSON.stringify([{ prefix: "x", upstream: "http://x", password: "p" }]), "Worker secrets"],
      [JSON.stringify([{ prefix: "x", upstream: "http://x" }, { prefix: "x/y", upstream: "http://y" }]), "overlaps"],
      [JSON.stringify({ prefix: "x" }), "array"],
    ]) {
      for (const path of ["/v2/any/app/manifests/v1", "/admin/proxies"]) {
        const r = await reqWith({ PROXY_NAMESPACES: raw }, path);
        expect(r.status, `${raw} ${path}`).toBe(503);
        const e = await ociError(r);
        expect(e.message, raw).toContain("PROXY_NAMESPACES");
        expect(e.message.toLowerCase(), raw).toContain(why.toLowerCase());
      }
    }
  });

  it("refuse bad input with 400", async () => {
    for (const body of [
      { prefix: "Bad Prefix", upstream: "http://127.0.0.1:1" },
      { prefix: "ok", upstream: "ftp://127.0.0.1" },
      { prefix: "ok", upstream: "http://127.0.0.1:1", username: "u" }, // password missing
      { prefix: "ok", upstream: "http://127.0.0.1:1", tagTtlSeconds: -1 },
      { prefix: "ok", upstream: "http://127.0.0.1:1", surprise: true },
    ]) {
      const r = await req("/admin/proxies", json(body));
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    expect((await req("/admin/proxies", json({ prefix: "pxa", upstream: "http://127.0.0.1:1" }))).status).toBe(200);
    const overlap = await req("/admin/proxies", json({ prefix: "pxa/sub", upstream: "http://127.0.0.1:1" }));
    expect(overlap.status).toBe(400);
    expect((await ociError(overlap)).message).toContain("overlaps");
    await req("/admin/proxies/pxa", { method: "DELETE" });
  });

  it("refuse pushes with 405 UNSUPPORTED; repositories outside stay writable", async () => {
    expect((await req("/admin/proxies", json({ prefix: "pxpush", upstream: "http://127.0.0.1:1", timeoutSeconds: 1 }))).status).toBe(200);
    try {
      const msg = await expectError(req("/v2/pxpush/app/blobs/uploads/", { method: "POST" }), 405, "UNSUPPORTED");
      expect(msg).toContain("proxy namespace");
      await expectError(req("/v2/pxpush/app/manifests/v1", { method: "PUT", headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" }, body: "{}" }), 405, "UNSUPPORTED");
      await pushBlob("pxpushnot/app", bytes(100, 3)); // a name merely starting with the prefix is not in it
    } finally {
      await req("/admin/proxies/pxpush", { method: "DELETE" });
    }
  });

  it("an unreachable upstream is a 502/504 naming it, never a 500", async () => {
    expect((await req("/admin/proxies", json({ prefix: "pxdown", upstream: "http://127.0.0.1:1", timeoutSeconds: 1 }))).status).toBe(200);
    try {
      for (const path of ["/v2/pxdown/app/manifests/v1", `/v2/pxdown/app/blobs/sha256:${"a".repeat(64)}`]) {
        const r = await req(path);
        expect([502, 504], path).toContain(r.status);
        const e = await ociError(r);
        expect(e.code).toBe("UNKNOWN");
        expect(e.message).toContain("http://127.0.0.1:1");
      }
    } finally {
      await req("/admin/proxies/pxdown", { method: "DELETE" });
    }
  });
});

// ---- blob fills from a loopback upstream (test/unit/proxy-upstream.setup.mjs, counted there) ----

declare module "vitest" {
  interface ProvidedContext {
    proxyUpstream: string;
  }
}

describe("proxy blob fills", () => {
  const upstream = inject("proxyUpstream");
  const isMember = async (repo: string, digest: string) => (await memberBlob(env as unknown as Env, repo, digest)) !== null;
  const upstreamGets = async (digest: string) => ((await (await fetch(`${upstream}/_blobs/${digest}`)).json()) as { gets: number }).gets;
  const serve = async (blob: Uint8Array, opts: { corrupt?: boolean; sliceDelayMs?: number } = {}) => {
    const digest = await sha256(blob);
    const q = new URLSearchParams({ corrupt: opts.corrupt ? "1" : "0", sliceDelayMs: String(opts.sliceDelayMs ?? 0) });
    expect((await fetch(`${upstream}/_blobs/${digest}?${q}`, { method: "PUT", body: blob })).status).toBe(200);
    return digest;
  };
  const until = async (what: string, ok: () => Promise<boolean>, ms = 15_000) => {
    const end = Date.now() + ms;
    while (!(await ok())) {
      if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const readAll = async (res: Response) => new Uint8Array(await res.arrayBuffer());

  beforeAll(async () => {
    expect((await req("/admin/proxies", json({ prefix: "pxfill", upstream, timeoutSeconds: 5 }))).status).toBe(200);
  });
  afterAll(async () => {
    await req("/admin/proxies/pxfill", { method: "DELETE" });
  });

  it("stream a cold blob to the client while it lands in R2, verified, then serve it from the cache", async () => {
    const blob = bytes(2 * 1024 * 1024, 71);
    const digest = await serve(blob, { sliceDelayMs: 40 }); // 32 slices: ~1.3 s upstream
    const res = await req(`/v2/pxfill/stream/blobs/${digest}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Length")).toBe(String(blob.length));
    expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // Bytes reached the client before the blob was committed: it is streamed, not landed first.
    expect(await isMember("pxfill/stream", digest)).toBe(false);
    const parts: Uint8Array[] = [first.value!];
    for (let r = await reader.read(); !r.done; r = await reader.read()) parts.push(r.value);
    const got = new Uint8Array(await new Blob(parts).arrayBuffer());
    expect(await sha256(got)).toBe(digest);
    await until("the fill is committed", () => isMember("pxfill/stream", digest));
    const again = await req(`/v2/pxfill/stream/blobs/${digest}`);
    expect(await sha256(await readAll(again))).toBe(digest);
    expect(await upstreamGets(digest)).toBe(1);
  });

  it("stream a blob of any length through the request log (which pipes every body into a FixedLengthStream)", async () => {
    const blob = bytes(1_000_003, 77); // not a multiple of the 256 KiB reads: a short last chunk
    const digest = await serve(blob);
    const ctx = createExecutionContext();
    const res = await buildApp().fetch(new Request(`${BASE}/v2/pxfill/logged/blobs/${digest}`), { ...(env as unknown as Env), REQUEST_LOG: "on" }, ctx);
    expect(res.status).toBe(200);
    expect(await sha256(await readAll(res))).toBe(digest);
    await waitOnExecutionContext(ctx);
    expect(await isMember("pxfill/logged", digest)).toBe(true);
  });

  it("cut the client's stream before the last byte when the upstream's bytes do not match, keep nothing and audit it", async () => {
    const blob = bytes(512 * 1024, 72);
    const digest = await serve(blob, { corrupt: true });
    const res = await req(`/v2/pxfill/corrupt/blobs/${digest}`);
    expect(res.status).toBe(200); // headers went out before the last byte could be checked
    let received = 0;
    let failed = false;
    try {
      const reader = res.body!.getReader();
      for (let r = await reader.read(); !r.done; r = await reader.read()) received += r.value.length;
    } catch {
      failed = true;
    }
    expect(failed).toBe(true);
    expect(received).toBeLessThan(blob.length);
    await until("the mismatch is audited", async () => (await (await req("/admin/audit?action=proxy.digest_mismatch")).text()).includes(digest));
    expect(await isMember("pxfill/corrupt", digest)).toBe(false);
    // Nothing was kept: a HEAD fetches it again (and is refused again, now before answering).
    const head = await req(`/v2/pxfill/corrupt/blobs/${digest}`, { method: "HEAD" });
    expect(head.status).toBe(502);
    expect(await upstreamGets(digest)).toBe(2);
  });

  it("finish the fill into R2 when the client leaves half-way", async () => {
    const blob = bytes(2 * 1024 * 1024, 73);
    const digest = await serve(blob, { sliceDelayMs: 30 });
    const res = await req(`/v2/pxfill/leaver/blobs/${digest}`);
    const reader = res.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    await reader.cancel();
    await until("the abandoned fill is committed", () => isMember("pxfill/leaver", digest));
    const again = await req(`/v2/pxfill/leaver/blobs/${digest}`);
    expect(await sha256(await readAll(again))).toBe(digest);
    expect(await upstreamGets(digest)).toBe(1);
  });

  it("answer HEAD on a cold blob after filling it", async () => {
    const blob = bytes(300 * 1024, 74);
    const digest = await serve(blob);
    const head = await req(`/v2/pxfill/head/blobs/${digest}`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Length")).toBe(String(blob.length));
    expect(await isMember("pxfill/head", digest)).toBe(true);
  });

  it("single flight: concurrent cold pulls of one blob make one upstream GET; the others wait for it", async () => {
    const blob = bytes(1024 * 1024, 75);
    const digest = await serve(blob, { sliceDelayMs: 40 });
    const results = await Promise.all(Array.from({ length: 5 }, async () => {
      const res = await req(`/v2/pxfill/flight/blobs/${digest}`);
      expect(res.status).toBe(200);
      return sha256(await readAll(res));
    }));
    expect(results).toEqual(Array(5).fill(digest));
    expect(await upstreamGets(digest)).toBe(1);
  });

  it("single flight: concurrent cold pulls of one manifest by digest make one upstream GET", async () => {
    // The layer is never fetched: references of a proxied manifest are filled when asked for.
    const MT = "application/vnd.oci.image.manifest.v1+json";
    const body = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2, mediaType: MT,
      config: { mediaType: "application/vnd.oci.empty.v1+json", digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", size: 2 },
      layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: await sha256(bytes(64, 77)), size: 64 }],
    }));
    const digest = await sha256(body);
    expect((await fetch(`${upstream}/_blobs/${digest}?mediaType=${encodeURIComponent(MT)}&sliceDelayMs=300`, { method: "PUT", body })).status).toBe(200);
    const got = await Promise.all(Array.from({ length: 5 }, async () => {
      const res = await req(`/v2/pxfill/mflight/manifests/${digest}`, { headers: { Accept: MT } });
      expect(res.status, await res.clone().text()).toBe(200);
      expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
      return sha256(await readAll(res));
    }));
    expect(got).toEqual(Array(5).fill(digest));
    expect(await upstreamGets(digest)).toBe(1);
    // Cached now: another pull makes no upstream request.
    expect((await req(`/v2/pxfill/mflight/manifests/${digest}`, { headers: { Accept: MT } })).status).toBe(200);
    expect(await upstreamGets(digest)).toBe(1);

    // Across isolates: a filler elsewhere (here a lease taken by hand that is never renewed) is
    // waited for, not raced; the manifest is fetched only once its lease lapses.
    const other = new TextEncoder().encode(new TextDecoder().decode(body).replace('"size":64', '"size":64,"annotations":{"n":"2"}'));
    const otherDigest = await sha256(other);
    expect((await fetch(`${upstream}/_blobs/${otherDigest}?mediaType=${encodeURIComponent(MT)}`, { method: "PUT", body: other })).status).toBe(200);
    const id = fillSessionId("pxfill/mflight", otherDigest);
    const taken = await uploadSessionFor(env as unknown as Env, id).beginOrOpen(
      { id, repo: "pxfill/mflight", principal: "proxy-fill", expiresAt: Date.now() + 3600_000, partSize: 5 * 1024 * 1024 }, null, { leaseMs: 1500, final: true },
    );
    expect(taken.ok).toBe(true);
    const t0 = Date.now();
    const res = await req(`/v2/pxfill/mflight/manifests/${otherDigest}`, { headers: { Accept: MT } });
    expect(res.status).toBe(200);
    expect(await sha256(await readAll(res))).toBe(otherDigest);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
    expect(await upstreamGets(otherDigest)).toBe(1);
  });

  it("single flight: a filler that stopped renewing its lease is taken over once the lease lapses", async () => {
    const blob = bytes(256 * 1024, 76);
    const digest = await serve(blob);
    const id = fillSessionId("pxfill/crashed", digest);
    const taken = await uploadSessionFor(env as unknown as Env, id).beginOrOpen(
      { id, repo: "pxfill/crashed", principal: "proxy-fill", expiresAt: Date.now() + 3600_000, partSize: 5 * 1024 * 1024 }, null, { leaseMs: 1500, final: true },
    );
    expect(taken.ok).toBe(true); // a "crashed" filler: it never renews nor fetches
    const t0 = Date.now();
    const res = await req(`/v2/pxfill/crashed/blobs/${digest}`);
    expect(res.status).toBe(200);
    expect(await sha256(await readAll(res))).toBe(digest);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1000); // it waited for the lease to lapse
    expect(await upstreamGets(digest)).toBe(1);
  });
});
