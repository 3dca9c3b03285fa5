// Adversarial tenant-boundary suite (issue "Tenant boundary", ARCHITECTURE.md rule 4, ADR-0029).
//
// Storage is content-addressed and shared, but a blob or manifest pushed into one repository must
// be invisible through every other repository: the same status, the same headers (minus the
// inherently per-request ones in PER_REQUEST_HEADERS) and the same body bytes as a digest that
// exists nowhere. Repositories a caller may not read must look exactly like repositories that do
// not exist.
//
// Method: most probes are taken twice with the SAME request — once before the content exists
// anywhere ("exists nowhere", case b) and once after it was pushed into ANOTHER repository or by
// another tenant ("exists elsewhere", case a) — and the two responses must be byte-identical, with
// no normalisation beyond the per-request header allowlist. Where two different digests or names
// have to be compared, the varying value is substituted by a placeholder first. The member case
// (c) is asserted to differ where that is meaningful.
//
// Latency: "in the same work" (same store round-trips) cannot be measured reliably in a unit test;
// here we assert same status/headers/body only. Timing equality is covered by the bench
// (npm run bench), not by this file.
//
// Content is random per test (crypto.getRandomValues) and names carry a random prefix, so nothing
// here can collide with content or repositories of other tests.
import { env } from "cloudflare:workers";
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { BASE, req, reqWith, sha256 } from "./helpers";
import type { TrustStore } from "../../src/stores/trust-store";
import { trustStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";

// ---- clients ----------------------------------------------------------------------------------

type Client = (path: string, init?: RequestInit) => Promise<Response>;

/** Open mode: the deployed Worker entry (the test pool runs with AUTH_MODE=open from .dev.vars). */
const open: Client = (path, init = {}) => req(path, init);

const ADMIN_PW = "boundary-admin-password";
const TOKEN_VARS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW };
const basic = (u: string, p: string) => `Basic ${btoa(`${u}:${p}`)}`;

/** Token mode with fixed Authorization (null = anonymous). */
function tokenClient(authorization: string | null): Client {
  return (path, init = {}) => {
    const headers = new Headers(init.headers);
    if (authorization !== null) headers.set("Authorization", authorization);
    return reqWith(TOKEN_VARS, path, { ...init, headers });
  };
}
const admin = tokenClient(basic("admin", ADMIN_PW));
const anonymous = tokenClient(null);

async function createUser(name: string): Promise<Client> {
  const password = `${name}-long-password`;
  const r = await admin("/admin/users", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name, password }) });
  expect(r.status, await r.clone().text()).toBe(201);
  return tokenClient(basic(name, password));
}

async function addPolicy(rule: Record<string, unknown>) {
  const r = await admin("/admin/policies", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) });
  expect(r.status, await r.clone().text()).toBe(201);
}

/** Two fresh users sharing a random prefix: alice = `${p}a`, bob = `${p}b`. */
async function tenants() {
  const p = uid();
  const aliceName = `${p}a`;
  const bobName = `${p}b`;
  return { p, aliceName, bobName, alice: await createUser(aliceName), bob: await createUser(bobName) };
}

// ---- content ----------------------------------------------------------------------------------

const uid = () => "t" + crypto.randomUUID().replace(/-/g, "").slice(0, 12);

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  crypto.getRandomValues(b);
  return b;
}

/** A random digest that names nothing anywhere. */
async function nowhere(): Promise<string> {
  return sha256(randomBytes(64));
}

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const EMPTY_JSON = new TextEncoder().encode("{}");

interface Image {
  cfg: Uint8Array;
  layers: Uint8Array[];
  manifest: Uint8Array;
  config: string;
  layerDigests: string[];
  digest: string;
}

/** A random image (config + layers + manifest), not pushed anywhere yet. */
async function buildImage(opts: { layers?: number; subject?: { digest: string; size: number }; artifactType?: string; annotations?: Record<string, string> } = {}): Promise<Image> {
  const cfg = enc({ architecture: "amd64", os: "linux", nonce: uid() });
  const layers = Array.from({ length: opts.layers ?? 2 }, (_, i) => randomBytes(500 + i * 37));
  const config = await sha256(cfg);
  const layerDigests = await Promise.all(layers.map((l) => sha256(l)));
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: cfg.length },
    layers: layers.map((l, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigests[i], size: l.length })),
  };
  if (opts.subject) m.subject = { mediaType: OCI_MANIFEST, digest: opts.subject.digest, size: opts.subject.size };
  if (opts.artifactType) m.artifactType = opts.artifactType;
  if (opts.annotations) m.annotations = opts.annotations;
  const manifest = enc(m);
  return { cfg, layers, manifest, config, layerDigests, digest: await sha256(manifest) };
}

/** A referrer artifact (empty config, no layers) for `subject`. */
async function buildReferrer(subject: { digest: string; size: number }, artifactType: string, annotations: Record<string, string>) {
  const m = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: "application/vnd.oci.empty.v1+json", digest: await sha256(EMPTY_JSON), size: 2 },
    layers: [],
    subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.size },
    annotations,
  };
  const manifest = enc(m);
  return { manifest, digest: await sha256(manifest) };
}

async function pushBlob(client: Client, repo: string, data: Uint8Array): Promise<string> {
  const digest = await sha256(data);
  const r = await client(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: "POST", body: data, headers: { "Content-Type": "application/octet-stream" } });
  if (r.status !== 201) throw new Error(`push blob to ${repo}: ${r.status} ${await r.text()}`);
  return digest;
}

function putManifest(client: Client, repo: string, ref: string, body: Uint8Array, contentType = OCI_MANIFEST) {
  return client(`/v2/${repo}/manifests/${ref}`, { method: "PUT", headers: { "Content-Type": contentType }, body });
}

async function pushImage(client: Client, repo: string, img: Image, ref: string = img.digest) {
  await pushBlob(client, repo, img.cfg);
  for (const l of img.layers) await pushBlob(client, repo, l);
  const r = await putManifest(client, repo, ref, img.manifest);
  if (r.status !== 201) throw new Error(`push manifest to ${repo}: ${r.status} ${await r.text()}`);
}

async function pushReferrer(client: Client, repo: string, ref: { manifest: Uint8Array; digest: string }) {
  await pushBlob(client, repo, EMPTY_JSON);
  const r = await putManifest(client, repo, ref.digest, ref.manifest);
  if (r.status !== 201) throw new Error(`push referrer to ${repo}: ${r.status} ${await r.text()}`);
}

// ---- response snapshots -----------------------------------------------------------------------

/**
 * Headers that are inherently per request and excluded from comparisons. Everything else
 * (Content-Type, Content-Length, WWW-Authenticate, Link, Location, Range, ETag, …) is compared.
 */
const PER_REQUEST_HEADERS = [/^date$/, /^cf-/, /^x-request-id$/, /^request-id$/, /^server-timing$/];

interface Snap {
  status: number;
  headers: [string, string][];
  /** Body text when it is short UTF-8, otherwise its length and SHA-256 (never a byte diff). */
  body: string;
}

// Upload ids: UUIDs, or signed, stateless ids <uuid>.<expiry>.<mac> (docs/adr/0013).
const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:\.[0-9a-f]{8}\.[0-9a-f]{32})?/g;

async function snap(res: Response, subst: Record<string, string> = {}, opts: { uuids?: boolean } = {}): Promise<Snap> {
  const buf = new Uint8Array(await res.arrayBuffer());
  const sub = (s: string) => {
    for (const [from, to] of Object.entries(subst)) s = s.split(from).join(to);
    if (opts.uuids) s = s.replace(UUID_RE, "<UUID>");
    // The request id in error details (docs/audit.md) is per request, like X-Request-Id above.
    return s.replace(/"requestId":"[^"]*"/g, '"requestId":"<per-request>"');
  };
  let body: string;
  try {
    const text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(buf);
    body = buf.length <= 65536 ? sub(text) : `<${buf.length} bytes ${await sha256(buf)}>`;
  } catch {
    body = `<${buf.length} bytes ${await sha256(buf)}>`;
  }
  const headers = [...res.headers]
    .map(([k, v]) => [k.toLowerCase(), sub(v)] as [string, string])
    .filter(([k]) => !PER_REQUEST_HEADERS.some((r) => r.test(k)))
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : 1));
  return { status: res.status, headers, body };
}

type Probe = [label: string, run: () => Promise<Response>];

