// Durable Object round trips per operation (docs/roundtrips.md), counted: every request goes
// through a fresh app whose Durable Object namespaces are wrapped so that each RPC the Worker
// makes on a stub is recorded. Calls objects make to each other (a repository's first-use import
// from the legacy index, its one catalog registration) are not Worker round trips and are listed
// separately in the doc. Each operation is measured warm: its repository's object already exists.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it, vi } from "vitest";
import { PROXY_CONFIG_KEY } from "../../src/proxy/config";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import { BASE, bytes, makeImage, pushBlob, putManifest, sha256 } from "./helpers";

// Every namespace, the audit log's included: its appends are Durable Object calls like any other.
const NAMESPACES = ["BLOB_STORE", "UPLOAD_SESSION", "TRUST_STORE", "ACCOUNT_STORE", "CATALOG", "AUDIT_LOG", "GC"] as const;

/** One request through the Worker with counting namespaces; answers the response and the calls made. */
async function counted(path: string, init: RequestInit = {}, vars: Record<string, string> = {}) {
  const calls: string[] = [];
  const base = { ...(env as unknown as Env), AUDIT_PULLS: "off", ...vars } as Env & Record<string, unknown>;
  const wrapped: Record<string, unknown> = { ...base };
  for (const name of NAMESPACES) {
    const ns = base[name] as unknown as DurableObjectNamespace;
    wrapped[name] = new Proxy(ns, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target);
        if (prop !== "get" || typeof v !== "function") return typeof v === "function" ? v.bind(target) : v;
        return (id: DurableObjectId) => {
          const stub = target.get(id) as unknown as Record<string | symbol, unknown>;
          return new Proxy(stub, {
            get(s, method) {
              if (method === "then" || method === "id" || method === "name" || typeof method === "symbol") return Reflect.get(s, method);
              return (...args: unknown[]) => {
                calls.push(`${name}.${String(method)}`);
                return (s[method] as (...a: unknown[]) => unknown)(...args);
              };
            },
          });
        };
      },
    });
  }
  // R2 calls too (method and key), kept apart from the Durable Object calls.
  const r2: string[] = [];
  const bucket = base.BUCKET as unknown as Record<string, unknown>;
  wrapped.BUCKET = new Proxy(bucket, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        r2.push(`${String(prop)} ${typeof args[0] === "string" ? args[0] : ""}`.trim());
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  const creds = (env as unknown as { TEST_CREDENTIALS?: string }).TEST_CREDENTIALS;
  const headers = new Headers(init.headers);
  if (creds && !headers.has("Authorization")) headers.set("Authorization", "Basic " + btoa(creds));
  const ctx = createExecutionContext();
  const res = await buildApp().fetch(new Request(BASE + path, { ...init, headers }), wrapped as unknown as Env, ctx);
  await res.arrayBuffer();
  await waitOnExecutionContext(ctx);
  return { status: res.status, calls, r2, headers: res.headers };
}

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const E = env as unknown as Env;
const uid = () => "rt" + crypto.randomUUID().slice(0, 8);

