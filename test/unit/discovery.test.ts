import { describe, expect, it } from "vitest";
import { bytes, expectError, makeImage, pushBlob, putManifest, req, sha256 } from "./helpers";

const OCI = "application/vnd.oci.image.manifest.v1+json";
const INDEX = "application/vnd.oci.image.index.v1+json";
const EMPTY = "application/vnd.oci.empty.v1+json";
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

async function tagged(repo: string, tags: string[]) {
  const img = await makeImage(repo, { seed: tags.length + repo.length });
  for (const t of tags) expect((await putManifest(repo, t, img.manifest)).status).toBe(201);
  return img;
}

/** An artifact manifest (empty config) that refers to `subject`. */
async function attach(repo: string, subject: { digest: string; size: number }, artifactType: string, annotations: Record<string, string> = {}) {
  const emptyDigest = await pushBlob(repo, new TextEncoder().encode("{}"));
  const payload = await pushBlob(repo, bytes(50, artifactType.length + Object.keys(annotations).length * 7 + (annotations.signer?.length ?? 0)));
  const m = enc({
    schemaVersion: 2, mediaType: OCI, artifactType,
    config: { mediaType: EMPTY, digest: emptyDigest, size: 2 },
    layers: [{ mediaType: "application/octet-stream", digest: payload, size: 50 }],
    subject: { mediaType: OCI, digest: subject.digest, size: subject.size },
    annotations,
  });
  const digest = await sha256(m);
  const res = await putManifest(repo, digest, m);
  expect(res.status).toBe(201);
  expect(res.headers.get("OCI-Subject")).toBe(subject.digest);
  return { digest, size: m.length };
}

describe("GET /v2/<name>/tags/list", () => {
  it("lists tags in case-insensitive lexical order", async () => {
    await tagged("ds/tags", ["b", "a", "c10", "c2", "Z", "B"]);
    const res = await req("/v2/ds/tags/tags/list");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ name: "ds/tags", tags: ["a", "B", "b", "c10", "c2", "Z"] });
    const page = await req("/v2/ds/tags/tags/list?n=2&last=B");
    expect((await page.json() as { tags: string[] }).tags).toEqual(["b", "c10"]);
    expect(res.headers.get("Link")).toBeNull();
  });

  it("paginates with n and last and a Link header", async () => {
    await tagged("ds/page", ["t1", "t2", "t3", "t4", "t5"]);
    const first = await req("/v2/ds/page/tags/list?n=2");
    expect((await first.json() as { tags: string[] }).tags).toEqual(["t1", "t2"]);
    const link = first.headers.get("Link")!;
    expect(link).toMatch(/^<\/v2\/ds\/page\/tags\/list\?n=2&last=t2>; rel="next"$/);
    const next = await req(link.slice(1, link.indexOf(">")));
    expect((await next.json() as { tags: string[] }).tags).toEqual(["t3", "t4"]);
    const rest = await req("/v2/ds/page/tags/list?n=10&last=t4");
    expect((await rest.json() as { tags: string[] }).tags).toEqual(["t5"]);
    expect(rest.headers.get("Link")).toBeNull();
    const zero = await req("/v2/ds/page/tags/list?n=0");
    expect((await zero.json() as { tags: string[] }).tags).toEqual([]);
    await expectError(req("/v2/ds/page/tags/list?n=-1"), 400, "UNSUPPORTED");
  });

  it("404 NAME_UNKNOWN for an unknown repository", async () => {
    await expectError(req("/v2/ds/nothing/tags/list"), 404, "NAME_UNKNOWN");
  });

  it("concurrent PUTs of one tag leave exactly one consistent winner", async () => {
    const imgs = await Promise.all([1, 2, 3, 4, 5, 6].map((s) => makeImage("ds/race", { seed: 100 + s })));
    const results = await Promise.all(imgs.map((i) => putManifest("ds/race", "latest", i.manifest)));
    for (const r of results) expect(r.status).toBe(201);
    const get = await req("/v2/ds/race/manifests/latest");
    const body = new Uint8Array(await get.arrayBuffer());
    const digest = get.headers.get("Docker-Content-Digest");
    expect(imgs.map((i) => i.digest)).toContain(digest);
    expect(await sha256(body)).toBe(digest);
    expect((await (await req("/v2/ds/race/tags/list")).json() as { tags: string[] }).tags).toEqual(["latest"]);
  });
});

describe("GET /v2/_catalog", () => {
  it("lists repositories sorted, with n/last pagination and Link", async () => {
    for (const r of ["cat/b", "cat/a", "cat/c"]) await pushBlob(r, bytes(10, r.length));
    const all = (await (await req("/v2/_catalog")).json() as { repositories: string[] }).repositories;
    const mine = all.filter((r) => r.startsWith("cat/"));
    expect(mine).toEqual(["cat/a", "cat/b", "cat/c"]);
    const page = await req("/v2/_catalog?n=1&last=cat/a");
    expect((await page.json() as { repositories: string[] }).repositories).toEqual(["cat/b"]);
    expect(page.headers.get("Link")).toBe('</v2/_catalog?n=1&last=cat%2Fb>; rel="next"');
  });
});

