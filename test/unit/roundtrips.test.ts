// Durable Object round trips per operation (docs/roundtrips.md), counted: every request goes
// through a fresh app whose Durable Object namespaces are wrapped so that each RPC the Worker
// makes on a stub is recorded. Calls objects make to each other (a repository's first-use import
// from the legacy index, its one catalog registration) are not Worker round trips and are listed
// separately in the doc. Each operation is measured warm: its repository's object already exists.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
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
  const creds = (env as unknown as { TEST_CREDENTIALS?: string }).TEST_CREDENTIALS;
  const headers = new Headers(init.headers);
  if (creds && !headers.has("Authorization")) headers.set("Authorization", "Basic " + btoa(creds));
  const ctx = createExecutionContext();
  const res = await buildApp().fetch(new Request(BASE + path, { ...init, headers }), wrapped as unknown as Env, ctx);
  await res.arrayBuffer();
  await waitOnExecutionContext(ctx);
  return { status: res.status, calls, headers: res.headers };
}

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";
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
});
