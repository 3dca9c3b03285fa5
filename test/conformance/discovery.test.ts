// OCI Distribution Spec v1.1 — Content Discovery (spec §"Listing Tags" end-8a/end-8b, §"Listing
// Referrers" end-12a/end-12b). Mirrors the official 03_discovery_test.go workflow (tags n/last,
// referrers with/without filter, unknown subject, dangling subject) plus each MUST/SHOULD.
import { beforeAll, describe, expect, it } from "vitest";
import {
  EMPTY_JSON, LAYER, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST, b64, blobBytes, configBlob, emptyDescriptor,
  expectSpecError, indent, parseLink, postPut, putManifestAs, req, sha256, te, uniq,
} from "./util";

const DUMMY_DIGEST = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
const ANN = "org.opencontainers.conformance.test";
const TYPE_A = "application/vnd.nhl.peanut.butter.bagel";
const TYPE_B = "application/vnd.nba.strawberry.jam.croissant";
const TYPE_INDEX = "application/vnd.food.stand";

interface Desc { mediaType: string; digest: string; size: number; artifactType?: string; annotations?: Record<string, string> }
interface IndexBody { schemaVersion: number; mediaType: string; manifests: Desc[] }

async function tagsOf(path: string): Promise<{ res: Response; body: { name: string; tags: string[] } }> {
  const res = await req(path);
  expect(res.status, path).toBe(200);
  return { res, body: (await res.json()) as { name: string; tags: string[] } };
}

async function referrers(path: string): Promise<{ res: Response; index: IndexBody }> {
  const res = await req(path);
  expect(res.status, path).toBe(200);
  expect(res.headers.get("Content-Type")).toBe(OCI_INDEX);
  return { res, index: (await res.json()) as IndexBody };
}