async function snapAll(probes: Probe[], subst: Record<string, string> = {}, opts: { uuids?: boolean } = {}): Promise<Record<string, Snap>> {
  const out: Record<string, Snap> = {};
  for (const [label, run] of probes) out[label] = await snap(await run(), subst, opts);
  return out;
}

/** Assert each probe's "elsewhere" snapshot equals its "nowhere" snapshot, naming the probe on failure. */
function expectSame(elsewhere: Record<string, Snap>, nowhereSnap: Record<string, Snap>) {
  for (const label of Object.keys(nowhereSnap)) {
    expect(elsewhere[label], `probe "${label}": response differs between "exists elsewhere" and "exists nowhere"`).toEqual(nowhereSnap[label]);
  }
}

// ---- probe sets -------------------------------------------------------------------------------

/** Every read of a blob through `repo`, with and without ranges and conditionals. */
function blobReads(client: Client, repo: string, digest: string): Probe[] {
  const p = `/v2/${repo}/blobs/${digest}`;
  const probes: Probe[] = [
    ["GET", () => client(p)],
    ["HEAD", () => client(p, { method: "HEAD" })],
    ["GET Range 0-3", () => client(p, { headers: { Range: "bytes=0-3" } })],
    ["GET Range 10-", () => client(p, { headers: { Range: "bytes=10-" } })],
    ["GET Range suffix -5", () => client(p, { headers: { Range: "bytes=-5" } })],
    ["GET Range unsatisfiable 100000000-", () => client(p, { headers: { Range: "bytes=100000000-" } })],
    ["GET Range unsatisfiable 5-2", () => client(p, { headers: { Range: "bytes=5-2" } })],
    ["GET Range unsatisfiable -0", () => client(p, { headers: { Range: "bytes=-0" } })],
    ["GET Range multi", () => client(p, { headers: { Range: "bytes=0-1,4-5" } })],
    ["HEAD Range 0-3", () => client(p, { method: "HEAD", headers: { Range: "bytes=0-3" } })],
    ["HEAD Range unsatisfiable", () => client(p, { method: "HEAD", headers: { Range: "bytes=100000000-" } })],
    ["GET If-None-Match etag", () => client(p, { headers: { "If-None-Match": `"${digest}"` } })],
    ["GET If-None-Match *", () => client(p, { headers: { "If-None-Match": "*" } })],
  ];
  return probes;
}

/** Every read of a manifest through `repo`, by digest and by tag, and through the blobs route. */
function manifestReads(client: Client, repo: string, digest: string, tag: string): Probe[] {
  const m = `/v2/${repo}/manifests/`;
  return [
    ["GET by digest", () => client(m + digest)],
    ["HEAD by digest", () => client(m + digest, { method: "HEAD" })],
    ["GET by digest, Accept OCI", () => client(m + digest, { headers: { Accept: OCI_MANIFEST } })],
    ["GET by digest, Accept index only", () => client(m + digest, { headers: { Accept: OCI_INDEX } })],
    ["GET by tag", () => client(m + tag)],
    ["HEAD by tag", () => client(m + tag, { method: "HEAD" })],
    ["GET by tag, Accept index only", () => client(m + tag, { headers: { Accept: OCI_INDEX } })],
    ["GET manifest via blobs route", () => client(`/v2/${repo}/blobs/${digest}`)],
    ["HEAD manifest via blobs route", () => client(`/v2/${repo}/blobs/${digest}`, { method: "HEAD" })],
    ["GET manifest via blobs route, Range", () => client(`/v2/${repo}/blobs/${digest}`, { headers: { Range: "bytes=0-9" } })],
  ];
}

function referrerReads(client: Client, repo: string, subject: string, artifactType: string, ann: [string, string]): Probe[] {
  const r = `/v2/${repo}/referrers/${subject}`;
  const at = encodeURIComponent(artifactType);
  const an = encodeURIComponent(`${ann[0]}=${ann[1]}`);
  return [
    ["referrers", () => client(r)],
    ["referrers HEAD", () => client(r, { method: "HEAD" })],
    ["referrers artifactType", () => client(`${r}?artifactType=${at}`)],
    ["referrers annotation", () => client(`${r}?annotation=${an}`)],
    ["referrers artifactType+annotation", () => client(`${r}?artifactType=${at}&annotation=${an}`)],
    ["referrers other artifactType", () => client(`${r}?artifactType=${encodeURIComponent("application/vnd.other")}`)],
    ["referrers n=1", () => client(`${r}?n=1`)],
  ];
}