describe("Durable Object round trips per operation (open mode)", () => {
  it("blob GET and HEAD: 1 (member, non-member and nowhere alike)", async () => {
    const repo = `${uid()}/a`;
    const d = await pushBlob(repo, bytes(4096, 1));
    const other = await pushBlob(`${uid()}/b`, bytes(4096, 2));
    for (const [method, digest, status] of [["GET", d, 200], ["HEAD", d, 200], ["GET", other, 404], ["HEAD", other, 404]] as const) {
      const r = await counted(`/v2/${repo}/blobs/${digest}`, { method });
      expect(r.status, `${method} ${digest}`).toBe(status);
      expect(r.calls, `${method} ${digest}`).toEqual(["TRUST_STORE.blob"]);
    }
  });

  it("manifest GET and HEAD by tag or digest: 1", async () => {
    const repo = `${uid()}/m`;
    const img = await makeImage(repo, { seed: 3 });
    expect((await putManifest(repo, "v1", img.manifest)).status).toBe(201);
    for (const ref of ["v1", img.digest]) {
      for (const method of ["GET", "HEAD"]) {
        const r = await counted(`/v2/${repo}/manifests/${ref}`, { method, headers: { Accept: MANIFEST } });
        expect(r.status).toBe(200);
        expect(r.calls, `${method} ${ref}`).toEqual(["TRUST_STORE.manifest"]);
      }
    }
  });

  // Target ≤ 2 TOTAL, audit included, met: no reference pre-check; the TrustStore transaction checks
  // the references and writes the audit event (its outbox, forwarded by its alarm: docs/adr/0021,
  // not a Worker call — AUDIT_LOG is counted and absent); a refused PUT gives back what it took.
  it("manifest PUT: 2 (BlobStore commit with holder; check and put in one TrustStore call)", async () => {
    const repo = `${uid()}/p`;
    const img = await makeImage(repo, { seed: 4 });
    const put = (ref: string, body: Uint8Array) => counted(`/v2/${repo}/manifests/${ref}`, { method: "PUT", headers: { "Content-Type": MANIFEST }, body });
    for (const ref of ["v1", "v1", img.digest]) { // new tag, same tag again, by digest
      const r = await put(ref, img.manifest);
      expect(r.status).toBe(201);
      expect(r.calls, ref).toEqual(["BLOB_STORE.commit", "TRUST_STORE.putManifest"]);
    }
    // Moving an existing tag: the store refuses it in the transaction, policy is read, then the move (5).
    const img2 = await makeImage(repo, { seed: 5 });
    const moved = await put("v1", img2.manifest);
    expect(moved.status).toBe(201);
    expect(moved.calls).toEqual(["BLOB_STORE.commit", "TRUST_STORE.putManifest", "ACCOUNT_STORE.rules", "TRUST_STORE.putManifest"]);
    // A refused PUT (a reference that is not a member) gives back what its commit took: +1.
    const stranger = await makeImage(`${uid()}/elsewhere`, { seed: 7 });
    const refused = await put("v2", stranger.manifest);
    expect(refused.status).toBe(400);
    expect(refused.calls).toEqual(["BLOB_STORE.commit", "TRUST_STORE.putManifest", "BLOB_STORE.abandon"]);
    // DELETE by digest: policy (immutable tags), the store, then the BlobStore holder.
    const del = await counted(`/v2/${repo}/manifests/${img.digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    expect(del.calls).toEqual(["ACCOUNT_STORE.rules", "TRUST_STORE.deleteManifest", "BLOB_STORE.release"]);
  });

  it("tags/list and _catalog: 1", async () => {
    const repo = `${uid()}/t`;
    const img = await makeImage(repo, { seed: 6 });
    expect((await putManifest(repo, "v1", img.manifest)).status).toBe(201);
    const tags = await counted(`/v2/${repo}/tags/list`);
    expect(tags.status).toBe(200);
    expect(tags.calls).toEqual(["TRUST_STORE.tags"]);
    const cat = await counted(`/v2/_catalog?n=5`);
    expect(cat.status).toBe(200);
    expect(cat.calls).toEqual(["CATALOG.page"]);
  });

  it("blob pushes: POST ?digest= 2; POST + PUT with the body 2 (stateless location); mount 3; DELETE 2", async () => {
    const repo = `${uid()}/u`;
    await pushBlob(repo, bytes(10, 9)); // the repository's object exists
    const data = bytes(4096, 10);
    const digest = await sha256(data);
    const mono = await counted(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: data, headers: { "Content-Type": "application/octet-stream" } });
    expect(mono.status).toBe(201);
    expect(mono.calls).toEqual(["BLOB_STORE.commit", "TRUST_STORE.link"]);

    // POST + PUT with the whole blob: a signed, stateless location (docs/adr/0013). POST calls
    // nothing; the PUT's link ends the id in its own transaction: 2, as POST ?digest=.
    const data2 = bytes(4096, 11);
    const d2 = await sha256(data2);
    const post = await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
    expect(post.status).toBe(202);
    expect(post.calls).toEqual([]);
    const put = await counted(`${post.headers.get("Location")}?digest=${d2}`, { method: "PUT", body: data2, headers: { "Content-Type": "application/octet-stream" } });
    expect(put.status).toBe(201);
    expect(put.calls).toEqual(["BLOB_STORE.commit", "TRUST_STORE.link"]);
    // The id ended with the close: GET asks the session, then the repository.
    const after = await counted(post.headers.get("Location")!);
    expect(after.status).toBe(404);
    expect(after.calls).toEqual(["UPLOAD_SESSION.get", "TRUST_STORE.uploadEnded"]);

    // DELETE of a never-written signed id: no session to cancel; the repository ends the id.
    const post4 = await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
    const cancel = await counted(post4.headers.get("Location")!, { method: "DELETE" });
    expect(cancel.status).toBe(204);
    expect(cancel.calls).toEqual(["UPLOAD_SESSION.cancel", "TRUST_STORE.endUpload"]);

    // Chunked: the first PATCH creates the session in the call that takes the lease, then asks the
    // repository whether the id had ended; later PATCHes and the close are as before (2 and 4).
    const data3 = bytes(3000, 13);
    const d3 = await sha256(data3);
    const post3 = await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
    const loc3 = post3.headers.get("Location")!;
    const p1 = await counted(loc3, { method: "PATCH", body: data3.subarray(0, 1000), headers: { "Content-Type": "application/octet-stream", "Content-Range": "0-999" } });
    expect(p1.status).toBe(202);
    expect(p1.calls).toEqual(["UPLOAD_SESSION.beginOrOpen", "TRUST_STORE.uploadEnded", "UPLOAD_SESSION.commit"]);
    const p2 = await counted(loc3, { method: "PATCH", body: data3.subarray(1000), headers: { "Content-Type": "application/octet-stream", "Content-Range": `1000-${data3.length - 1}` } });
    expect(p2.calls).toEqual(["UPLOAD_SESSION.beginOrOpen", "UPLOAD_SESSION.commit"]);
    const close = await counted(`${loc3}?digest=${d3}`, { method: "PUT" });
    expect(close.status).toBe(201);
    expect(close.calls).toEqual(["UPLOAD_SESSION.beginOrOpen", "BLOB_STORE.commit", "TRUST_STORE.link", "UPLOAD_SESSION.finish"]);

    const target = `${uid()}/v`;
    await pushBlob(target, bytes(10, 12));
    const mount = await counted(`/v2/${target}/blobs/uploads/?mount=${digest}&from=${repo}`, { method: "POST" });
    expect(mount.status).toBe(201);
    expect(mount.calls).toEqual(["TRUST_STORE.blob", "BLOB_STORE.hold", "TRUST_STORE.link"]);

    const del = await counted(`/v2/${target}/blobs/${digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    expect(del.calls).toEqual(["TRUST_STORE.unlinkBlob", "BLOB_STORE.release"]);
  });

  // Issue 17: the proxy configuration is off the hot path, and a cached proxy pull reads the index once.
  it("no proxy namespaces: a pull reads no proxy configuration after the first (negative cache, 60 s)", async () => {
    const repo = `${uid()}/np`;
    const img = await makeImage(repo, { seed: 20 });
    expect((await putManifest(repo, "v1", img.manifest)).status).toBe(201);
    const t0 = Date.now() + 120_000; // past any earlier read of this isolate
    const clock = vi.spyOn(Date, "now");
    try {
      clock.mockReturnValue(t0);
      const warm = await counted(`/v2/${repo}/manifests/v1`, { headers: { Accept: MANIFEST } });
      expect(warm.r2[0]).toBe(`get ${PROXY_CONFIG_KEY}`);
      for (const later of [1_000, 30_000, 59_000]) {
        clock.mockReturnValue(t0 + later);
        const r = await counted(`/v2/${repo}/manifests/v1`, { headers: { Accept: MANIFEST } });
        expect(r.status).toBe(200);
        expect(r.calls, `+${later} ms`).toEqual(["TRUST_STORE.manifest"]);
        expect(r.r2, `+${later} ms`).toEqual([expect.stringMatching(/^get manifests\//)]); // the manifest's bytes only
      }
      // After the interval: one conditional read of the list (no body while unchanged).
      clock.mockReturnValue(t0 + 61_000);
      const r = await counted(`/v2/${repo}/manifests/v1`, { headers: { Accept: MANIFEST } });
      expect(r.status).toBe(200);
      expect(r.r2).toEqual([`get ${PROXY_CONFIG_KEY}`, expect.stringMatching(/^get manifests\//)]);
      // An admin write elsewhere (here: straight to R2) is seen at the next re-check, 60 s on.
      await E.BUCKET.put(PROXY_CONFIG_KEY, JSON.stringify([{ prefix: repo.split("/")[0], upstream: "http://127.0.0.1:1", libraryPrefix: false, tagTtlSeconds: 300, timeoutSeconds: 1 }]));
      clock.mockReturnValue(t0 + 62_000);
      expect((await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" })).status).toBe(202);
      clock.mockReturnValue(t0 + 122_000);
      expect((await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" })).status).toBe(405);
      await E.BUCKET.delete(PROXY_CONFIG_KEY);
      clock.mockReturnValue(t0 + 133_000);
      expect((await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" })).status).toBe(202);
    } finally {
      clock.mockRestore();
    }
  });

  it("a cached proxy pull: 1 index call by tag or digest, no tag-state read within the TTL, admin writes seen at once", async () => {
    const repo = `pxrt${uid()}/app`;
    const prefix = repo.split("/")[0];
    const img = await makeImage(repo, { seed: 21 });
    expect((await putManifest(repo, "v1", img.manifest)).status).toBe(201); // cached content, as a fill leaves it
    await E.BUCKET.put(`_proxy/tags/${repo}/v1`, "", { customMetadata: { checkedAt: String(Date.now()), digest: img.digest } });
    // Configured through the admin API in this isolate: the next request sees it without waiting.
    const put = await counted("/admin/proxies", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ prefix, upstream: "http://127.0.0.1:1", timeoutSeconds: 1 }) });
    expect(put.status).toBe(200);
    expect((await counted(`/v2/${repo}/blobs/uploads/`, { method: "POST" })).status).toBe(405);
    try {
      const first = await counted(`/v2/${repo}/manifests/v1`, { headers: { Accept: MANIFEST } });
      expect(first.status).toBe(200);
      expect(first.calls).toEqual(["TRUST_STORE.manifest"]); // was 2: the proxy check's lookup is reused
      expect(first.r2).toEqual([`head _proxy/tags/${repo}/v1`, expect.stringMatching(/^get manifests\//)]);
      for (const ref of ["v1", img.digest]) {
        for (const method of ["GET", "HEAD"]) {
          const r = await counted(`/v2/${repo}/manifests/${ref}`, { method, headers: { Accept: MANIFEST } });
          expect(r.status, `${method} ${ref}`).toBe(200);
          expect(r.calls, `${method} ${ref}`).toEqual(["TRUST_STORE.manifest"]);
          expect(r.r2, `${method} ${ref}`).toEqual(method === "GET" ? [expect.stringMatching(/^get manifests\//)] : []);
        }
      }
      // A cached blob: the proxy check's membership lookup is the route's too.
      for (const method of ["GET", "HEAD"]) {
        const b = await counted(`/v2/${repo}/blobs/${img.layers[0]}`, { method });
        expect(b.status, `${method} blob`).toBe(200);
        expect(b.calls, `${method} blob`).toEqual(["TRUST_STORE.blob"]);
      }
    } finally {
      expect((await counted(`/admin/proxies/${prefix}`, { method: "DELETE" })).status).toBe(204);
    }
  });
});

// Token mode with TOKEN_SIGNING_KEYS (the deployed setup: no AccountStore call to verify a token).
// A gated and an ungated Bearer manifest pull both cost one store call: the token service embeds
// the signature gates of the repositories it grants pull on (ADR 0019 "Session 4"), so the pull
// needs no policy lookup to find them.
describe("Durable Object round trips per operation (token mode, Bearer tokens)", () => {
  const ADMIN_PW = "roundtrips-admin";
  const TOKEN_VARS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW, TOKEN_SIGNING_KEYS: JSON.stringify([{ kid: "rt", secret: "roundtrips-signing-secret-0123456789abcdef" }]) };
  const basic = { Authorization: `Basic ${btoa(`admin:${ADMIN_PW}`)}` };
  const call = async (path: string, init: RequestInit = {}) => {
    const ctx = createExecutionContext();
    const res = await buildApp().fetch(new Request(BASE + path, init), { ...(env as unknown as Env), ...TOKEN_VARS } as Env, ctx);
    await waitOnExecutionContext(ctx);
    return res;
  };
  const tokenFor = async (repo: string) => {
    const r = await call(`/token?service=${encodeURIComponent(new URL(BASE).host)}&scope=repository:${repo}:pull`, { headers: basic });
    expect(r.status, await r.clone().text()).toBe(200);
    return ((await r.json()) as { token: string }).token;
  };

  it("manifest GET by tag, gated (gate met) or not: 1", async () => {
    const ns = uid();
    const [gated, open] = [`${ns}/gated`, `${uid()}/open`];
    // a gate met by an index-less image: a key signs it, cosign-style, in the same repository
    const kp = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
    const spki = new Uint8Array((await crypto.subtle.exportKey("spki", kp.publicKey)) as ArrayBuffer);
    const pem = `-----BEGIN PUBLIC KEY-----\n${btoa(String.fromCharCode(...spki))}\n-----END PUBLIC KEY-----\n`;
    const json = (b: unknown) => ({ method: "POST", headers: { ...basic, "Content-Type": "application/json" }, body: JSON.stringify(b) });
    expect((await call("/admin/trust-keys", json({ name: `k-${ns}`, publicKey: pem }))).status).toBe(201);
    expect((await call("/admin/policies", json({ id: `${ns}-gate`, kind: "signature-gate", repositories: `${ns}/**`, keys: `k-${ns}`, minimum: 1 }))).status).toBe(201);
    for (const repo of [gated, open]) {
      const img = await makeImage(repo, { seed: 21 });
      expect((await call(`/v2/${repo}/manifests/v1`, { method: "PUT", headers: { ...basic, "Content-Type": MANIFEST }, body: img.manifest })).status).toBe(201);
      if (repo !== gated) continue;
      const enc = new TextEncoder();
      const payload = enc.encode(JSON.stringify({ critical: { identity: { "docker-reference": repo }, image: { "docker-manifest-digest": img.digest }, type: "cosign container image signature" }, optional: null }));
      const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, kp.privateKey, payload));
      const cfg = enc.encode("{}");
      for (const b of [payload, cfg]) expect((await call(`/v2/${repo}/blobs/uploads/?digest=${await sha256(b)}`, { method: "POST", headers: basic, body: b })).status).toBe(201);
      const sigManifest = JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await sha256(cfg), size: cfg.length }, layers: [{ mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", digest: await sha256(payload), size: payload.length, annotations: { "dev.cosignproject.cosign/signature": btoa(String.fromCharCode(...sig)) } }] });
      // the push records the attestation (in the background); no pull has verified anything yet
      expect((await call(`/v2/${repo}/manifests/sha256-${img.digest.slice(7)}.sig`, { method: "PUT", headers: { ...basic, "Content-Type": MANIFEST }, body: sigManifest })).status).toBe(201);
    }
    for (const [repo, expected] of [[gated, "TRUST_STORE.gatedManifest"], [open, "TRUST_STORE.manifest"]] as const) {
      const token = await tokenFor(repo);
      const r = await counted(`/v2/${repo}/manifests/v1`, { headers: { Authorization: `Bearer ${token}`, Accept: MANIFEST } }, TOKEN_VARS);
      expect(r.status, repo).toBe(200);
      expect(r.calls, repo).toEqual([expected]);
    }
    // the gate is real: without the signature the same Bearer pull is refused (and then re-verifies)
    const unsigned = `${ns}/unsigned`;
    const img = await makeImage(unsigned, { seed: 22 });
    expect((await call(`/v2/${unsigned}/manifests/v1`, { method: "PUT", headers: { ...basic, "Content-Type": MANIFEST }, body: img.manifest })).status).toBe(201);
    const refused = await counted(`/v2/${unsigned}/manifests/v1`, { headers: { Authorization: `Bearer ${await tokenFor(unsigned)}`, Accept: MANIFEST } }, TOKEN_VARS);
    expect(refused.status).toBe(403);
    // the rows do not meet the gate: one verification pass (no signature here), then the refusal's audit event
    expect(refused.calls).toEqual(["TRUST_STORE.gatedManifest", "ACCOUNT_STORE.rules", "TRUST_STORE.referrersAndSignatureTag", "TRUST_STORE.recordAttestations", "AUDIT_LOG.append"]);
    expect((await call(`/admin/trust-keys/k-${ns}`, { method: "DELETE", headers: basic })).status).toBe(204);
  });
});
