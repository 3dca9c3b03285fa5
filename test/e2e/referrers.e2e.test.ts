// Referrers end to end: an image pushed with skopeo, a signature-like artifact (empty config,
// a payload blob, `subject` = the image) attached with curl, then discovered through the
// referrers API with and without filters, and removed with the artifact's manifest.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { Skopeo, needClients, run } from "./helpers/exec";
import { sha256 } from "./helpers/http";
import { buildLayout, type Layout } from "./helpers/images";

const OCI = "application/vnd.oci.image.manifest.v1+json";
const SIG = "application/vnd.dev.cosign.simplesigning.v1+json";
const SBOM = "application/spdx+json";
const REPO = "e2e/signed";
let reg: RunningRegistry;
let skopeo: Skopeo;
let work: string;
let layout: Layout;
const clients = needClients("referrers.e2e", ["skopeo", "umoci", "curl"]);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-referrers-"));
  const [r, l] = await Promise.all([startRegistry(), buildLayout(join(work, "layout"), work)]);
  reg = r;
  layout = l;
  skopeo = new Skopeo(reg);
});

afterAll(async () => {
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

let n = 0;
/** curl against the registry; returns status, headers (lower-cased) and body. */
async function curl(method: string, path: string, opts: { file?: string; contentType?: string } = {}) {
  const out = join(work, `body-${++n}`);
  const hdr = join(work, `hdr-${n}`);
  const args = ["-sk", "-H", "Expect:", "-X", method, "-o", out, "-D", hdr, "-w", "%{http_code}"];
  if (opts.file) args.push("--data-binary", `@${opts.file}`);
  if (opts.contentType) args.push("-H", `Content-Type: ${opts.contentType}`);
  args.push(new URL(path, reg.url).toString());
  const r = await run("curl", args);
  const { readFileSync } = await import("node:fs");
  const headers: Record<string, string> = {};
  for (const line of readFileSync(hdr, "utf8").split("\r\n")) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: Number(r.stdout.trim()), headers, body: readFileSync(out) };
}

function file(name: string, data: string | Buffer) {
  const p = join(work, name);
  writeFileSync(p, data);
  return p;
}

async function pushBlob(data: string | Buffer): Promise<{ digest: string; size: number }> {
  const digest = `sha256:${sha256(data)}`;
  const r = await curl("POST", `/v2/${REPO}/blobs/uploads/?digest=${digest}`, { file: file(`blob-${++n}`, data), contentType: "application/octet-stream" });
  expect(r.status, r.body.toString()).toBe(201);
  return { digest, size: Buffer.byteLength(data) };
}

/** Attach an artifact to `subject` with curl; returns its manifest digest. */
async function attach(subject: { digest: string; size: number }, artifactType: string, payload: string, annotations: Record<string, string>) {
  const empty = await pushBlob("{}");
  const blob = await pushBlob(payload);
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: OCI, artifactType,
    config: { mediaType: "application/vnd.oci.empty.v1+json", digest: empty.digest, size: empty.size },
    layers: [{ mediaType: "application/octet-stream", digest: blob.digest, size: blob.size }],
    subject: { mediaType: OCI, digest: subject.digest, size: subject.size },
    annotations,
  });
  const digest = `sha256:${sha256(manifest)}`;
  const r = await curl("PUT", `/v2/${REPO}/manifests/${digest}`, { file: file(`m-${++n}.json`, manifest), contentType: OCI });
  expect(r.status, r.body.toString()).toBe(201);
  expect(r.headers["oci-subject"]).toBe(subject.digest);
  return digest;
}

describe.skipIf(clients.skip)("referrers API with real clients", () => {
  test("a signature attached with curl is listed for an image pushed with skopeo, with and without filters", async () => {
    const img = layout.images.amd64;
    await skopeo.run("copy", ["--preserve-digests", `oci:${layout.dir}:${img.tag}`, skopeo.ref(`${REPO}:v1`)]);
    const subject = { digest: img.manifestDigest, size: img.manifestBytes.length };

    const empty = await curl("GET", `/v2/${REPO}/referrers/${subject.digest}`);
    expect(empty.status).toBe(200);
    expect(JSON.parse(empty.body.toString()).manifests).toEqual([]);

    const sigAlice = await attach(subject, SIG, '{"critical":{"identity":"alice"}}', { "dev.cloister.signer": "alice" });
    const sigBob = await attach(subject, SIG, '{"critical":{"identity":"bob"}}', { "dev.cloister.signer": "bob" });
    const sbom = await attach(subject, SBOM, '{"spdxVersion":"SPDX-2.3"}', { "org.opencontainers.image.description": "sbom" });

    const all = await curl("GET", `/v2/${REPO}/referrers/${subject.digest}`);
    expect(all.status).toBe(200);
    expect(all.headers["content-type"]).toBe("application/vnd.oci.image.index.v1+json");
    const idx = JSON.parse(all.body.toString());
    expect(idx.mediaType).toBe("application/vnd.oci.image.index.v1+json");
    expect(idx.manifests.map((m: { digest: string }) => m.digest).sort()).toEqual([sigAlice, sigBob, sbom].sort());
    const alice = idx.manifests.find((m: { digest: string }) => m.digest === sigAlice);
    expect(alice).toMatchObject({ mediaType: OCI, artifactType: SIG, annotations: { "dev.cloister.signer": "alice" } });

    const sigs = await curl("GET", `/v2/${REPO}/referrers/${subject.digest}?artifactType=${encodeURIComponent(SIG)}`);
    expect(sigs.headers["oci-filters-applied"]).toBe("artifactType");
    expect(JSON.parse(sigs.body.toString()).manifests.map((m: { digest: string }) => m.digest).sort()).toEqual([sigAlice, sigBob].sort());

    const trusted = await curl("GET", `/v2/${REPO}/referrers/${subject.digest}?artifactType=${encodeURIComponent(SIG)}&annotation=dev.cloister.signer=bob`);
    expect(trusted.headers["oci-filters-applied"]).toBe("artifactType,annotation");
    expect(JSON.parse(trusted.body.toString()).manifests.map((m: { digest: string }) => m.digest)).toEqual([sigBob]);

    // The artifact itself is a normal manifest: skopeo reads it, and deleting it drops the referrer.
    const raw = await skopeo.run("inspect", ["--raw", skopeo.ref(`${REPO}@${sigBob}`)]);
    expect(`sha256:${sha256(raw.stdout)}`).toBe(sigBob);
    expect((await curl("DELETE", `/v2/${REPO}/manifests/${sigBob}`)).status).toBe(202);
    const after = JSON.parse((await curl("GET", `/v2/${REPO}/referrers/${subject.digest}`)).body.toString());
    expect(after.manifests.map((m: { digest: string }) => m.digest).sort()).toEqual([sigAlice, sbom].sort());
  });
});