/** Every route of `repo` a reader or writer could use to learn about it. */
function repoRoutes(client: Client, repo: string, digest: string, tag: string): Probe[] {
  return [
    ...blobReads(client, repo, digest).slice(0, 4),
    ...manifestReads(client, repo, digest, tag).slice(0, 6),
    ["tags/list", () => client(`/v2/${repo}/tags/list`)],
    ["tags/list HEAD", () => client(`/v2/${repo}/tags/list`, { method: "HEAD" })],
    ["tags/list n=1", () => client(`/v2/${repo}/tags/list?n=1`)],
    ["referrers", () => client(`/v2/${repo}/referrers/${digest}`)],
    ["DELETE blob", () => client(`/v2/${repo}/blobs/${digest}`, { method: "DELETE" })],
    ["DELETE manifest", () => client(`/v2/${repo}/manifests/${digest}`, { method: "DELETE" })],
    ["DELETE tag", () => client(`/v2/${repo}/manifests/${tag}`, { method: "DELETE" })],
    ["POST upload", () => client(`/v2/${repo}/blobs/uploads/`, { method: "POST" })],
    ["POST mount", () => client(`/v2/${repo}/blobs/uploads/?mount=${digest}&from=${repo}`, { method: "POST" })],
    ["PUT manifest", () => putManifest(client, repo, tag, enc({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), OCI_INDEX)],
    ["GET upload", () => client(`/v2/${repo}/blobs/uploads/${crypto.randomUUID()}`)],
  ];
}

async function tagsOf(client: Client, repo: string) {
  return client(`/v2/${repo}/tags/list`);
}

// ===============================================================================================

describe("blobs: a digest that is a member elsewhere reads like one that exists nowhere", () => {
  for (const targetExists of [false, true]) {
    it(`HEAD/GET with and without Range, If-None-Match (target repository ${targetExists ? "exists" : "does not exist"})`, async () => {
      const p = uid();
      const A = `${p}/a`;
      const B = `${p}/b`;
      const data = randomBytes(3000);
      const d = await sha256(data);
      if (targetExists) await pushBlob(open, B, randomBytes(100));

      const before = await snapAll(blobReads(open, B, d));
      await pushBlob(open, A, data);
      const after = await snapAll(blobReads(open, B, d));
      expectSame(after, before);
      for (const s of Object.values(after)) {
        expect(s.status).toBe(404);
        expect(s.headers.map(([k]) => k)).not.toContain("content-range");
      }

      // (b') a second, different digest that exists nowhere gives the same answer once the digest is normalised
      const other = await nowhere();
      expectSame(await snapAll(blobReads(open, B, d), { [d]: "<D>" }), await snapAll(blobReads(open, B, other), { [other]: "<D>" }));

      // (c) the member repository does answer, with sizes
      const member = await snapAll(blobReads(open, A, d));
      expect(member["GET"].status).toBe(200);
      expect(member["GET Range 0-3"].status).toBe(206);
      expect(member["GET Range suffix -5"].status).toBe(206);
      expect(member["GET Range unsatisfiable 100000000-"].status).toBe(416);
      expect(member["GET If-None-Match etag"].status).toBe(304);
      expect(member["HEAD"].headers).toContainEqual(["content-length", "3000"]);
    });
  }

  it("a blob in another repository is not readable in a third one with the same bytes pushed later elsewhere (no caching of a miss or a hit)", async () => {
    const p = uid();
    const data = randomBytes(1200);
    const d = await sha256(data);
    const before = await snapAll(blobReads(open, `${p}/c`, d));
    await pushBlob(open, `${p}/a`, data);
    await open(`/v2/${p}/a/blobs/${d}`).then((r) => r.arrayBuffer());
    await pushBlob(open, `${p}/b`, data);
    expectSame(await snapAll(blobReads(open, `${p}/c`, d)), before);
  });
});

describe("manifests: by digest and by tag", () => {
  for (const targetExists of [false, true]) {
    it(`HEAD/GET by digest, by tag and via the blobs route (target repository ${targetExists ? "exists" : "does not exist"})`, async () => {
      const p = uid();
      const A = `${p}/a`;
      const B = `${p}/b`;
      const img = await buildImage();
      if (targetExists) await pushImage(open, B, await buildImage(), "other");

      const probes = () => [
        ...manifestReads(open, B, img.digest, "v1"),
        ...blobReads(open, B, img.config).map(([l, r]) => [`config: ${l}`, r] as Probe),
        ...blobReads(open, B, img.layerDigests[0]).map(([l, r]) => [`layer: ${l}`, r] as Probe),
      ];
      const before = await snapAll(probes());
      await pushImage(open, A, img, "v1");
      const after = await snapAll(probes());
      expectSame(after, before);
      for (const [label, s] of Object.entries(after)) expect(s.status, label).toBe(404);

      // (c) member
      const member = await snapAll(manifestReads(open, A, img.digest, "v1"));
      expect(member["GET by digest"].status).toBe(200);
      expect(member["GET by tag"].status).toBe(200);
      expect(member["GET by digest"].body).toBe(new TextDecoder().decode(img.manifest));
    });
  }

  it("a tag name used in another repository resolves to nothing here, even when this repository has that digest", async () => {
    const p = uid();
    const img = await buildImage();
    await pushImage(open, `${p}/b`, img, img.digest); // B holds the manifest, untagged
    const probes = () => manifestReads(open, `${p}/b`, img.digest, "release").filter(([l]) => l.includes("tag"));
    const before = await snapAll(probes());
    await pushImage(open, `${p}/a`, img, "release");
    expectSame(await snapAll(probes()), before);
  });
});

describe("referrers", () => {
  const AT = "application/vnd.example.signature";
  const ANN: [string, string] = ["org.example.signer", "alice"];

  it("a subject with referrers only in another repository lists nothing (with and without filters)", async () => {
    const p = uid();
    const A = `${p}/a`;
    const B = `${p}/b`;
    const subject = await buildImage();
    const s = { digest: subject.digest, size: subject.manifest.length };
    const ref = await buildReferrer(s, AT, { [ANN[0]]: ANN[1] });
    await pushImage(open, A, subject);

    const before = await snapAll(referrerReads(open, B, subject.digest, AT, ANN));
    await pushReferrer(open, A, ref);
    const after = await snapAll(referrerReads(open, B, subject.digest, AT, ANN));
    expectSame(after, before);

    // (c) the member repository lists it
    const member = await open(`/v2/${A}/referrers/${subject.digest}?artifactType=${encodeURIComponent(AT)}`);
    expect(((await member.json()) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest)).toEqual([ref.digest]);
  });

  it("this repository holds the subject too, but the referrer only exists in another one", async () => {
    const p = uid();
    const A = `${p}/a`;
    const B = `${p}/b`;
    const subject = await buildImage();
    const s = { digest: subject.digest, size: subject.manifest.length };
    const ref = await buildReferrer(s, AT, { [ANN[0]]: ANN[1] });
    await pushImage(open, A, subject);
    await pushImage(open, B, subject);

    const before = await snapAll(referrerReads(open, B, subject.digest, AT, ANN));
    await pushReferrer(open, A, ref);
    const after = await snapAll(referrerReads(open, B, subject.digest, AT, ANN));
    expectSame(after, before);
    // and the referrer itself is not readable in B
    expect((await open(`/v2/${B}/manifests/${ref.digest}`)).status).toBe(404);
  });

  it("pushing a referrer whose subject exists only in another repository answers as if the subject existed nowhere", async () => {
    const p = uid();
    const subject = await buildImage();
    const s = { digest: subject.digest, size: subject.manifest.length };
    const ref = await buildReferrer(s, AT, { [ANN[0]]: ANN[1] });
    await pushBlob(open, `${p}/b`, EMPTY_JSON);
    const push = () => putManifest(open, `${p}/b`, ref.digest, ref.manifest);
    const before = await snap(await push());
    await pushImage(open, `${p}/a`, subject);
    expect(await snap(await push())).toEqual(before);
    expect(before.status).toBe(201);
    // the subject did not become readable in B by being referred to
    expect((await open(`/v2/${p}/b/manifests/${subject.digest}`)).status).toBe(404);
  });
});

describe("token mode: repositories the caller may not read look like repositories that do not exist", () => {
  it("every route of alice's repository, probed by bob, anonymous and a bob token, before and after it exists", async () => {
    const { aliceName, bobName, alice, bob } = await tenants();
    const secret = `${aliceName}/secret`;
    const img = await buildImage();
    const bobToken = await tokenFor(bob, `repository:${secret}:pull,push,delete`);
    const probesFor = (client: Client) => repoRoutes(client, secret, img.digest, "v1");
    const clients: [string, Client][] = [["bob basic", bob], ["anonymous", anonymous], ["bob bearer", tokenClient(`Bearer ${bobToken}`)]];

    const before: Record<string, Record<string, Snap>> = {};
    for (const [who, cl] of clients) before[who] = await snapAll(probesFor(cl), {}, { uuids: true });
    await pushImage(alice, secret, img, "v1");
    await pushBlob(alice, secret, randomBytes(10));
    for (const [who, cl] of clients) {
      const after = await snapAll(probesFor(cl), {}, { uuids: true });
      for (const label of Object.keys(before[who])) {
        expect(after[label], `${who}: ${label}`).toEqual(before[who][label]);
        expect(after[label].status, `${who}: ${label}`).toBe(401);
      }
    }
    // (c) alice reads it
    expect((await alice(`/v2/${secret}/manifests/v1`)).status).toBe(200);
    expect((await alice(`/v2/${secret}/tags/list`)).status).toBe(200);
    // bob's own namespace is unaffected
    expect((await bob(`/v2/${bobName}/x/tags/list`)).status).toBe(404);
  });

  it("an existing repository of alice and a nonexistent one answer bob identically, once the name is normalised", async () => {
    const { aliceName, alice, bob } = await tenants();
    const img = await buildImage();
    await pushImage(alice, `${aliceName}/exists`, img, "v1");
    const a = await snapAll(repoRoutes(bob, `${aliceName}/exists`, img.digest, "v1"), { [`${aliceName}/exists`]: "<NAME>" }, { uuids: true });
    const b = await snapAll(repoRoutes(bob, `${aliceName}/nosuch`, img.digest, "v1"), { [`${aliceName}/nosuch`]: "<NAME>" }, { uuids: true });
    expectSame(a, b);
  });

  it("a token request for alice's repository grants bob the same (nothing) whether or not it exists", async () => {
    const { aliceName, alice, bob } = await tenants();
    const scope = `repository:${aliceName}/secret:pull,push,delete`;
    const before = accessOf(await tokenFor(bob, scope));
    await pushImage(alice, `${aliceName}/secret`, await buildImage(), "v1");
    expect(accessOf(await tokenFor(bob, scope))).toEqual(before);
    expect(before).toEqual([{ type: "repository", name: `${aliceName}/secret`, actions: [] }]);
  });

  it("the catalog lists only pullable repositories, and its pages and Link headers say nothing about hidden ones", async () => {
    const { p, aliceName, bobName, alice, bob } = await tenants();
    await pushBlob(bob, `${bobName}/own`, randomBytes(20));

    const walk = async () => {
      const pages: Snap[] = [];
      let path = `/v2/_catalog?n=1&last=${p}`;
      for (let i = 0; i < 4 && path; i++) {
        const r = await bob(path);
        const link = r.headers.get("Link");
        pages.push(await snap(r));
        const m = link ? /^<([^>]+)>/.exec(link) : null;
        path = m ? m[1] : "";
      }
      return pages;
    };
    const fullBefore = await snap(await bob("/v2/_catalog"));
    const pagesBefore = await walk();

    await pushBlob(alice, `${aliceName}/hidden`, randomBytes(20));
    await pushImage(alice, `${aliceName}/hidden2`, await buildImage(), "v1");

    const fullAfter = await snap(await bob("/v2/_catalog"));
    const pagesAfter = await walk();
    expect(fullAfter).toEqual(fullBefore);
    expect(JSON.parse(fullAfter.body).repositories).toContain(`${bobName}/own`);
    // Paginated walk from just before these names, n=1: must not change when hidden repositories appear
    // (no extra short/empty pages, no Link naming them).
    expect(pagesAfter, "bob's paginated catalog changed when alice created repositories he may not pull").toEqual(pagesBefore);
    for (const s of [fullAfter, ...pagesAfter]) {
      expect(JSON.stringify(s), "catalog response mentions a repository bob may not pull").not.toContain(aliceName);
    }
    // (c) alice sees hers
    const mine = (await (await alice("/v2/_catalog")).json()) as { repositories: string[] };
    expect(mine.repositories).toEqual(expect.arrayContaining([`${aliceName}/hidden`, `${aliceName}/hidden2`]));
    expect(mine.repositories).not.toContain(`${bobName}/own`);
  });
});

async function tokenFor(client: Client, scope: string): Promise<string> {
  const r = await client(`/token?service=registry.test&scope=${encodeURIComponent(scope)}`);
  expect(r.status, await r.clone().text()).toBe(200);
  return ((await r.json()) as { token: string }).token;
}

function accessOf(jwt: string): unknown {
  const payload = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return (JSON.parse(atob(payload + "=".repeat((4 - (payload.length % 4)) % 4))) as { access: unknown }).access;
}

describe("cross-repository mount", () => {
  it("token mode: mount from a repository bob may not pull, one without the blob, or one that does not exist → the same 202 session, and nothing readable", async () => {
    const { aliceName, bobName, alice, bob } = await tenants();
    const data = randomBytes(700);
    const d = await sha256(data);
    const target = `${bobName}/x`;
    await pushBlob(bob, `${bobName}/other`, randomBytes(30));
    const mounts = (): Probe[] => [
      ["from alice's repository", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}&from=${aliceName}/secret`, { method: "POST" })],
      ["from alice's nonexistent repository", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}&from=${aliceName}/nosuch`, { method: "POST" })],
      ["from bob's repository without it", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}&from=${bobName}/other`, { method: "POST" })],
      ["from bob's nonexistent repository", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}&from=${bobName}/nosuch`, { method: "POST" })],
      ["from an invalid name", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}&from=${aliceName.toUpperCase()}/Secret`, { method: "POST" })],
      ["from the target itself", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}&from=${target}`, { method: "POST" })],
      ["without from", () => bob(`/v2/${target}/blobs/uploads/?mount=${d}`, { method: "POST" })],
    ];
    const before = await snapAll(mounts(), {}, { uuids: true });
    await pushBlob(alice, `${aliceName}/secret`, data);
    const after = await snapAll(mounts(), {}, { uuids: true });
    expectSame(after, before);
    const first = Object.values(after)[0];
    expect(first.status).toBe(202);
    for (const [label, s] of Object.entries(after)) expect(s, label).toEqual(first);
    for (const [label, s] of Object.entries(await snapAll(blobReads(bob, target, d)))) expect(s.status, label).toBe(404);
    // (c) alice may mount between her own repositories
    expect((await alice(`/v2/${aliceName}/y/blobs/uploads/?mount=${d}&from=${aliceName}/secret`, { method: "POST" })).status).toBe(201);
    expect((await alice(`/v2/${aliceName}/y/blobs/${d}`)).status).toBe(200);
  });

  it("open mode: mount from a repository that does not hold the digest (or holds it only as a manifest), or does not exist → 202 and nothing readable", async () => {
    const p = uid();
    const data = randomBytes(400);
    const d = await sha256(data);
    await pushBlob(open, `${p}/holder`, data);
    await pushBlob(open, `${p}/other`, randomBytes(10));
    for (const from of [`${p}/other`, `${p}/nosuch`]) {
      const r = await open(`/v2/${p}/x/blobs/uploads/?mount=${d}&from=${from}`, { method: "POST" });
      expect(r.status, `from=${from}`).toBe(202);
      expect((await open(`/v2/${p}/x/blobs/${d}`)).status, `from=${from}`).toBe(404);
    }
    // a manifest is not mountable as a blob from a repository that holds it only as a manifest
    const img = await buildImage();
    await pushImage(open, `${p}/mholder`, img);
    const r = await open(`/v2/${p}/y/blobs/uploads/?mount=${img.digest}&from=${p}/mholder`, { method: "POST" });
    expect(r.status).toBe(202);
    expect((await open(`/v2/${p}/y/blobs/${img.digest}`)).status).toBe(404);
    expect((await open(`/v2/${p}/y/manifests/${img.digest}`)).status).toBe(404);
  });

  it("token mode: automatic mount (no from) only draws on repositories the caller may pull", async () => {
    const { p, aliceName, bobName, alice, bob } = await tenants();
    await addPolicy({ id: `${p}-public`, effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: [`${p}pub/**`] });
    const privateData = randomBytes(333);
    const pd = await sha256(privateData);
    const mount = (digest: string, target: string) => bob(`/v2/${target}/blobs/uploads/?mount=${digest}`, { method: "POST" });
    const before = await snap(await mount(pd, `${bobName}/t1`), {}, { uuids: true });
    // many private holders, so a candidate limit cannot hide a difference
    for (let i = 0; i < 3; i++) await pushBlob(alice, `${aliceName}/priv${i}`, privateData);
    expect(await snap(await mount(pd, `${bobName}/t1`), {}, { uuids: true })).toEqual(before);
    expect(before.status).toBe(202);
    expect((await bob(`/v2/${bobName}/t1/blobs/${pd}`)).status).toBe(404);
    // (c) a public holder may serve as a source; the answer names only the target
    await pushBlob(admin, `${p}pub/lib`, privateData);
    const r = await mount(pd, `${bobName}/t2`);
    expect(r.status).toBe(201);
    expect(r.headers.get("Location")).toBe(`/v2/${bobName}/t2/blobs/${pd}`);
    expect((await bob(`/v2/${bobName}/t2/blobs/${pd}`)).status).toBe(200);
  });
});

