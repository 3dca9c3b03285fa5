import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req, reqWith, sha256, streamOf } from "./helpers";

const OCI = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";
const DOCKER = "application/vnd.docker.distribution.manifest.v2+json";
const LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

describe("PUT/GET/HEAD /v2/<name>/manifests/<reference>", () => {
  it("stores a manifest by tag byte-exact and serves it by tag and digest", async () => {
    const img = await makeImage("mf/a");
    const res = await putManifest("mf/a", "v1", img.manifest);
    expect(res.status).toBe(201);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
    expect(res.headers.get("Location")).toBe(`/v2/mf/a/manifests/${img.digest}`);
    for (const ref of ["v1", img.digest]) {
      const get = await req(`/v2/mf/a/manifests/${ref}`);
      expect(get.status).toBe(200);
      expect(get.headers.get("Content-Type")).toBe(OCI);
      expect(get.headers.get("Docker-Content-Digest")).toBe(img.digest);
      expect(new Uint8Array(await get.arrayBuffer())).toEqual(img.manifest);
      const head = await req(`/v2/mf/a/manifests/${ref}`, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("Content-Length")).toBe(String(img.manifest.length));
      expect(head.headers.get("Docker-Content-Digest")).toBe(img.digest);
    }
  });

  it("accepts OCI manifests without a top-level mediaType (umoci, podman) and serves the OCI type", async () => {
    const img = await makeImage("mf/nomt", { mediaType: false, seed: 2 });
    expect((await putManifest("mf/nomt", "latest", img.manifest)).status).toBe(201);
    const get = await req("/v2/mf/nomt/manifests/latest");
    expect(get.headers.get("Content-Type")).toBe(OCI);
    expect(await sha256(new Uint8Array(await get.arrayBuffer()))).toBe(img.digest);
  });

  it("PUT by digest verifies the body", async () => {
    const img = await makeImage("mf/bydigest", { seed: 3 });
    expect((await putManifest("mf/bydigest", img.digest, img.manifest)).status).toBe(201);
    const other = await sha256(bytes(10));
    const msg = await expectError(putManifest("mf/bydigest", other, img.manifest), 400, "DIGEST_INVALID");
    expect(msg).toContain(img.digest.slice(7));
  });

  it("refuses manifests whose blobs are not in this repository (MANIFEST_BLOB_UNKNOWN)", async () => {
    const img = await makeImage("mf/src", { seed: 4 });
    const msg = await expectError(putManifest("mf/elsewhere", "v1", img.manifest), 400, "MANIFEST_BLOB_UNKNOWN");
    expect(msg).toContain(img.layers[0]);
    await expectError(req("/v2/mf/elsewhere/manifests/v1"), 404, "MANIFEST_UNKNOWN");
  });

  it("accepts an index whose children exist and refuses one with a missing child", async () => {
    const a = await makeImage("mf/idx", { seed: 5 });
    const b = await makeImage("mf/idx", { seed: 6 });
    expect((await putManifest("mf/idx", a.digest, a.manifest)).status).toBe(201);
    expect((await putManifest("mf/idx", b.digest, b.manifest)).status).toBe(201);
    const index = enc({
      schemaVersion: 2, mediaType: INDEX,
      manifests: [
        { mediaType: OCI, digest: a.digest, size: a.manifest.length, platform: { architecture: "amd64", os: "linux" } },
        { mediaType: OCI, digest: b.digest, size: b.manifest.length, platform: { architecture: "arm64", os: "linux" } },
      ],
    });
    expect((await putManifest("mf/idx", "multi", index, INDEX)).status).toBe(201);
    const get = await req("/v2/mf/idx/manifests/multi");
    expect(get.headers.get("Content-Type")).toBe(INDEX);
    const missing = enc({ schemaVersion: 2, mediaType: INDEX, manifests: [{ mediaType: OCI, digest: await sha256(bytes(3)), size: 3 }] });
    await expectError(putManifest("mf/idx", "broken", missing, INDEX), 400, "MANIFEST_BLOB_UNKNOWN");
  });

  it("accepts Docker v2 schema 2 manifests and manifest lists", async () => {
    const cfg = await pushBlob("mf/docker", enc({ architecture: "amd64", os: "linux" }));
    const layer = await pushBlob("mf/docker", bytes(500, 9));
    const m = enc({
      schemaVersion: 2, mediaType: DOCKER,
      config: { mediaType: "application/vnd.docker.container.image.v1+json", size: 36, digest: cfg },
      layers: [{ mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", size: 500, digest: layer }],
    });
    expect((await putManifest("mf/docker", "v2", m, DOCKER)).status).toBe(201);
    const list = enc({ schemaVersion: 2, mediaType: LIST, manifests: [{ mediaType: DOCKER, size: m.length, digest: await sha256(m), platform: { architecture: "amd64", os: "linux" } }] });
    expect((await putManifest("mf/docker", "list", list, LIST)).status).toBe(201);
    expect((await req("/v2/mf/docker/manifests/list")).headers.get("Content-Type")).toBe(LIST);
  });

  it("refuses schema 1, malformed JSON and bad tags with useful messages", async () => {
    expect(await expectError(putManifest("mf/bad", "v1", enc({ schemaVersion: 1, fsLayers: [] }), "application/vnd.docker.distribution.manifest.v1+prettyjws"), 400, "MANIFEST_INVALID")).toMatch(/schema 1/i);
    await expectError(putManifest("mf/bad", "v1", new TextEncoder().encode("{nope")), 400, "MANIFEST_INVALID");
    await expectError(putManifest("mf/bad", "-bad-tag", enc({})), 400, "MANIFEST_INVALID");
    await expectError(putManifest("mf/bad", "v1", new Uint8Array(0)), 400, "MANIFEST_INVALID");
  });

  it("caps manifest size (413), accepting at least 4 MiB", async () => {
    const img = await makeImage("mf/big", { seed: 10 });
    const base = JSON.parse(new TextDecoder().decode(img.manifest));
    base.annotations = { pad: "x".repeat(4 * 1024 * 1024 + 100) };
    const big = enc(base);
    expect((await putManifest("mf/big", "four", big)).status).toBe(201);
    const res = await reqWith({ MAX_MANIFEST_BYTES: String(4 * 1024 * 1024) }, "/v2/mf/big/manifests/toolarge", { method: "PUT", headers: { "Content-Type": OCI }, body: big });
    expect(res.status).toBe(413);
    expect((await res.json() as { errors: { message: string }[] }).errors[0].message).toMatch(/limit/);
  });

  it("reads a manifest body without Content-Length (streamed) byte-exact, and caps it with 413 too", async () => {
    const img = await makeImage("mf/streamed", { seed: 15 });
    const res = await req("/v2/mf/streamed/manifests/v1", { method: "PUT", headers: { "Content-Type": OCI }, body: streamOf(img.manifest, 7), duplex: "half" } as RequestInit);
    expect(res.status).toBe(201);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
    expect(new Uint8Array(await (await req("/v2/mf/streamed/manifests/v1")).arrayBuffer())).toEqual(img.manifest);
    const base = JSON.parse(new TextDecoder().decode(img.manifest));
    base.annotations = { pad: "x".repeat(4 * 1024 * 1024) };
    const big = enc(base);
    const over = await reqWith({ MAX_MANIFEST_BYTES: String(4 * 1024 * 1024) }, "/v2/mf/streamed/manifests/v2", { method: "PUT", headers: { "Content-Type": OCI }, body: streamOf(big), duplex: "half" } as RequestInit);
    expect(over.status).toBe(413);
    await expectError(req("/v2/mf/streamed/manifests/v2"), 404, "MANIFEST_UNKNOWN");
  });

  it("answers a manifest PUT with a subject with OCI-Subject, even when the subject is absent", async () => {
    const img = await makeImage("mf/subj", { seed: 11 });
    const subject = { mediaType: OCI, digest: await sha256(bytes(77)), size: 77 };
    const withSubject = JSON.parse(new TextDecoder().decode(img.manifest));
    withSubject.subject = subject;
    const res = await putManifest("mf/subj", await sha256(enc(withSubject)), enc(withSubject));
    expect(res.status).toBe(201);
    expect(res.headers.get("OCI-Subject")).toBe(subject.digest);
  });

  it("404 MANIFEST_UNKNOWN for unknown tags and digests", async () => {
    await expectError(req("/v2/mf/a/manifests/nope"), 404, "MANIFEST_UNKNOWN");
    await expectError(req(`/v2/mf/a/manifests/sha256:${"1".repeat(64)}`), 404, "MANIFEST_UNKNOWN");
    await expectError(req(`/v2/mf/a/manifests/sha256:zz`), 400, "DIGEST_INVALID");
  });

  it("honours Accept: a client that only takes Docker manifests is not handed an OCI index", async () => {
    const a = await makeImage("mf/accept", { seed: 12 });
    expect((await putManifest("mf/accept", a.digest, a.manifest)).status).toBe(201);
    const index = enc({ schemaVersion: 2, mediaType: INDEX, manifests: [{ mediaType: OCI, digest: a.digest, size: a.manifest.length }] });
    expect((await putManifest("mf/accept", "idx", index, INDEX)).status).toBe(201);
    expect((await req("/v2/mf/accept/manifests/idx", { headers: { Accept: `${DOCKER}, ${LIST}` } })).status).toBe(404);
    expect((await req("/v2/mf/accept/manifests/idx", { headers: { Accept: `${DOCKER}, ${INDEX}` } })).status).toBe(200);
    expect((await req("/v2/mf/accept/manifests/idx", { headers: { Accept: "*/*" } })).status).toBe(200);
  });
});

describe("DELETE /v2/<name>/manifests/<reference>", () => {
  it("by tag removes only the tag; by digest removes the manifest and its tags", async () => {
    const img = await makeImage("mf/del", { seed: 13 });
    expect((await putManifest("mf/del", "t1", img.manifest)).status).toBe(201);
    expect((await putManifest("mf/del", "t2", img.manifest)).status).toBe(201);
    expect((await req("/v2/mf/del/manifests/t1", { method: "DELETE" })).status).toBe(202);
    await expectError(req("/v2/mf/del/manifests/t1"), 404, "MANIFEST_UNKNOWN");
    expect((await req(`/v2/mf/del/manifests/${img.digest}`)).status).toBe(200);
    expect((await req(`/v2/mf/del/manifests/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    await expectError(req("/v2/mf/del/manifests/t2"), 404, "MANIFEST_UNKNOWN");
    await expectError(req(`/v2/mf/del/manifests/${img.digest}`), 404, "MANIFEST_UNKNOWN");
    await expectError(req(`/v2/mf/del/manifests/${img.digest}`, { method: "DELETE" }), 404, "MANIFEST_UNKNOWN");
  });

  it("405 UNSUPPORTED when deletes are disabled", async () => {
    const img = await makeImage("mf/nodel", { seed: 14 });
    expect((await putManifest("mf/nodel", "t", img.manifest)).status).toBe(201);
    await expectError(reqWith({ DELETE_ENABLED: "false" }, "/v2/mf/nodel/manifests/t", { method: "DELETE" }), 405, "UNSUPPORTED");
  });
});
