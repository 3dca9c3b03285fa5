// Proxy namespaces (docs/proxy.md): the admin API validates and never returns credentials, pushes
// into a namespace are refused, and an unreachable upstream is a clear 502/504, never a 500.
// Pulls through real upstreams are in test/e2e/proxy.e2e.test.ts.
import { describe, expect, it } from "vitest";
import { bytes, expectError, ociError, pushBlob, req } from "./helpers";

const json = (body: unknown, method = "PUT"): RequestInit => ({ method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

describe("proxy namespaces", () => {
  it("are set, listed without the password, and removed through the admin API", async () => {
    const put = await req("/admin/proxies", json({ prefix: "pxunit", upstream: "http://127.0.0.1:1", username: "u", password: "secret-pw", timeoutSeconds: 1 }));
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({ prefix: "pxunit", credentials: true, tagTtlSeconds: 300, libraryPrefix: false });
    const list = await req("/admin/proxies");
    const text = await list.text();
    expect(text).toContain("pxunit");
    expect(text).not.toContain("secret-pw");
    expect((await req("/admin/proxies/pxunit", { method: "DELETE" })).status).toBe(204);
    expect((await req("/admin/proxies/pxunit", { method: "DELETE" })).status).toBe(404);
    expect(await (await req("/admin/proxies")).text()).not.toContain("pxunit");
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