describe("grafting: a manifest cannot adopt content that is only in another repository", () => {
  it("image manifest referencing config/layers of another repository → 400 MANIFEST_BLOB_UNKNOWN, nothing readable, repository not created", async () => {
    const p = uid();
    const A = `${p}/a`;
    const B = `${p}/b`;
    const img = await buildImage();
    const push = () => putManifest(open, B, "v1", img.manifest);
    const before = await snap(await push());
    await pushImage(open, A, img, "v1");
    const after = await snap(await push());
    expect(after).toEqual(before);
    expect(after.status).toBe(400);
    expect(JSON.parse(after.body).errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
    // by digest too
    const byDigest = await open(`/v2/${B}/manifests/${img.digest}`, { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body: img.manifest });
    expect(byDigest.status).toBe(400);

    const reads = [
      ...manifestReads(open, B, img.digest, "v1"),
      ...blobReads(open, B, img.config).slice(0, 2),
      ...blobReads(open, B, img.layerDigests[1]).slice(0, 2),
    ];
    for (const [label, s] of Object.entries(await snapAll(reads))) expect(s.status, label).toBe(404);
    expect((await tagsOf(open, B)).status).toBe(404);
    const cat = (await (await open(`/v2/_catalog?last=${p}/`)).json()) as { repositories: string[] };
    expect(cat.repositories).not.toContain(B);
  });

  it("partially present: only the missing layer is named, and nothing of the rest becomes readable", async () => {
    const p = uid();
    const img = await buildImage({ layers: 3 });
    await pushImage(open, `${p}/a`, img);
    await pushBlob(open, `${p}/b`, img.cfg);
    await pushBlob(open, `${p}/b`, img.layers[0]);
    const r = await putManifest(open, `${p}/b`, "v1", img.manifest);
    expect(r.status).toBe(400);
    const e = ((await r.json()) as { errors: { code: string; detail: { missingBlobs: string[] } }[] }).errors[0];
    expect(e.code).toBe("MANIFEST_BLOB_UNKNOWN");
    expect(e.detail.missingBlobs.sort()).toEqual([img.layerDigests[1], img.layerDigests[2]].sort());
    expect((await open(`/v2/${p}/b/blobs/${img.layerDigests[2]}`)).status).toBe(404);
    expect((await open(`/v2/${p}/b/manifests/${img.digest}`)).status).toBe(404);
  });

  it("index referencing child manifests of another repository → 400 MANIFEST_BLOB_UNKNOWN, children not readable", async () => {
    const p = uid();
    const child = await buildImage();
    const index = enc({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: child.digest, size: child.manifest.length }] });
    const push = () => putManifest(open, `${p}/b`, "multi", index, OCI_INDEX);
    const before = await snap(await push());
    await pushImage(open, `${p}/a`, child);
    // the child's blobs are even present in B: only the child manifest itself is missing
    await pushBlob(open, `${p}/b`, child.cfg);
    for (const l of child.layers) await pushBlob(open, `${p}/b`, l);
    const after = await snap(await push());
    expect(after).toEqual(before);
    expect(after.status).toBe(400);
    expect(JSON.parse(after.body).errors[0].code).toBe("MANIFEST_BLOB_UNKNOWN");
    expect((await open(`/v2/${p}/b/manifests/${child.digest}`)).status).toBe(404);
    expect((await open(`/v2/${p}/b/manifests/multi`)).status).toBe(404);
  });

  it("token mode: bob cannot graft alice's layers into his repository", async () => {
    const { aliceName, bobName, alice, bob } = await tenants();
    const img = await buildImage();
    const push = () => putManifest(bob, `${bobName}/graft`, "v1", img.manifest);
    const before = await snap(await push());
    await pushImage(alice, `${aliceName}/app`, img, "v1");
    expect(await snap(await push())).toEqual(before);
    expect(before.status).toBe(400);
    expect((await bob(`/v2/${bobName}/graft/blobs/${img.layerDigests[0]}`)).status).toBe(404);
  });
});

