// OCI Distribution Spec v1.1 — Content Management (spec §"Deleting tags", §"Deleting Manifests",
// §"Deleting Blobs": end-9, end-10). Mirrors the official 04_management_test.go workflow plus each
// MUST of the section, including the disabled-deletion answers (400 or 405).
import { beforeAll, describe, expect, it } from "vitest";
import { reqWith } from "../unit/helpers";
import {
  EMPTY_JSON, OCI_INDEX, OCI_MANIFEST, blobBytes, emptyDescriptor, expectSpecError, indent, postPut, pushImage, putManifestAs,
  req, sha256, uniq, type Image,
} from "./util";

const DUMMY_DIGEST = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
const DISABLED = { DELETE_ENABLED: "false" };

async function status(path: string, init: RequestInit = {}): Promise<number> {
  const res = await req(path, init);
  await res.body?.cancel();
  return res.status;
}

async function tagCount(repo: string): Promise<number> {
  const res = await req(`/v2/${repo}/tags/list`);
  expect(res.status).toBe(200);
  return ((await res.json()) as { tags: string[] | null }).tags?.length ?? 0;
}

describe("Content management workflow (suite 04_management_test.go; end-9, end-10)", () => {
  const REPO = `conformance/${uniq("manage")}`;
  let img: Image;
  let numTags: number;

  beforeAll(async () => {
    img = await pushImage(REPO, "management");
    expect((await putManifestAs(REPO, "tagtest0", img.manifest)).status).toBe(201);
    expect((await putManifestAs(REPO, "keep", img.manifest)).status).toBe(201);
    numTags = await tagCount(REPO);
    expect(numTags).toBe(2);
  });

  it("end-9 (tag): DELETE /v2/<name>/manifests/<tag> → 202 Accepted", async () => {
    const res = await req(`/v2/${REPO}/manifests/tagtest0`, { method: "DELETE" });
    expect(res.status).toBe(202);
    await res.body?.cancel();
  });

  it("end-9 (tag): once deleted, GET /v2/<name>/manifests/<tag> → 404", async () => {
    expect(await status(`/v2/${REPO}/manifests/tagtest0`)).toBe(404);
  });

  it("end-9 (digest): DELETE /v2/<name>/manifests/<digest> → 202 Accepted", async () => {
    const res = await req(`/v2/${REPO}/manifests/${img.digest}`, { method: "DELETE" });
    expect(res.status).toBe(202);
    await res.body?.cancel();
  });

  it("end-9 (digest): once deleted, GET by digest and by every tag that pointed at it → 404", async () => {
    expect(await status(`/v2/${REPO}/manifests/${img.digest}`)).toBe(404);
    expect(await status(`/v2/${REPO}/manifests/keep`)).toBe(404);
    expect(await status(`/v2/${REPO}/manifests/${img.digest}`, { method: "HEAD" })).toBe(404);
  });

  it("suite: GET tags list reflects the manifest deletion (fewer tags than before)", async () => {
    expect(await tagCount(REPO)).toBeLessThan(numTags);
    expect(await tagCount(REPO)).toBe(0);
  });

  it("end-9: DELETE of a manifest digest the repository does not hold → 404 (MANIFEST_UNKNOWN)", async () => {
    const res = await req(`/v2/${REPO}/manifests/${img.digest}`, { method: "DELETE" });
    expect(await expectSpecError(res, [404])).toBe("MANIFEST_UNKNOWN");
  });

  it("end-9: DELETE of a manifest in a repository that does not exist → 404", async () => {
    const res = await req(`/v2/conformance/${uniq("nothing")}/manifests/${DUMMY_DIGEST}`, { method: "DELETE" });
    await expectSpecError(res, [404]);
  });

  it("end-10: DELETE /v2/<name>/blobs/<digest> → 202 Accepted (config and layer)", async () => {
    for (const d of [img.configDigest, img.layerDigest]) {
      const res = await req(`/v2/${REPO}/blobs/${d}`, { method: "DELETE" });
      expect(res.status, d).toBe(202);
      await res.body?.cancel();
    }
  });

  it("end-10: GET/HEAD of a deleted blob → 404", async () => {
    expect(await status(`/v2/${REPO}/blobs/${img.configDigest}`)).toBe(404);
    expect(await status(`/v2/${REPO}/blobs/${img.layerDigest}`, { method: "HEAD" })).toBe(404);
  });

  it("end-10: DELETE of a blob that is not found → 404 (BLOB_UNKNOWN)", async () => {
    const again = await req(`/v2/${REPO}/blobs/${img.configDigest}`, { method: "DELETE" });
    expect(await expectSpecError(again, [404])).toBe("BLOB_UNKNOWN");
    const never = await req(`/v2/${REPO}/blobs/${DUMMY_DIGEST}`, { method: "DELETE" });
    expect(await expectSpecError(never, [404])).toBe("BLOB_UNKNOWN");
  });
});