describe("end-8a/end-8b: listing tags", () => {
  const REPO = `conformance/${uniq("tags")}`;
  const TAGS = ["test0", "test1", "test2", "test3"];
  let manifest: Uint8Array;

  beforeAll(async () => {
    const config = configBlob("discovery-tags");
    const { digest: cfg } = await postPut(REPO, config);
    const { digest: layer } = await postPut(REPO, LAYER);
    manifest = indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: cfg, size: config.length, data: b64(config) },
      layers: [{ mediaType: OCI_LAYER_GZIP, digest: layer, size: LAYER.length }],
    });
    for (const t of [...TAGS].reverse()) expect((await putManifestAs(REPO, t, manifest)).status).toBe(201);
  });

  it("end-8a: GET /v2/<name>/tags/list → 200 with JSON {name, tags} in lexical order", async () => {
    const { res, body } = await tagsOf(`/v2/${REPO}/tags/list`);
    expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
    expect(body).toEqual({ name: REPO, tags: TAGS });
  });

  it("end-8b: ?n=<int> → exactly n results when more tags exist (fewer only with a Link header)", async () => {
    const { res, body } = await tagsOf(`/v2/${REPO}/tags/list?n=2`);
    expect(body.tags).toEqual(["test0", "test1"]);
    const next = parseLink(res.headers.get("Link")); // MAY be present; if so RFC 5988 rel="next"
    if (next) {
      const { body: page2 } = await tagsOf(next);
      expect(page2.tags).toEqual(["test2", "test3"]);
    }
  });

  it("end-8b: ?n=<int>&last=<tag> → up to n tags after <tag>, <tag> itself excluded", async () => {
    const { body } = await tagsOf(`/v2/${REPO}/tags/list?n=2&last=test1`);
    expect(body.tags).toEqual(["test2", "test3"]);
    const { body: one } = await tagsOf(`/v2/${REPO}/tags/list?n=1&last=test0`);
    expect(one.tags).toEqual(["test1"]);
  });

  it("end-8b: ?last=<tag> without n (n is OPTIONAL) → the tags after <tag>", async () => {
    const { body } = await tagsOf(`/v2/${REPO}/tags/list?last=test1`);
    expect(body.tags).toEqual(["test2", "test3"]);
  });

  it("end-8b: ?n=0 → an empty list and no Link header", async () => {
    const { res, body } = await tagsOf(`/v2/${REPO}/tags/list?n=0`);
    expect(body.tags).toEqual([]);
    expect(res.headers.get("Link")).toBeNull();
  });

  it("end-8b: n larger than the number of tags → all tags, no Link header", async () => {
    const { res, body } = await tagsOf(`/v2/${REPO}/tags/list?n=100`);
    expect(body.tags).toEqual(TAGS);
    expect(res.headers.get("Link")).toBeNull();
  });

  it("end-8b: following Link rel=\"next\" from n=1 visits every tag once, in order", async () => {
    const seen: string[] = [];
    let path: string | null = `/v2/${REPO}/tags/list?n=1`;
    for (let i = 0; path && i < 10; i++) {
      const { res, body } = await tagsOf(path);
      expect(body.tags.length).toBeLessThanOrEqual(1);
      seen.push(...body.tags);
      path = parseLink(res.headers.get("Link"));
    }
    expect(seen).toEqual(TAGS);
  });

  it("suite: 'GET start of tag is set by last' — n=numTags/2 then last=<last of page> → 200, ≤ n tags", async () => {
    const half = TAGS.length / 2;
    const { body: first } = await tagsOf(`/v2/${REPO}/tags/list?n=${half}`);
    expect(first.tags.length).toBe(half);
    const { body: second } = await tagsOf(`/v2/${REPO}/tags/list?n=${half}&last=${first.tags[half - 1]}`);
    expect(second.tags.length).toBeLessThanOrEqual(half);
    expect(second.tags).not.toContain(first.tags[half - 1]);
  });

  it("end-8a: tags MUST be in lexical order, i.e. case-insensitive alphanumeric order", async () => {
    const repo = `conformance/${uniq("tagcase")}`;
    const config = configBlob("tag-case");
    const { digest: cfg } = await postPut(repo, config);
    const m = indent({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: OCI_CONFIG, digest: cfg, size: config.length }, layers: [] });
    for (const t of ["beta", "Alpha", "gamma", "Delta"]) expect((await putManifestAs(repo, t, m)).status).toBe(201);
    const { body } = await tagsOf(`/v2/${repo}/tags/list`);
    expect(body.tags).toEqual(["Alpha", "beta", "Delta", "gamma"]);
  });

  it("end-8a: a repository that exists but has no tags → 200 with an empty tags list", async () => {
    const repo = `conformance/${uniq("notags")}`;
    await postPut(repo, te.encode("only a blob"));
    const { body } = await tagsOf(`/v2/${repo}/tags/list`);
    expect(body.name).toBe(repo);
    expect(body.tags ?? []).toEqual([]);
  });

  it("end-8a: an unknown repository → 404 (NAME_UNKNOWN)", async () => {
    const res = await req(`/v2/conformance/${uniq("missing")}/tags/list`);
    expect(await expectSpecError(res, [404])).toBe("NAME_UNKNOWN");
  });
});