describe("digest-only claims: knowing a digest is not owning its bytes", () => {
  it("monolithic POST ?digest=<existing elsewhere> with different bytes → 400 DIGEST_INVALID and no membership", async () => {
    const p = uid();
    const data = randomBytes(900);
    const d = await sha256(data);
    const lie = randomBytes(900);
    const claim = () => open(`/v2/${p}/b/blobs/uploads/?digest=${d}`, { method: "POST", body: lie, headers: { "Content-Type": "application/octet-stream" } });
    const before = await snap(await claim());
    await pushBlob(open, `${p}/a`, data);
    const after = await snap(await claim());
    expect(after).toEqual(before);
    expect(after.status).toBe(400);
    expect(JSON.parse(after.body).errors[0].code).toBe("DIGEST_INVALID");
    for (const [label, s] of Object.entries(await snapAll(blobReads(open, `${p}/b`, d)))) expect(s.status, label).toBe(404);
    expect((await tagsOf(open, `${p}/b`)).status).toBe(404);
  });

  for (const variant of ["empty body", "no body"] as const) {
    it(`monolithic POST ?digest=<existing elsewhere> with ${variant} → 400, not a shortcut`, async () => {
      const p = uid();
      const data = randomBytes(500);
      const d = await sha256(data);
      const claim = () => open(`/v2/${p}/b/blobs/uploads/?digest=${d}`, {
        method: "POST",
        ...(variant === "empty body" ? { body: new Uint8Array(0), headers: { "Content-Type": "application/octet-stream", "Content-Length": "0" } } : {}),
      });
      const before = await snap(await claim());
      await pushBlob(open, `${p}/a`, data);
      const after = await snap(await claim());
      expect(after).toEqual(before);
      expect(after.status).toBe(400);
      expect(JSON.parse(after.body).errors[0].code).toBe("DIGEST_INVALID");
      expect((await open(`/v2/${p}/b/blobs/${d}`)).status).toBe(404);
    });
  }

  it("chunked PUT ?digest=<existing elsewhere> with no bytes uploaded, or with other bytes → 400", async () => {
    const p = uid();
    const data = randomBytes(800);
    const d = await sha256(data);
    await pushBlob(open, `${p}/a`, data);
    const start = async () => {
      const r = await open(`/v2/${p}/b/blobs/uploads/`, { method: "POST" });
      expect(r.status).toBe(202);
      return r.headers.get("Location")!;
    };
    // nothing uploaded, no body on PUT
    let loc = await start();
    let r = await open(`${loc}?digest=${d}`, { method: "PUT" });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { errors: { code: string }[] }).errors[0].code).toBe("DIGEST_INVALID");
    // nothing uploaded, explicit empty body
    loc = await start();
    r = await open(`${loc}?digest=${d}`, { method: "PUT", body: new Uint8Array(0), headers: { "Content-Length": "0", "Content-Type": "application/octet-stream" } });
    expect(r.status).toBe(400);
    // a zero-length PATCH, then PUT
    loc = await start();
    expect((await open(loc, { method: "PATCH", body: new Uint8Array(0), headers: { "Content-Type": "application/octet-stream", "Content-Length": "0" } })).status).toBe(202);
    r = await open(`${loc}?digest=${d}`, { method: "PUT" });
    expect(r.status).toBe(400);
    // other bytes patched, then PUT claiming the existing digest
    loc = await start();
    expect((await open(loc, { method: "PATCH", body: randomBytes(800), headers: { "Content-Type": "application/octet-stream" } })).status).toBe(202);
    r = await open(`${loc}?digest=${d}`, { method: "PUT" });
    expect(r.status).toBe(400);
    for (const [label, s] of Object.entries(await snapAll(blobReads(open, `${p}/b`, d)))) expect(s.status, label).toBe(404);
  });

  it("a manifest PUT by digest with other bytes does not make the existing manifest a member", async () => {
    const p = uid();
    const img = await buildImage();
    await pushImage(open, `${p}/a`, img);
    const other = await buildImage();
    await pushBlob(open, `${p}/b`, other.cfg);
    for (const l of other.layers) await pushBlob(open, `${p}/b`, l);
    const r = await putManifest(open, `${p}/b`, img.digest, other.manifest);
    expect(r.status).toBe(400);
    expect(((await r.json()) as { errors: { code: string }[] }).errors[0].code).toBe("DIGEST_INVALID");
    expect((await open(`/v2/${p}/b/manifests/${img.digest}`)).status).toBe(404);
  });
});

