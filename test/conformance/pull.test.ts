// OCI Distribution Spec v1.1 — Pull workflow (spec §"Pull", end-1, end-2, end-3, §"Error Codes").
// Mirrors the official suite's 01_pull_test.go workflow, plus every MUST/SHOULD of the section.
import { beforeAll, describe, expect, it } from "vitest";
import {
  DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, LAYER, OCI_INDEX, OCI_MANIFEST, SUITE_ERROR_CODES, blobBytes, expectSpecError, indent, pushImage, putManifestAs,
  req, sha256, uniq, type Image,
} from "./util";

const REPO = `conformance/${uniq("pull")}`;
const TAG = "tagtest0";
const NONEXISTENT_MANIFEST = ".INVALID_MANIFEST_NAME"; // the official suite's "nonexistent" reference
const DUMMY_DIGEST = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"; // sha256("hello world")
let img: Image;

beforeAll(async () => {
  img = await pushImage(REPO, "pull-author");
  const res = await putManifestAs(REPO, TAG, img.manifest);
  expect(res.status).toBe(201);
});

describe("end-1: API version check", () => {
  it("end-1: GET /v2/ → 200 OK (registry implements the spec)", async () => {
    const res = await req("/v2/");
    expect(res.status).toBe(200);
  });

  it("end-1 (legacy Docker header): GET /v2/ carries Docker-Distribution-API-Version: registry/2.0", async () => {
    const res = await req("/v2/");
    expect(res.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
  });
});

describe("end-2: pulling blobs (GET/HEAD /v2/<name>/blobs/<digest>)", () => {
  it("end-2 HEAD: nonexistent blob → 404 Not Found", async () => {
    const res = await req(`/v2/${REPO}/blobs/${DUMMY_DIGEST}`, { method: "HEAD" });
    expect(res.status).toBe(404);
  });

  it("end-2 HEAD: existing blob → 200, Docker-Content-Digest = digest, Content-Length = size, no body", async () => {
    const res = await req(`/v2/${REPO}/blobs/${img.configDigest}`, { method: "HEAD" });
    expect(res.status).toBe(200);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.configDigest);
    expect(res.headers.get("Content-Length")).toBe(String(img.config.length));
    expect((await blobBytes(res)).length).toBe(0);
  });

  it("end-2 GET: nonexistent blob → 404 Not Found (BLOB_UNKNOWN error body)", async () => {
    const res = await req(`/v2/${REPO}/blobs/${DUMMY_DIGEST}`);
    expect(await expectSpecError(res, [404])).toBe("BLOB_UNKNOWN");
  });

  it("end-2 GET: existing blob → 200 with the expected bytes; Docker-Content-Digest MUST match the body", async () => {
    const res = await req(`/v2/${REPO}/blobs/${img.configDigest}`);
    expect(res.status).toBe(200);
    const body = await blobBytes(res);
    expect(await sha256(body)).toBe(img.configDigest);
    const dcd = res.headers.get("Docker-Content-Digest");
    expect(dcd).not.toBeNull(); // SHOULD be present
    expect(dcd).toBe(await sha256(body)); // if present MUST match the body
  });

  it("end-2: HEAD and GET of a blob agree on status, Content-Length and Docker-Content-Digest", async () => {
    const head = await req(`/v2/${REPO}/blobs/${img.layerDigest}`, { method: "HEAD" });
    const get = await req(`/v2/${REPO}/blobs/${img.layerDigest}`);
    expect(head.status).toBe(get.status);
    for (const h of ["Content-Length", "Docker-Content-Digest", "Content-Type"]) expect(head.headers.get(h)).toBe(get.headers.get(h));
    expect((await blobBytes(get)).length).toBe(Number(head.headers.get("Content-Length")));
  });

  it("end-2: a blob is not found through a repository that does not hold it → 404", async () => {
    const res = await req(`/v2/conformance/${uniq("other")}/blobs/${img.configDigest}`);
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it("end-2 Range (SHOULD, RFC 9110): GET with Range: bytes=10-19 → 206 with Content-Range and those bytes", async () => {
    const res = await req(`/v2/${REPO}/blobs/${img.configDigest}`, { headers: { Range: "bytes=10-19" } });
    expect(res.status).toBe(206);
    expect(res.headers.get("Content-Range")).toBe(`bytes 10-19/${img.config.length}`);
    const body = await blobBytes(res);
    expect(Array.from(body)).toEqual(Array.from(img.config.slice(10, 20)));
  });

  it("end-2 Range (SHOULD, RFC 9110): open-ended and suffix ranges resume a download", async () => {
    const n = img.config.length;
    const open = await req(`/v2/${REPO}/blobs/${img.configDigest}`, { headers: { Range: `bytes=${n - 5}-` } });
    expect(open.status).toBe(206);
    expect(Array.from(await blobBytes(open))).toEqual(Array.from(img.config.slice(n - 5)));
    const suffix = await req(`/v2/${REPO}/blobs/${img.configDigest}`, { headers: { Range: "bytes=-3" } });
    expect(suffix.status).toBe(206);
    expect(Array.from(await blobBytes(suffix))).toEqual(Array.from(img.config.slice(n - 3)));
  });

  it("end-2 Range (RFC 9110 §15.5.17): an unsatisfiable range → 416 with Content-Range: bytes */size", async () => {
    const res = await req(`/v2/${REPO}/blobs/${img.configDigest}`, { headers: { Range: `bytes=${img.config.length + 10}-` } });
    expect(res.status).toBe(416);
    expect(res.headers.get("Content-Range")).toBe(`bytes */${img.config.length}`);
    await res.body?.cancel();
  });
});

describe("end-3: pulling manifests (GET/HEAD /v2/<name>/manifests/<reference>)", () => {
  it("end-3 HEAD: nonexistent manifest (suite's reference \".INVALID_MANIFEST_NAME\") → 404", async () => {
    const res = await req(`/v2/${REPO}/manifests/${NONEXISTENT_MANIFEST}`, { method: "HEAD" });
    expect(res.status).toBe(404);
  });

  it("end-3 GET: nonexistent manifest (suite's reference \".INVALID_MANIFEST_NAME\") → 404", async () => {
    const res = await req(`/v2/${REPO}/manifests/${NONEXISTENT_MANIFEST}`);
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it("end-3 GET/HEAD: unknown tag and unknown digest → 404 Not Found (MANIFEST_UNKNOWN)", async () => {
    expect(await expectSpecError(await req(`/v2/${REPO}/manifests/no-such-tag`), [404])).toBe("MANIFEST_UNKNOWN");
    expect(await expectSpecError(await req(`/v2/${REPO}/manifests/${DUMMY_DIGEST}`), [404])).toBe("MANIFEST_UNKNOWN");
    expect((await req(`/v2/${REPO}/manifests/no-such-tag`, { method: "HEAD" })).status).toBe(404);
    expect((await req(`/v2/${REPO}/manifests/${DUMMY_DIGEST}`, { method: "HEAD" })).status).toBe(404);
  });

  it("end-3 HEAD (digest): → 200, Docker-Content-Digest = digest, Content-Length = size, no body", async () => {
    const res = await req(`/v2/${REPO}/manifests/${img.digest}`, { method: "HEAD", headers: { Accept: OCI_MANIFEST } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
    expect(res.headers.get("Content-Length")).toBe(String(img.manifest.length));
    expect((await blobBytes(res)).length).toBe(0);
  });

  it("end-3 HEAD (tag): → 200 with Docker-Content-Digest of the tagged manifest", async () => {
    const res = await req(`/v2/${REPO}/manifests/${TAG}`, { method: "HEAD", headers: { Accept: OCI_MANIFEST } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
  });

  it("end-3 GET (digest): → 200, the exact bytes pushed, Content-Type = pushed type without parameters, Docker-Content-Digest", async () => {
    const res = await req(`/v2/${REPO}/manifests/${img.digest}`, { headers: { Accept: OCI_MANIFEST } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe(OCI_MANIFEST);
    const body = await blobBytes(res);
    expect(await sha256(body)).toBe(img.digest);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
  });

  it("end-3 GET (tag): → 200 with the tagged manifest", async () => {
    const res = await req(`/v2/${REPO}/manifests/${TAG}`, { headers: { Accept: OCI_MANIFEST } });
    expect(res.status).toBe(200);
    expect(await sha256(await blobBytes(res))).toBe(img.digest);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
  });

  it("end-3: HEAD and GET of a manifest agree on status, Content-Type, Content-Length and Docker-Content-Digest", async () => {
    for (const ref of [TAG, img.digest]) {
      const head = await req(`/v2/${REPO}/manifests/${ref}`, { method: "HEAD", headers: { Accept: OCI_MANIFEST } });
      const get = await req(`/v2/${REPO}/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
      expect(head.status).toBe(200);
      expect(get.status).toBe(200);
      for (const h of ["Content-Type", "Content-Length", "Docker-Content-Digest"]) expect(head.headers.get(h)).toBe(get.headers.get(h));
      expect((await blobBytes(get)).length).toBe(Number(head.headers.get("Content-Length")));
    }
  });

  it("end-3: a manifest is not found through a repository that does not hold it → 404", async () => {
    const res = await req(`/v2/conformance/${uniq("other")}/manifests/${img.digest}`);
    expect(res.status).toBe(404);
    await res.body?.cancel();
  });

  it("end-3 Accept: without Accept, with */*, and with a weighted list naming the type → 200", async () => {
    for (const accept of [null, "*/*", `${DOCKER_MANIFEST}, ${OCI_MANIFEST};q=0.9, ${OCI_INDEX};q=0.5`]) {
      const res = await req(`/v2/${REPO}/manifests/${TAG}`, accept === null ? {} : { headers: { Accept: accept } });
      expect(res.status, `Accept: ${accept}`).toBe(200);
      expect(res.headers.get("Content-Type")).toBe(OCI_MANIFEST);
      await res.body?.cancel();
    }
  });

  it("end-3 Content-Type: SHOULD match what the client pushed (Docker v2s2 pushed → Docker v2s2 served)", async () => {
    const docker = await pushImage(REPO, "pull-docker");
    const body = indent({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: { mediaType: DOCKER_CONFIG, digest: docker.configDigest, size: docker.config.length },
      layers: [{ mediaType: DOCKER_LAYER, digest: docker.layerDigest, size: LAYER.length }],
    });
    const digest = await sha256(body);
    const put = await putManifestAs(REPO, "docker", body, DOCKER_MANIFEST);
    expect(put.status).toBe(201);
    const res = await req(`/v2/${REPO}/manifests/docker`, { headers: { Accept: `${DOCKER_MANIFEST}, ${OCI_MANIFEST}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toBe(DOCKER_MANIFEST);
    expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(await sha256(await blobBytes(res))).toBe(digest);
  });

  it("end-3 <reference>: a tag of exactly 128 characters ([a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}) is pullable", async () => {
    const tag = "T_" + "a.b-c".repeat(25) + "x";
    expect(tag.length).toBe(128);
    expect((await putManifestAs(REPO, tag, img.manifest)).status).toBe(201);
    const res = await req(`/v2/${REPO}/manifests/${tag}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("Docker-Content-Digest")).toBe(img.digest);
    await res.body?.cancel();
  });

  it("end-3 <name>: names using every separator of the grammar ('.', '_', '__', '-+', '/') push and pull", async () => {
    const name = `conformance/${uniq("a.b_c__d--e")}/f-g`;
    const i = await pushImage(name, "name-grammar");
    expect((await putManifestAs(name, "v1", i.manifest)).status).toBe(201);
    const res = await req(`/v2/${name}/manifests/v1`);
    expect(res.status).toBe(200);
    await res.body?.cancel();
  });
});

describe("Error codes (spec §Error Codes; suite 'Error codes')", () => {
  it("suite: PUT manifest at reference \"sha256:totallywrong\" with body \"blablabla\" → 400 (with a spec JSON error) or 404", async () => {
    const res = await putManifestAs(REPO, "sha256:totallywrong", new TextEncoder().encode("blablabla"));
    const text = await res.clone().text();
    expect([400, 404], text).toContain(res.status);
    if (res.status === 400) {
      const body = JSON.parse(text) as { errors: { code: string }[] };
      expect(body.errors.length).toBeGreaterThan(0);
      expect(SUITE_ERROR_CODES).toContain(body.errors[0].code);
    }
    await expectSpecError(res, [400, 404]);
  });

  it("§Error Codes: 4xx JSON bodies are {errors:[{code,message,detail}]} with code from the code-1…code-14 table", async () => {
    const cases: [string, RequestInit, number[]][] = [
      [`/v2/${REPO}/blobs/${DUMMY_DIGEST}`, {}, [404]],
      [`/v2/${REPO}/blobs/sha256:nothex`, {}, [400, 404]],
      [`/v2/${REPO}/manifests/nope`, {}, [404]],
      [`/v2/${REPO}/blobs/uploads/00000000-0000-4000-8000-000000000000`, {}, [404]],
      [`/v2/conformance/${uniq("none")}/tags/list`, {}, [404]],
      [`/v2/${REPO}/manifests/v9`, { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body: "{not json" }, [400]],
    ];
    for (const [path, init, statuses] of cases) await expectSpecError(await req(path, init), statuses);
  });

  it("§Error Codes: an invalid tags-list page size (n=-1) answered as 4xx JSON uses a spec error code", async () => {
    const res = await req(`/v2/${REPO}/tags/list?n=-1`);
    if (res.status === 200) {
      await res.body?.cancel();
      return; // ignoring a bad n is allowed; a JSON 4xx must use a spec code
    }
    await expectSpecError(res, [400]);
  });
});

describe("Teardown (suite order: manifest, then blobs)", () => {
  it("suite teardown: DELETE the manifest, then its config and layer blobs → 2xx (or 405 if disabled)", async () => {
    for (const path of [`/v2/${REPO}/manifests/${img.digest}`, `/v2/${REPO}/blobs/${img.configDigest}`, `/v2/${REPO}/blobs/${img.layerDigest}`]) {
      const res = await req(path, { method: "DELETE" });
      expect(res.status === 405 || (res.status >= 200 && res.status < 300), `${path}: ${res.status}`).toBe(true);
      await res.body?.cancel();
    }
  });
});