describe("end-12a/end-12b: listing referrers", () => {
  const REPO = `conformance/${uniq("referrers")}`;
  const refBlobA = te.encode("NHL Peanut Butter on my NHL bagel");
  const refBlobB = te.encode("NBA Strawberry Jam on my NBA croissant");
  let subject: Uint8Array, subjectDigest: string, missingSubjectDigest: string;
  const refs: Record<string, { body: Uint8Array; digest: string; mediaType: string; artifactType?: string; annotation: string }> = {};

  async function pushRef(key: string, body: Uint8Array, mediaType: string, artifactType: string | undefined, annotation: string, subj: string) {
    const digest = await sha256(body);
    const res = await putManifestAs(REPO, digest, body, mediaType);
    expect(res.status, key).toBeGreaterThanOrEqual(200);
    expect(res.status, key).toBeLessThan(300);
    expect(res.headers.get("OCI-Subject"), `${key}: OCI-Subject`).toBe(subj);
    refs[key] = { body, digest, mediaType, artifactType, annotation };
  }

  beforeAll(async () => {
    await postPut(REPO, EMPTY_JSON);
    const { digest: aDigest } = await postPut(REPO, refBlobA);
    const config = configBlob("discovery-subject");
    const { digest: cfg } = await postPut(REPO, config);
    const { digest: layer } = await postPut(REPO, LAYER);
    subject = indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: cfg, size: config.length, data: b64(config) },
      layers: [{ mediaType: OCI_LAYER_GZIP, digest: layer, size: LAYER.length }],
    });
    subjectDigest = await sha256(subject);
    const subj = { mediaType: OCI_MANIFEST, size: subject.length, digest: subjectDigest };

    // Referrers pushed BEFORE their subject exists (the suite's order).
    await pushRef("aConfig", indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: TYPE_A, size: refBlobA.length, digest: aDigest }, subject: subj, layers: [emptyDescriptor],
      annotations: { [ANN]: "test config a" },
    }), OCI_MANIFEST, TYPE_A, "test config a", subjectDigest);
    await pushRef("aLayer", indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: TYPE_A, config: emptyDescriptor, subject: subj,
      layers: [{ mediaType: TYPE_A, size: refBlobA.length, digest: aDigest }], annotations: { [ANN]: "test layer a" },
    }), OCI_MANIFEST, TYPE_A, "test layer a", subjectDigest);

    // The subject, then referrers pushed after it.
    expect((await putManifestAs(REPO, "tagtest0", subject)).status).toBe(201);
    const { digest: bDigest } = await postPut(REPO, refBlobB);
    await pushRef("bConfig", indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST,
      config: { mediaType: TYPE_B, size: refBlobB.length, digest: bDigest }, subject: subj, layers: [emptyDescriptor],
      annotations: { [ANN]: "test config b" },
    }), OCI_MANIFEST, TYPE_B, "test config b", subjectDigest);
    await pushRef("bLayer", indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: TYPE_B, config: emptyDescriptor, subject: subj,
      layers: [{ mediaType: TYPE_B, size: refBlobB.length, digest: bDigest }], annotations: { [ANN]: "test layer b" },
    }), OCI_MANIFEST, TYPE_B, "test layer b", subjectDigest);
    await pushRef("index", indent({
      schemaVersion: 2, mediaType: OCI_INDEX, artifactType: TYPE_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, size: subject.length, digest: subjectDigest }],
      subject: subj, annotations: { [ANN]: "test index" },
    }), OCI_INDEX, TYPE_INDEX, "test index", subjectDigest);

    // A referrer to a subject that is never pushed (dangling).
    const never = indent({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: emptyDescriptor, layers: [], annotations: { n: "never" } });
    missingSubjectDigest = await sha256(never);
    await pushRef("cLayer", indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: TYPE_B, config: emptyDescriptor,
      subject: { mediaType: OCI_MANIFEST, size: never.length, digest: missingSubjectDigest },
      layers: [{ mediaType: TYPE_B, size: refBlobB.length, digest: bDigest }],
    }), OCI_MANIFEST, TYPE_B, "", missingSubjectDigest);
  });

  it("end-12a: a digest with no referrers → 200, Content-Type index, an empty manifests list (never 404)", async () => {
    const { res, index } = await referrers(`/v2/${REPO}/referrers/${DUMMY_DIGEST}`);
    expect(index.schemaVersion).toBe(2);
    expect(index.mediaType).toBe(OCI_INDEX);
    expect(index.manifests).toEqual([]);
    expect(res.headers.get("OCI-Filters-Applied")).toBeNull();
  });

  it("end-12a: referrers of an unknown repository → 200 with an empty list (registry supporting the API MUST NOT 404)", async () => {
    const { index } = await referrers(`/v2/conformance/${uniq("norepo")}/referrers/${DUMMY_DIGEST}`);
    expect(index.manifests).toEqual([]);
  });

  it("end-12a: referrers of the subject → 200, an image index of every manifest/index whose subject is <digest>", async () => {
    const { res, index } = await referrers(`/v2/${REPO}/referrers/${subjectDigest}`);
    expect(index.schemaVersion).toBe(2);
    expect(index.mediaType).toBe(OCI_INDEX);
    expect(res.headers.get("OCI-Filters-Applied")).toBeNull();
    const want = ["aConfig", "aLayer", "bConfig", "bLayer", "index"].map((k) => refs[k].digest).sort();
    expect(index.manifests.map((d) => d.digest).sort()).toEqual(want);
    expect(new Set(index.manifests.map((d) => d.digest)).size).toBe(index.manifests.length);
  });

  it("end-12a: each descriptor has mediaType, size, digest, artifactType (manifest's, else config.mediaType) and the manifest's annotations", async () => {
    const { index } = await referrers(`/v2/${REPO}/referrers/${subjectDigest}`);
    for (const d of index.manifests) {
      const ref = Object.values(refs).find((r) => r.digest === d.digest)!;
      expect(ref, d.digest).toBeDefined();
      expect(d.mediaType).toBe(ref.mediaType);
      expect(d.size).toBe(ref.body.length);
      expect(d.artifactType).toBe(ref.artifactType);
      expect(d.annotations).toEqual({ [ANN]: ref.annotation });
    }
  });

  it("end-12b: ?artifactType= filter → only matching descriptors and OCI-Filters-Applied: artifactType", async () => {
    const { res, index } = await referrers(`/v2/${REPO}/referrers/${subjectDigest}?artifactType=${encodeURIComponent(TYPE_A)}`);
    expect(res.headers.get("OCI-Filters-Applied")).toBe("artifactType");
    expect(index.manifests.map((d) => d.digest).sort()).toEqual([refs.aConfig.digest, refs.aLayer.digest].sort());
    for (const d of index.manifests) expect(d.artifactType).toBe(TYPE_A);
  });

  it("end-12b: a filter that matches nothing → 200, empty list, OCI-Filters-Applied: artifactType", async () => {
    const { res, index } = await referrers(`/v2/${REPO}/referrers/${subjectDigest}?artifactType=application/vnd.none`);
    expect(res.headers.get("OCI-Filters-Applied")).toBe("artifactType");
    expect(index.manifests).toEqual([]);
  });

  it("end-12a: a referrer whose subject was never pushed is listed under that subject", async () => {
    const { index } = await referrers(`/v2/${REPO}/referrers/${missingSubjectDigest}`);
    expect(index.manifests.map((d) => d.digest)).toEqual([refs.cLayer.digest]);
    expect(index.manifests[0].artifactType).toBe(TYPE_B);
  });

  it("end-12a: an image index referrer without artifactType has artifactType omitted", async () => {
    const idx = indent({
      schemaVersion: 2, mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, size: subject.length, digest: subjectDigest }],
      subject: { mediaType: OCI_MANIFEST, size: subject.length, digest: refs.aLayer.digest },
    });
    const digest = await sha256(idx);
    expect((await putManifestAs(REPO, digest, idx, OCI_INDEX)).status).toBe(201);
    const { index } = await referrers(`/v2/${REPO}/referrers/${refs.aLayer.digest}`);
    expect(index.manifests.length).toBe(1);
    expect(index.manifests[0].digest).toBe(digest);
    expect("artifactType" in index.manifests[0]).toBe(false);
  });

  it("end-12a: an invalid <digest> → 400 Bad Request", async () => {
    for (const bad of ["sha256:nothex", "notadigest", `sha256:${"a".repeat(63)}`]) {
      const res = await req(`/v2/${REPO}/referrers/${bad}`);
      await expectSpecError(res, [400]);
    }
  });

  it("end-12a: descriptors are only of manifests in the same repository", async () => {
    const other = `conformance/${uniq("refother")}`;
    await postPut(other, EMPTY_JSON);
    const m = indent({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: TYPE_A, config: emptyDescriptor, layers: [],
      subject: { mediaType: OCI_MANIFEST, size: subject.length, digest: subjectDigest },
    });
    const res = await putManifestAs(other, await sha256(m), m);
    expect(res.status).toBe(201);
    const { index } = await referrers(`/v2/${REPO}/referrers/${subjectDigest}`);
    expect(index.manifests.map((d) => d.digest)).not.toContain(await sha256(m));
    const { index: there } = await referrers(`/v2/${other}/referrers/${subjectDigest}`);
    expect(there.manifests.map((d) => d.digest)).toEqual([await sha256(m)]);
  });

  it("end-12a: when the list is paginated a Link header (RFC 5988, rel=\"next\") leads to the rest; the pages union to the full list", async () => {
    const seen: string[] = [];
    let path: string | null = `/v2/${REPO}/referrers/${subjectDigest}?n=2`;
    let pages = 0;
    for (; path && pages < 10; pages++) {
      const { res, index } = await referrers(path);
      seen.push(...index.manifests.map((d) => d.digest));
      path = parseLink(res.headers.get("Link"));
    }
    expect(seen.sort()).toEqual(["aConfig", "aLayer", "bConfig", "bLayer", "index"].map((k) => refs[k].digest).sort());
    expect(pages).toBeGreaterThan(1); // n is honoured → the 5 referrers span several pages
  });

  it("end-12b: pagination keeps the artifactType filter on every page", async () => {
    const seen: string[] = [];
    let path: string | null = `/v2/${REPO}/referrers/${subjectDigest}?n=1&artifactType=${encodeURIComponent(TYPE_B)}`;
    for (let i = 0; path && i < 10; i++) {
      const { res, index } = await referrers(path);
      expect(res.headers.get("OCI-Filters-Applied")).toBe("artifactType");
      seen.push(...index.manifests.map((d) => d.digest));
      path = parseLink(res.headers.get("Link"));
    }
    expect(seen.sort()).toEqual([refs.bConfig.digest, refs.bLayer.digest].sort());
  });

  it("§Enabling the Referrers API: a deleted referrer no longer appears in the list", async () => {
    const del = await req(`/v2/${REPO}/manifests/${refs.bLayer.digest}`, { method: "DELETE" });
    expect(del.status).toBe(202);
    const { index } = await referrers(`/v2/${REPO}/referrers/${subjectDigest}`);
    expect(index.manifests.map((d) => d.digest)).not.toContain(refs.bLayer.digest);
    expect(index.manifests.length).toBe(4);
  });

  it("suite teardown: DELETE every manifest and blob of the workflow → 2xx/404/405", async () => {
    const paths = [
      ...Object.values(refs).map((r) => `/v2/${REPO}/manifests/${r.digest}`),
      `/v2/${REPO}/manifests/${subjectDigest}`, `/v2/${REPO}/manifests/tagtest0`,
      `/v2/${REPO}/blobs/${await sha256(refBlobA)}`, `/v2/${REPO}/blobs/${await sha256(refBlobB)}`,
      `/v2/${REPO}/blobs/${await sha256(EMPTY_JSON)}`,
    ];
    for (const p of paths) {
      const res = await req(p, { method: "DELETE" });
      expect(res.status === 404 || res.status === 405 || (res.status >= 200 && res.status < 300), `${p}: ${res.status}`).toBe(true);
      await res.body?.cancel();
    }
  });

  it("end-12a: an empty referrers list is serialized as a JSON array (manifests: []), not null", async () => {
    const res = await req(`/v2/${REPO}/referrers/${DUMMY_DIGEST}`);
    const text = new TextDecoder().decode(await blobBytes(res));
    expect(Array.isArray((JSON.parse(text) as IndexBody).manifests)).toBe(true);
  });
});