describe("identical bytes pushed by two tenants", () => {
  it("open mode: both read them; blob DELETE and manifest DELETE in one leave the other intact, and the deleter reads 'nowhere'", async () => {
    const p = uid();
    const A = `${p}/a`;
    const B = `${p}/b`;
    const img = await buildImage();
    const before = await snapAll([...blobReads(open, A, img.layerDigests[0]), ...manifestReads(open, A, img.digest, "v1")]);
    await pushImage(open, A, img, "v1");
    await pushImage(open, B, img, "v1");
    for (const repo of [A, B]) {
      expect((await open(`/v2/${repo}/blobs/${img.layerDigests[0]}`)).status).toBe(200);
      expect((await open(`/v2/${repo}/manifests/v1`)).status).toBe(200);
    }
    // B's DELETE of something only A has answers like nothing
    const foreign = randomBytes(50);
    const fd = await sha256(foreign);
    const del = () => open(`/v2/${B}/blobs/${fd}`, { method: "DELETE" });
    const delBefore = await snap(await del());
    await pushBlob(open, A, foreign);
    expect(await snap(await del())).toEqual(delBefore);
    expect((await open(`/v2/${A}/blobs/${fd}`)).status).toBe(200);

    expect((await open(`/v2/${A}/blobs/${img.layerDigests[0]}`, { method: "DELETE" })).status).toBe(202);
    expect((await open(`/v2/${A}/manifests/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    // B intact, bytes included
    const got = await open(`/v2/${B}/blobs/${img.layerDigests[0]}`);
    expect(got.status).toBe(200);
    expect(await sha256(new Uint8Array(await got.arrayBuffer()))).toBe(img.layerDigests[0]);
    expect((await open(`/v2/${B}/manifests/v1`)).status).toBe(200);
    expect((await open(`/v2/${B}/manifests/${img.digest}`)).status).toBe(200);
    // A now reads exactly like before anything was pushed
    expectSame(await snapAll([...blobReads(open, A, img.layerDigests[0]), ...manifestReads(open, A, img.digest, "v1")]), before);
  });

  it("token mode: alice and bob push the same bytes; alice's deletes do not touch bob", async () => {
    const { aliceName, bobName, alice, bob } = await tenants();
    const img = await buildImage();
    await pushImage(alice, `${aliceName}/app`, img, "v1");
    await pushImage(bob, `${bobName}/app`, img, "v1");
    expect((await alice(`/v2/${aliceName}/app/blobs/${img.config}`)).status).toBe(200);
    expect((await bob(`/v2/${bobName}/app/blobs/${img.config}`)).status).toBe(200);
    // bob deleting in alice's namespace: refused exactly like a nonexistent repository
    const del = (repo: string) => bob(`/v2/${repo}/blobs/${img.config}`, { method: "DELETE" });
    expect(await snap(await del(`${aliceName}/app`), { [`${aliceName}/app`]: "<N>" })).toEqual(await snap(await del(`${aliceName}/zzz`), { [`${aliceName}/zzz`]: "<N>" }));
    expect((await alice(`/v2/${aliceName}/app/blobs/${img.config}`, { method: "DELETE" })).status).toBe(202);
    expect((await alice(`/v2/${aliceName}/app/manifests/${img.digest}`, { method: "DELETE" })).status).toBe(202);
    expect((await bob(`/v2/${bobName}/app/blobs/${img.config}`)).status).toBe(200);
    expect((await bob(`/v2/${bobName}/app/manifests/v1`)).status).toBe(200);
    expect((await alice(`/v2/${aliceName}/app/manifests/v1`)).status).toBe(404);
  });
});

describe("upload sessions are bound to their repository and principal", () => {
  // Signed, stateless ids (docs/adr/0013): a UUIDv4, the expiry and the MAC binding repository and principal.
  const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.[0-9a-f]{8}\.[0-9a-f]{32}$/;

  function sessionOps(client: Client, repo: string, id: string, body: Uint8Array, d: string): Probe[] {
    const loc = `/v2/${repo}/blobs/uploads/${id}`;
    return [
      ["GET", () => client(loc)],
      ["PATCH", () => client(loc, { method: "PATCH", body, headers: { "Content-Type": "application/octet-stream" } })],
      ["PATCH Content-Range", () => client(loc, { method: "PATCH", body, headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${body.length - 1}` } })],
      ["PUT", () => client(`${loc}?digest=${d}`, { method: "PUT", body, headers: { "Content-Type": "application/octet-stream" } })],
      ["PUT empty", () => client(`${loc}?digest=${d}`, { method: "PUT" })],
      ["DELETE", () => client(loc, { method: "DELETE" })],
    ];
  }

  it("open mode: a session opened in repository A, used through repository B's path → 404 BLOB_UPLOAD_UNKNOWN like a random id; the session survives", async () => {
    const p = uid();
    const r = await open(`/v2/${p}/a/blobs/uploads/`, { method: "POST" });
    expect(r.status).toBe(202);
    const id = r.headers.get("Docker-Upload-UUID")!;
    expect(id).toMatch(V4);
    expect(r.headers.get("Location")).toBe(`/v2/${p}/a/blobs/uploads/${id}`);
    const chunk = randomBytes(100);
    const d = await sha256(chunk);
    const stolen = await snapAll(sessionOps(open, `${p}/b`, id, chunk, d), { [id]: "<ID>" });
    const random = crypto.randomUUID();
    const unknown = await snapAll(sessionOps(open, `${p}/b`, random, chunk, d), { [random]: "<ID>" });
    expectSame(stolen, unknown);
    for (const [label, s] of Object.entries(stolen)) {
      expect(s.status, label).toBe(404);
      expect(JSON.parse(s.body).errors[0].code, label).toBe("BLOB_UPLOAD_UNKNOWN");
    }
    expect((await open(`/v2/${p}/b/blobs/${d}`)).status).toBe(404);
    // the owner's session was not touched by any of that
    const st = await open(`/v2/${p}/a/blobs/uploads/${id}`);
    expect(st.status).toBe(204);
    expect(st.headers.get("Range")).toBe("0-0");
    expect((await open(`/v2/${p}/a/blobs/uploads/${id}?digest=${d}`, { method: "PUT", body: chunk, headers: { "Content-Type": "application/octet-stream" } })).status).toBe(201);
  });

  it("token mode: another principal on the same path → 404 BLOB_UPLOAD_UNKNOWN; on the owner's private path → the same 401 as a random id", async () => {
    const { p, aliceName, alice, bob } = await tenants();
    const shared = `${p}shared/x`;
    await addPolicy({ id: `${p}-shared`, effect: "allow", subjects: [`user:${aliceName}`, `user:${p}b`], actions: ["pull", "push"], repositories: [`${p}shared/**`] });
    const chunk = randomBytes(64);
    const d = await sha256(chunk);

    const s1 = await alice(`/v2/${shared}/blobs/uploads/`, { method: "POST" });
    expect(s1.status).toBe(202);
    const id = s1.headers.get("Docker-Upload-UUID")!;
    expect(id).toMatch(V4);
    const random = crypto.randomUUID();
    const stolen = await snapAll(sessionOps(bob, shared, id, chunk, d), { [id]: "<ID>" });
    const unknown = await snapAll(sessionOps(bob, shared, random, chunk, d), { [random]: "<ID>" });
    expectSame(stolen, unknown);
    for (const [label, s] of Object.entries(stolen)) {
      expect(s.status, label).toBe(404);
      expect(JSON.parse(s.body).errors[0].code, label).toBe("BLOB_UPLOAD_UNKNOWN");
    }
    // alice's own session in her namespace, probed by bob and anonymous
    const s2 = await alice(`/v2/${aliceName}/x/blobs/uploads/`, { method: "POST" });
    const id2 = s2.headers.get("Docker-Upload-UUID")!;
    for (const [who, cl] of [["bob", bob], ["anonymous", anonymous]] as const) {
      const a = await snapAll(sessionOps(cl, `${aliceName}/x`, id2, chunk, d), { [id2]: "<ID>" });
      const b = await snapAll(sessionOps(cl, `${aliceName}/x`, random, chunk, d), { [random]: "<ID>" });
      for (const label of Object.keys(b)) {
        expect(a[label], `${who}: ${label}`).toEqual(b[label]);
        expect(a[label].status, `${who}: ${label}`).toBe(401);
      }
    }
    // nothing became readable, the sessions survive
    expect((await bob(`/v2/${shared}/blobs/${d}`)).status).toBe(404);
    expect((await alice(`/v2/${shared}/blobs/uploads/${id}`)).status).toBe(204);
    expect((await alice(`/v2/${aliceName}/x/blobs/uploads/${id2}`)).status).toBe(204);
    expect((await alice(`/v2/${shared}/blobs/uploads/${id}?digest=${d}`, { method: "PUT", body: chunk, headers: { "Content-Type": "application/octet-stream" } })).status).toBe(201);
  });

  it("session ids are distinct signed UUIDv4-based ids, and malformed ids answer like unknown ones", async () => {
    const p = uid();
    const ids = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const r = await open(`/v2/${p}/a/blobs/uploads/`, { method: "POST" });
      const id = r.headers.get("Docker-Upload-UUID")!;
      expect(id).toMatch(V4);
      ids.add(id);
    }
    expect(ids.size).toBe(8);
    const random = crypto.randomUUID();
    const want = await snap(await open(`/v2/${p}/a/blobs/uploads/${random}`), { [random]: "<ID>" });
    // ("..", "." would be resolved by URL parsing into another route, so they are not ids at all)
    for (const bad of ["1", "00000000-0000-0000-0000-000000000000", [...ids][0].toUpperCase(), `${[...ids][0]}x`]) {
      expect(await snap(await open(`/v2/${p}/a/blobs/uploads/${bad}`), { [bad]: "<ID>" }), bad).toEqual(want);
    }
    // A percent-encoded id is refused by the path parser (shorter message; depends on the request only, not on state).
    const enc2F = await open(`/v2/${p}/a/blobs/uploads/${[...ids][0]}%2F..`);
    expect(enc2F.status).toBe(404);
    expect(((await enc2F.json()) as { errors: { code: string }[] }).errors[0].code).toBe("BLOB_UPLOAD_UNKNOWN");
  });
});