describe("GET /v2/<name>/referrers/<digest>", () => {
  it("returns an empty index for a digest with no referrers, 400 for an invalid digest", async () => {
    const res = await req(`/v2/rf/none/referrers/sha256:${"2".repeat(64)}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe(INDEX);
    expect(await res.json()).toEqual({ schemaVersion: 2, mediaType: INDEX, manifests: [] });
    await expectError(req(`/v2/rf/none/referrers/sha256:nope`), 400, "DIGEST_INVALID");
  });

  it("lists referrers with artifactType and annotations, filters, and drops deleted ones", async () => {
    const img = await tagged("rf/app", ["v1"]);
    const subject = { digest: img.digest, size: img.manifest.length };
    const sig = await attach("rf/app", subject, "application/vnd.dev.cosign.simplesigning.v1+json", { signer: "alice" });
    const sig2 = await attach("rf/app", subject, "application/vnd.dev.cosign.simplesigning.v1+json", { signer: "bob" });
    const sbom = await attach("rf/app", subject, "application/spdx+json", { kind: "sbom" });

    const all = await req(`/v2/rf/app/referrers/${img.digest}`);
    const idx = await all.json() as { manifests: { digest: string; artifactType: string; mediaType: string; size: number; annotations: Record<string, string> }[] };
    expect(idx.manifests.map((m) => m.digest).sort()).toEqual([sig.digest, sig2.digest, sbom.digest].sort());
    const s = idx.manifests.find((m) => m.digest === sig.digest)!;
    expect(s).toMatchObject({ mediaType: OCI, size: sig.size, artifactType: "application/vnd.dev.cosign.simplesigning.v1+json", annotations: { signer: "alice" } });
    expect(all.headers.get("OCI-Filters-Applied")).toBeNull();

    const filtered = await req(`/v2/rf/app/referrers/${img.digest}?artifactType=application/spdx%2Bjson`);
    expect(filtered.headers.get("OCI-Filters-Applied")).toBe("artifactType");
    expect((await filtered.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest)).toEqual([sbom.digest]);

    const bySigner = await req(`/v2/rf/app/referrers/${img.digest}?annotation=signer=bob`);
    expect(bySigner.headers.get("OCI-Filters-Applied")).toBe("annotation");
    expect((await bySigner.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest)).toEqual([sig2.digest]);

    expect((await req(`/v2/rf/app/manifests/${sig.digest}`, { method: "DELETE" })).status).toBe(202);
    const after = await (await req(`/v2/rf/app/referrers/${img.digest}`)).json() as { manifests: { digest: string }[] };
    expect(after.manifests.map((m) => m.digest)).not.toContain(sig.digest);
  });

  it("uses the config media type as artifactType when the manifest has none", async () => {
    const img = await tagged("rf/cfgtype", ["v1"]);
    const ref = await makeImage("rf/cfgtype", { seed: 77, extra: { subject: { mediaType: OCI, digest: img.digest, size: img.manifest.length } } });
    expect((await putManifest("rf/cfgtype", ref.digest, ref.manifest)).status).toBe(201);
    const idx = await (await req(`/v2/rf/cfgtype/referrers/${img.digest}`)).json() as { manifests: { artifactType: string }[] };
    expect(idx.manifests[0].artifactType).toBe("application/vnd.oci.image.config.v1+json");
  });

  it("accepts referrers before their subject exists and paginates long lists", async () => {
    const subject = { digest: await sha256(bytes(5, 999)), size: 5 };
    const made = [];
    for (let i = 0; i < 5; i++) made.push((await attach("rf/early", subject, `application/x.test${i}`)).digest);
    const page1 = await req(`/v2/rf/early/referrers/${subject.digest}?n=2`);
    const link = page1.headers.get("Link")!;
    expect(link).toContain('rel="next"');
    const got = (await page1.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest);
    let next: string | null = link;
    while (next) {
      const r = await req(next.slice(1, next.indexOf(">")));
      got.push(...(await r.json() as { manifests: { digest: string }[] }).manifests.map((m) => m.digest));
      next = r.headers.get("Link");
    }
    expect(got.sort()).toEqual(made.sort());
  });
});

describe("cross-repository mount", () => {
  it("mounts a blob from a repository that has it (201), else opens a session (202)", async () => {
    const digest = await pushBlob("mnt/src", bytes(200, 5));
    const res = await req(`/v2/mnt/dst/blobs/uploads/?mount=${digest}&from=mnt/src`, { method: "POST" });
    expect(res.status).toBe(201);
    expect(res.headers.get("Location")).toBe(`/v2/mnt/dst/blobs/${digest}`);
    expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
    expect((await req(`/v2/mnt/dst/blobs/${digest}`)).status).toBe(200);

    const missing = await sha256(bytes(3, 6));
    const fallback = await req(`/v2/mnt/dst/blobs/uploads/?mount=${missing}&from=mnt/src`, { method: "POST" });
    expect(fallback.status).toBe(202);
    expect(fallback.headers.get("Location")).toMatch(/\/v2\/mnt\/dst\/blobs\/uploads\//);

    // Without `from`: mounted from a repository the caller may pull (everything, in open mode).
    const noFrom = await req(`/v2/mnt/other/blobs/uploads/?mount=${digest}`, { method: "POST" });
    expect(noFrom.status).toBe(201);
    expect((await req(`/v2/mnt/other/blobs/${digest}`)).status).toBe(200);
    const nowhere = await req(`/v2/mnt/other/blobs/uploads/?mount=${missing}`, { method: "POST" });
    expect(nowhere.status).toBe(202);
    await expectError(req(`/v2/mnt/other/blobs/${missing}`), 404, "BLOB_UNKNOWN");
    await expectError(req(`/v2/mnt/dst/blobs/uploads/?mount=bad&from=mnt/src`, { method: "POST" }), 400, "DIGEST_INVALID");
  });
});