describe("Deletion order the official suite uses in its teardowns", () => {
  it("end-10: deleting a blob still referenced by a live manifest → 202 (suite teardowns accept only 2xx/405 here)", async () => {
    const repo = `conformance/${uniq("blobfirst")}`;
    const img = await pushImage(repo, "blob-first");
    expect((await putManifestAs(repo, "v1", img.manifest)).status).toBe(201);
    for (const d of [img.configDigest, img.layerDigest]) {
      const res = await req(`/v2/${repo}/blobs/${d}`, { method: "DELETE" });
      expect(res.status === 405 || (res.status >= 200 && res.status < 300), `${d}: ${res.status}`).toBe(true);
      await res.body?.cancel();
    }
    const m = await req(`/v2/${repo}/manifests/${img.digest}`, { method: "DELETE" });
    expect(m.status === 405 || (m.status >= 200 && m.status < 300)).toBe(true);
    await m.body?.cancel();
  });

  it("end-9: deleting a manifest that an image index references → 2xx (suite push/discovery teardowns)", async () => {
    const repo = `conformance/${uniq("childfirst")}`;
    const img = await pushImage(repo, "child-first");
    expect((await putManifestAs(repo, img.digest, img.manifest)).status).toBe(201);
    const idx = indent({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, size: img.manifest.length, digest: img.digest }] });
    const idxDigest = await sha256(idx);
    expect((await putManifestAs(repo, "index", idx, OCI_INDEX)).status).toBe(201);
    const res = await req(`/v2/${repo}/manifests/${img.digest}`, { method: "DELETE" });
    expect(res.status).toBeGreaterThanOrEqual(200);
    expect(res.status).toBeLessThan(300);
    await res.body?.cancel();
    expect(await status(`/v2/${repo}/manifests/${idxDigest}`, { method: "DELETE" })).toBe(202);
  });

  it("end-9: deleting a manifest with a subject removes it from the referrers list", async () => {
    const repo = `conformance/${uniq("delref")}`;
    const img = await pushImage(repo, "del-ref");
    expect((await putManifestAs(repo, "v1", img.manifest)).status).toBe(201);
    await postPut(repo, EMPTY_JSON);
    const art = indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: "application/vnd.example.sig", config: emptyDescriptor, layers: [],
      subject: { mediaType: OCI_MANIFEST, size: img.manifest.length, digest: img.digest },
    });
    const artDigest = await sha256(art);
    expect((await putManifestAs(repo, artDigest, art)).status).toBe(201);
    const before = await req(`/v2/${repo}/referrers/${img.digest}`);
    expect(((await before.json()) as { manifests: { digest: string }[] }).manifests.map((d) => d.digest)).toEqual([artDigest]);
    expect(await status(`/v2/${repo}/manifests/${artDigest}`, { method: "DELETE" })).toBe(202);
    const after = await req(`/v2/${repo}/referrers/${img.digest}`);
    expect(after.status).toBe(200);
    expect(((await after.json()) as { manifests: unknown[] }).manifests).toEqual([]);
  });
});

describe("Deletion disabled (end-9/end-10 failure codes: 400 or 405)", () => {
  const REPO = `conformance/${uniq("nodelete")}`;
  let img: Image;

  beforeAll(async () => {
    img = await pushImage(REPO, "no-delete");
    expect((await putManifestAs(REPO, "v1", img.manifest)).status).toBe(201);
  });

  async function refused(path: string) {
    const res = await reqWith(DISABLED, path, { method: "DELETE" });
    const code = await expectSpecError(res, [400, 405]);
    // The suite requires UNSUPPORTED when a disabled tag delete answers 400.
    if (res.status === 400) expect(code).toBe("UNSUPPORTED");
  }

  it("end-9 (tag): tag deletion disabled → 400 (UNSUPPORTED) or 405 Method Not Allowed", async () => {
    await refused(`/v2/${REPO}/manifests/v1`);
  });

  it("end-9 (digest): manifest deletion disabled → 400 or 405", async () => {
    await refused(`/v2/${REPO}/manifests/${img.digest}`);
  });

  it("end-10: blob deletion disabled → 400 or 405", async () => {
    await refused(`/v2/${REPO}/blobs/${img.layerDigest}`);
  });

  it("end-9/end-10: refused deletes leave the content in place", async () => {
    expect(await status(`/v2/${REPO}/manifests/v1`)).toBe(200);
    expect(await status(`/v2/${REPO}/manifests/${img.digest}`)).toBe(200);
    const blob = await req(`/v2/${REPO}/blobs/${img.layerDigest}`);
    expect(blob.status).toBe(200);
    expect(await sha256(await blobBytes(blob))).toBe(img.layerDigest);
  });
});