describe("prefix names are different repositories", () => {
  it("open mode: a/cache vs a/cache/sub vs a/cachex vs a/cach — membership, tags, referrers", async () => {
    const p = uid();
    const img = await buildImage();
    const others = [`${p}/cache/sub`, `${p}/cachex`, `${p}/cach`, `${p}`];
    const probes = () => others.flatMap((repo) => [
      ...manifestReads(open, repo, img.digest, "v1").slice(0, 5),
      ...blobReads(open, repo, img.config).slice(0, 3),
      ["tags", () => tagsOf(open, repo)] as Probe,
      ["referrers", () => open(`/v2/${repo}/referrers/${img.digest}`)] as Probe,
    ].map(([l, r]) => [`${repo}: ${l}`, r] as Probe));
    const before = await snapAll(probes());
    await pushImage(open, `${p}/cache`, img, "v1");
    expectSame(await snapAll(probes()), before);
    expect((await open(`/v2/${p}/cache/manifests/v1`)).status).toBe(200);
  });

  it("token mode: policy globs match whole names only", async () => {
    const { p, aliceName, alice, bob } = await tenants();
    const base = `${aliceName}/cache`;
    await addPolicy({ id: `${p}-exact`, effect: "allow", subjects: [`user:${p}b`], actions: ["pull"], repositories: [base] });
    await addPolicy({ id: `${p}-star`, effect: "allow", subjects: [`user:${p}b`], actions: ["pull"], repositories: [`${aliceName}/pub/*`] });
    const img = await buildImage();
    const readable = [base, `${aliceName}/pub/one`];
    const hidden = [`${base}/sub`, `${aliceName}/cachex`, `${aliceName}/cach`, `${aliceName}/pub`, `${aliceName}/pub/one/deeper`, `${aliceName}/pubx/one`];
    const probes = () => hidden.flatMap((repo) => repoRoutes(bob, repo, img.digest, "v1").map(([l, r]) => [`${repo}: ${l}`, r] as Probe));
    const before = await snapAll(probes(), {}, { uuids: true });
    for (const repo of [...readable, ...hidden]) await pushImage(alice, repo, img, "v1");
    const after = await snapAll(probes(), {}, { uuids: true });
    expectSame(after, before);
    for (const [label, s] of Object.entries(after)) expect(s.status, label).toBe(401);
    for (const repo of readable) {
      expect((await bob(`/v2/${repo}/manifests/v1`)).status, repo).toBe(200);
      expect((await bob(`/v2/${repo}/blobs/uploads/`, { method: "POST" })).status, `${repo} push`).toBe(401);
    }
    const cat = (await (await bob(`/v2/_catalog?last=${aliceName}`)).json()) as { repositories: string[] };
    expect(cat.repositories.filter((r) => r.startsWith(aliceName)).sort()).toEqual([...readable].sort());
  });
});

describe("path games never reach another repository", () => {
  const ACCEPTABLE_CODES = ["NAME_INVALID", "DIGEST_INVALID", "NAME_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN"];

  it("open mode: encoded slashes and dots, double and trailing slashes, uppercase → NAME_INVALID or a plain miss", async () => {
    const p = uid();
    const data = randomBytes(300);
    const d = await sha256(data);
    await pushBlob(open, `${p}/secret/app`, data);
    const paths = [
      `/v2/${p}/b%2F..%2F..%2F${p}%2Fsecret%2Fapp/blobs/${d}`,
      `/v2/${p}/b%2f..%2f..%2f${p}%2fsecret%2fapp/blobs/${d}`,
      `/v2/${p}%2Fsecret%2Fapp/blobs/${d}`,
      `/v2/${p}%2fsecret/app/blobs/${d}`,
      `/v2/${p}/b/%2E%2E%2F%2E%2E%2F${p}/secret/app/blobs/${d}`,
      `/v2/${p}/secret%2Eapp/blobs/${d}`,
      `/v2/${p}//secret/app/blobs/${d}`,
      `/v2//${p}/secret/app/blobs/${d}`,
      `/v2/${p}/secret/app//blobs/${d}`,
      `/v2/${p}/secret/app/blobs/${d}/`,
      `/v2/${p}/secret/app/blobs/${d}%2F`,
      `/v2/${p}/secret/app/blobs/${d.replace(":", "%3A")}`,
      `/v2/${p.toUpperCase()}/secret/app/blobs/${d}`,
      `/v2/${p}/Secret/app/blobs/${d}`,
      `/v2/${p}/secret/app/./blobs/${d}`.replace("/./", "/%2E/"),
      `/v2/${p}/secret/app%00/blobs/${d}`,
      `/v2/${p}/secret/app%20/blobs/${d}`,
      `/v2/${p}/secret/app\\/blobs/${d}`,
      `/v2/${p}/secret/app/blobs/uploads/../${d}`.replace("/../", "/%2E%2E/"),
    ];
    for (const path of paths) {
      const resolved = new URL(BASE + path).pathname;
      const s = await snap(await open(path));
      if (resolved !== path) {
        // URL parsing resolved a dot segment: the request IS for the resolved path, and must be answered exactly like it
        expect(s, `${path} resolves to ${resolved}`).toEqual(await snap(await open(resolved)));
        continue;
      }
      expect(s.status, `${path} → ${s.status} ${s.body}`).toBeGreaterThanOrEqual(400);
      expect(s.status, path).toBeLessThan(500);
      expect(s.headers.map(([k]) => k), path).not.toContain("docker-content-digest");
      const code = JSON.parse(s.body).errors?.[0]?.code;
      expect(ACCEPTABLE_CODES, `${path} → ${code}`).toContain(code);
    }
  });

  it("dot segments (literal or %2E%2E) are resolved by URL parsing before routing: auth and dispatch see the same name", async () => {
    // WHATWG URL parsing (the runtime's and every client's) turns "..", "%2e%2e" and ".%2E" segments
    // into real dot segments, so they can only ever name the resolved repository; what matters is that
    // the auth gate and the router agree on it.
    const { aliceName, bobName, alice, bob } = await tenants();
    const data = randomBytes(300);
    const d = await sha256(data);
    await pushBlob(alice, `${aliceName}/secret`, data);
    const direct = await snap(await bob(`/v2/${aliceName}/secret/blobs/${d}`));
    expect(direct.status).toBe(401);
    const games = [
      `/v2/${bobName}/x/../../${aliceName}/secret/blobs/${d}`,
      `/v2/${bobName}/x/%2E%2E/%2E%2E/${aliceName}/secret/blobs/${d}`,
      `/v2/${bobName}/x/%2e%2e/%2e%2e/${aliceName}/secret/blobs/${d}`,
      `/v2/${bobName}/x/.%2E/.%2e/${aliceName}/secret/blobs/${d}`,
      `/v2/${bobName}/./../${aliceName}/secret/blobs/${d}`,
    ];
    for (const path of games) {
      const s = await snap(await bob(path));
      expect(s.status, `${path} → ${s.status} ${s.body}`).not.toBeLessThan(400);
      if (s.status === 401) expect(s, path).toEqual(direct);
      else expect(JSON.parse(s.body).errors[0].code, path).toBe("NAME_INVALID");
    }
    // encoded slashes in bob's own namespace never reach alice's repository
    for (const path of [`/v2/${bobName}%2F..%2F${aliceName}%2Fsecret/blobs/${d}`, `/v2/${bobName}/x%2F..%2F..%2F${aliceName}%2Fsecret/blobs/${d}`]) {
      const s = await snap(await bob(path));
      expect(s.status, path).toBe(400);
      expect(JSON.parse(s.body).errors[0].code, path).toBe("NAME_INVALID");
    }
  });
});

// ---- upgrade path: pre-index repositories -------------------------------------------------------

/** The repository's own TrustStore (one object per repository, ADR 0008). */
const trust = (repo: string) => trustStoreFor(env as unknown as Env, repo) as unknown as DurableObjectStub<TrustStore>;

/** Make `repo` look like data written before schema 2: tags and bytes, no membership rows (see backfill.test.ts). */
async function makeLegacy(...repos: string[]) {
  for (const repo of repos) {
    await runInDurableObject(trust(repo), async (instance, state) => {
      state.storage.sql.exec(`DELETE FROM members WHERE repo = ?`, repo);
      state.storage.sql.exec(`DELETE FROM repos WHERE repo = ?`, repo);
      state.storage.sql.exec(`UPDATE meta SET value = '1' WHERE key = 'schema'`);
      (instance as unknown as { init(): void }).init();
    });
  }
}

describe("upgrade path: a repository flagged for backfill grants only what its own manifests reference", () => {
  it("blobs, manifests and referrers of other repositories stay invisible, the first (backfilling) probe included", async () => {
    const p = uid();
    const L = `${p}/legacy`;
    const L2 = `${p}/legacy2`;
    const O = `${p}/other`;
    const own = await buildImage();
    await pushImage(open, L, own, "v1");
    const stray = await pushBlob(open, L, randomBytes(77)); // uploaded to L, never referenced
    await pushImage(open, L2, await buildImage(), "v1");
    const foreign = await buildImage();
    await pushImage(open, O, foreign, "f1");
    const foreignBlob = await pushBlob(open, O, randomBytes(99));
    const ref = await buildReferrer({ digest: own.digest, size: own.manifest.length }, "application/vnd.example.sig", { k: "v" });
    await pushReferrer(open, O, ref); // refers to L's manifest, but lives in O
    await makeLegacy(L, L2);
    expect(await trust(L).needsBackfill(L)).toBe(true);
    expect(await trust(L2).needsBackfill(L2)).toBe(true);

    // First probe of L for another repository's blob triggers the backfill; compare with L2's first
    // probe for a digest that exists nowhere (also backfilling), and with a later one.
    const nd = await nowhere();
    const first = await snap(await open(`/v2/${L}/blobs/${foreignBlob}`), { [foreignBlob]: "<D>", [L]: "<R>" });
    const firstNowhere = await snap(await open(`/v2/${L2}/blobs/${nd}`), { [nd]: "<D>", [L2]: "<R>" });
    expect(first).toEqual(firstNowhere);
    expect(await trust(L).needsBackfill(L)).toBe(false);
    const later = await snap(await open(`/v2/${L}/blobs/${nd}`), { [nd]: "<D>", [L]: "<R>" });
    expect(first).toEqual(later);

    // own content is back
    expect((await open(`/v2/${L}/manifests/v1`)).status).toBe(200);
    for (const b of [own.config, ...own.layerDigests]) expect((await open(`/v2/${L}/blobs/${b}`)).status).toBe(200);

    // nothing else: the other repository's manifest, its config and layers, its loose blob, the stray upload,
    // and the referrer that lives in O
    const ndm = await nowhere();
    const missing = { [foreign.digest]: "<D>", [ndm]: "<D>" };
    expectSame(
      await snapAll(manifestReads(open, L, foreign.digest, "f1"), missing),
      await snapAll(manifestReads(open, L, ndm, "f1"), missing),
    );
    for (const b of [foreign.config, ...foreign.layerDigests, foreignBlob, stray, ref.digest]) {
      expect(await snap(await open(`/v2/${L}/blobs/${b}`), { [b]: "<D>" }), b).toEqual(await snap(await open(`/v2/${L}/blobs/${nd}`), { [nd]: "<D>" }));
    }
    const refs = (await (await open(`/v2/${L}/referrers/${own.digest}`)).json()) as { manifests: unknown[] };
    expect(refs.manifests).toEqual([]);
    // the admin task changes nothing of that
    expect((await open(`/v2/${L}/blobs/${foreign.layerDigests[0]}`)).status).toBe(404);
  });

  it("a manifest read (by tag) on a flagged repository does not pick up another repository's tag", async () => {
    const p = uid();
    const L = `${p}/legacy`;
    const O = `${p}/other`;
    const own = await buildImage();
    await pushImage(open, L, own, "v1");
    const foreign = await buildImage();
    await pushImage(open, O, foreign, "v2");
    await makeLegacy(L);
    const s = await snap(await open(`/v2/${L}/manifests/v2`));
    expect(s.status).toBe(404);
    expect(await trust(L).needsBackfill(L)).toBe(false);
    expect(await snap(await open(`/v2/${L}/manifests/v2`))).toEqual(s);
    expect((await open(`/v2/${L}/manifests/${foreign.digest}`)).status).toBe(404);
    expect((await open(`/v2/${L}/manifests/v1`)).status).toBe(200);
  });
});

// Signature repository links (docs/signatures.md): referrers of alice's image that bob keeps in his
// own repository are merged into alice's referrers listing only through a link, and only for a
// caller who may pull bob's repository. A link never makes anything readable through alice's repository.
describe("signature repository links: the cross-repository referrers merge", () => {
  const AT = "application/vnd.example.signature";
  const ANN: [string, string] = ["org.example.signer", "bob"];

  async function setup() {
    const t = await tenants();
    const image = `${t.aliceName}/app`;
    const sigs = `${t.bobName}/sigs/app`;
    const subject = await buildImage();
    await pushImage(t.alice, image, subject, "v1");
    const s = { digest: subject.digest, size: subject.manifest.length };
    const ref = await buildReferrer(s, AT, { [ANN[0]]: ANN[1] });
    const sigTag = `sha256-${subject.digest.slice(7)}.sig`;
    const tagged = await buildImage({ layers: 1 });
    const pushSigs = async () => {
      await pushReferrer(t.bob, sigs, ref);
      await pushImage(t.bob, sigs, tagged, sigTag);
    };
    const link = () => addPolicy({ id: `${t.p}-link`, kind: "signature-repository", repositories: `${t.aliceName}/*`, target: `${t.bobName}/sigs/{1}` });
    const grantPull = () => addPolicy({ id: `${t.p}-read-sigs`, effect: "allow", subjects: `user:${t.aliceName}`, actions: "pull", repositories: `${t.bobName}/sigs/**` });
    const reads = () => [
      ...referrerReads(t.alice, image, subject.digest, AT, ANN),
      ["referrers cosign artifactType", () => t.alice(`/v2/${image}/referrers/${subject.digest}?artifactType=${encodeURIComponent("application/vnd.dev.cosign.artifact.sig.v1+json")}`)] as Probe,
      ["referrers repository annotation", () => t.alice(`/v2/${image}/referrers/${subject.digest}?annotation=${encodeURIComponent(`dev.cloister.referrer.repository=${sigs}`)}`)] as Probe,
    ];
    const listed = async () => ((await (await t.alice(`/v2/${image}/referrers/${subject.digest}`)).json()) as { manifests: { digest: string; annotations?: Record<string, string> }[] }).manifests;
    return { ...t, image, sigs, subject, ref, tagged, sigTag, pushSigs, link, grantPull, reads, listed };
  }

  it("without a link, referrers and sha256-<hex>.sig tags in another repository never appear (even with pull permission)", async () => {
    const x = await setup();
    await x.grantPull();
    const before = await snapAll(x.reads());
    await x.pushSigs();
    expectSame(await snapAll(x.reads()), before);
    // (c) with the link they appear, each naming its repository
    await x.link();
    const got = await x.listed();
    expect(got.map((m) => m.digest).sort()).toEqual([x.ref.digest, x.tagged.digest].sort());
    for (const m of got) expect(m.annotations?.["dev.cloister.referrer.repository"]).toBe(x.sigs);
  });

  it("with a link but no pull permission on the linked repository, its referrers are absent, indistinguishable from none", async () => {
    const x = await setup();
    await x.link();
    const before = await snapAll(x.reads());
    await x.pushSigs();
    // (before: the link named a repository that did not exist yet)
    expectSame(await snapAll(x.reads()), before);
    // (c) pull permission makes them appear
    await x.grantPull();
    expect((await x.listed()).map((m) => m.digest).sort()).toEqual([x.ref.digest, x.tagged.digest].sort());
  });

  it("a link never makes the linked repository's manifests, tags or blobs readable through the image's repository", async () => {
    const x = await setup();
    await x.link();
    await x.grantPull();
    const probes = () => [
      ...manifestReads(x.alice, x.image, x.ref.digest, x.sigTag),
      ...manifestReads(x.alice, x.image, x.tagged.digest, x.sigTag).slice(0, 4),
      ...blobReads(x.alice, x.image, x.tagged.layerDigests[0]).slice(0, 4),
      ["blob config", () => x.alice(`/v2/${x.image}/blobs/${x.tagged.config}`)] as Probe,
      ["tags/list", () => x.alice(`/v2/${x.image}/tags/list`)] as Probe,
      ["mount from image repo", () => x.alice(`/v2/${x.aliceName}/other/blobs/uploads/?mount=${x.tagged.config}&from=${x.image}`, { method: "POST" })] as Probe,
    ];
    const before = await snapAll(probes(), {}, { uuids: true });
    await x.pushSigs();
    expectSame(await snapAll(probes(), {}, { uuids: true }), before);
    expect(before["GET by digest"].status).toBe(404);
    // (c) the merged listing shows them, and they are readable where they live
    expect((await x.listed()).length).toBe(2);
    expect((await x.alice(`/v2/${x.sigs}/manifests/${x.ref.digest}`)).status).toBe(200);
  });
  it("attestation rows recorded at a signature push land only in the repositories linked to it (docs/signatures.md)", async () => {
    const x = await setup();
    const sibling = `${x.aliceName}/other`; // linked to ${bob}/sigs/other, not to the signatures' repository
    await pushImage(x.alice, sibling, x.subject, "v1");
    const rowsIn = (repo: string) => trustStoreFor(env as unknown as Env, repo).attestations(repo, x.subject.digest);
    await x.pushSigs();
    expect(await rowsIn(x.image)).toEqual([]); // no link: nothing crosses
    await x.link();
    await x.pushSigs(); // pushed again, now linked
    const got = await rowsIn(x.image);
    // the sha256-<hex>.sig manifest counts as a signature (the example referrer's artifactType is not one): present, verified by no key
    expect(got.map((r) => ({ source: r.source, signature: r.signature, verified: r.verified }))).toEqual([{ source: x.sigs, signature: x.tagged.digest, verified: false }]);
    expect(await rowsIn(sibling)).toEqual([]);
  });
});
