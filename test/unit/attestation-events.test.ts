// Attestation rows kept current by events (docs/signatures.md, ADR 0019 "Session 4"): a signature
// push records rows in the subject's repository and every repository linked to it, with no listing
// or pull; deleting a signature, its .sig tag or a key makes a gate refuse at once, however large
// SIGNATURE_RECHECK_SECONDS is; a removed link stops counting; each change is an audit event.
// The tenant boundary of recorded rows is in boundary.test.ts.
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it } from "vitest";
import raw from "../../cloister-spec/signatures/v1/vectors/vectors.json";
import { reqWith, sha256 } from "./helpers";
import { accountStoreFor, trustStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";
import type { AuditEvent } from "../../src/audit/events";
import { base64ToBytes } from "../../src/util/encoding";
import { parseRule, reverseLinkedRepositories, withBuiltins, type Rule } from "../../src/auth/policy";
import { isValidName } from "../../src/oci/grammar";
import { runGc } from "./gc-helpers";

interface Vectors {
  subject: string;
  subjectManifest: string;
  keys: Record<string, { algorithm: string; registered: boolean; pem: string }>;
  cases: { name: string; manifest: string; blobs: Record<string, string> }[];
}
const vectors = raw as unknown as Vectors;

const ADMIN_PW = "attestation-events-admin";
// A day: rows never go stale here, so only the events can close a gate.
const VARS = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW, SIGNATURE_RECHECK_SECONDS: "86400" };
const admin = (path: string, init: RequestInit = {}) => {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Basic ${btoa(`admin:${ADMIN_PW}`)}`);
  return reqWith(VARS, path, { ...init, headers });
};
const uid = () => "e" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const post = (path: string, b: unknown) => admin(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const COSIGN_AT = "application/vnd.dev.cosign.artifact.sig.v1+json";
const enc = new TextEncoder();

async function blob(repo: string, data: Uint8Array) {
  const d = await sha256(data);
  const r = await admin(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data });
  expect(r.status, await r.clone().text()).toBe(201);
}
async function put(repo: string, ref: string | null, text: string) {
  const digest = await sha256(enc.encode(text));
  const r = await admin(`/v2/${repo}/manifests/${ref ?? digest}`, { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body: text });
  expect(r.status, await r.clone().text()).toBe(201);
  return digest;
}
/** Vector `name` pushed into `repo` as cosign's referrers mode does, or (`tag`) in the sha256-<hex>.sig convention. */
async function pushVector(repo: string, name: string, mode: "referrer" | "tag" = "referrer") {
  const v = vectors.cases.find((c) => c.name === name)!;
  for (const b of Object.values(v.blobs)) await blob(repo, base64ToBytes(b));
  if (mode === "tag") return put(repo, `sha256-${vectors.subject.slice(7)}.sig`, v.manifest);
  const m = JSON.parse(v.manifest) as Record<string, unknown>;
  return put(repo, null, JSON.stringify({ ...m, artifactType: COSIGN_AT, subject: { mediaType: OCI_MANIFEST, digest: vectors.subject, size: vectors.subjectManifest.length } }));
}
/** The rows recorded in `repo`'s TrustStore, read directly (no listing, no verification). */
async function rows(repo: string) {
  return trustStoreFor(env as unknown as Env, repo).attestations(repo, vectors.subject);
}
const verifiedSigners = async (repo: string) => (await rows(repo)).filter((r) => r.verified).map((r) => r.signer).sort();
async function pull(repo: string) {
  const r = await admin(`/v2/${repo}/manifests/v1`);
  const body = r.status === 200 ? null : ((await r.json()) as { errors: { message: string }[] }).errors[0].message;
  return { status: r.status, message: body };
}
async function events(action: string, repository: string): Promise<AuditEvent[]> {
  const r = await admin(`/admin/audit?limit=100&action=${action}&repository=${encodeURIComponent(repository)}`);
  expect(r.status).toBe(200);
  return ((await r.json()) as { events: AuditEvent[] }).events;
}

// A public key has one name: each test's keys are deleted after it, so the next may register them.
const registered: string[] = [];
afterEach(async () => {
  for (const k of registered.splice(0)) await admin(`/admin/trust-keys/${k}`, { method: "DELETE" });
});

/** An image repository `<p>/app`, its linked `<p>-sigs/app`, keys alice and bob, and a 2-of gate. */
async function setup(opts: { gate?: boolean } = {}) {
  const p = uid();
  const img = `${p}/app`;
  const sigs = `${p}-sigs/app`;
  await blob(img, enc.encode("{}"));
  await put(img, "v1", vectors.subjectManifest);
  const alice = `alice-${p}`, bob = `bob-${p}`;
  registered.push(alice, bob);
  expect((await post("/admin/trust-keys", { name: alice, publicKey: vectors.keys.alice.pem })).status).toBe(201);
  expect((await post("/admin/trust-keys", { name: bob, publicKey: vectors.keys.bob.pem })).status).toBe(201);
  expect((await post("/admin/policies", { id: `${p}-link`, kind: "signature-repository", repositories: `${p}/*`, target: `${p}-sigs/{1}` })).status).toBe(201);
  if (opts.gate !== false) expect((await post("/admin/policies", { id: `${p}-gate`, kind: "signature-gate", repositories: `${p}/*`, keys: [alice, bob], minimum: 2 })).status).toBe(201);
  return { p, img, sigs, alice, bob };
}

describe("attestation rows follow signature events", () => {
  it("a signature push records rows in the image repository it is linked from, with no listing or pull, and audits it", async () => {
    const { img, sigs, alice, bob } = await setup({ gate: false });
    expect(await rows(img)).toEqual([]);
    await pushVector(sigs, "alice-ecdsa-p256");
    expect(await verifiedSigners(img)).toEqual([alice]);
    await pushVector(sigs, "bob-ed25519", "tag"); // cosign's tag convention counts too
    expect(await verifiedSigners(img)).toEqual([alice, bob].sort());
    const all = await rows(img);
    expect(all.every((r) => r.source === sigs)).toBe(true);
    // a signature that does not verify is recorded as such, not as verified
    await pushVector(sigs, "mallory-unregistered");
    expect((await rows(img)).some((r) => !r.verified && r.reason === "no registered key verifies the signature")).toBe(true);
    expect(await verifiedSigners(img)).toEqual([alice, bob].sort());
    const recorded = await events("attestation.record", img);
    expect(recorded.length).toBeGreaterThanOrEqual(2);
    expect(recorded.every((e) => (e.details as { trigger?: string }).trigger === "push")).toBe(true);
  });

  it("deleting a signature (or its .sig tag) in the linked repository makes a 2-of gate refuse at once", async () => {
    const { img, sigs, bob } = await setup();
    await pushVector(sigs, "alice-ecdsa-p256");
    const bobSig = await pushVector(sigs, "bob-ed25519");
    expect(await pull(img)).toEqual({ status: 200, message: null });

    expect((await admin(`/v2/${sigs}/manifests/${bobSig}`, { method: "DELETE" })).status).toBe(202);
    expect((await verifiedSigners(img)).includes(bob)).toBe(false);
    const refused = await pull(img);
    expect(refused.status).toBe(403);
    expect(refused.message).toContain("found 1");
    const revoked = await events("attestation.revoke", img);
    expect(revoked.map((e) => (e.details as { reason: string; signature: string }))).toContainEqual(expect.objectContaining({ reason: "signature deleted", signature: bobSig }));

    // the tag convention: bob signs again as sha256-<hex>.sig; deleting that tag closes the gate again
    await pushVector(sigs, "bob-ed25519", "tag");
    expect((await pull(img)).status).toBe(200);
    expect((await admin(`/v2/${sigs}/manifests/sha256-${vectors.subject.slice(7)}.sig`, { method: "DELETE" })).status).toBe(202);
    expect((await pull(img)).status).toBe(403);
  });

  it("deleting a key makes the gate refuse at once; the same key registered again counts again", async () => {
    const { img, sigs, alice, bob } = await setup();
    await pushVector(sigs, "alice-ecdsa-p256");
    await pushVector(sigs, "bob-ed25519");
    expect((await pull(img)).status).toBe(200);

    expect((await admin(`/admin/trust-keys/${bob}`, { method: "DELETE" })).status).toBe(204);
    expect((await rows(img)).find((r) => r.signer === bob)).toMatchObject({ verified: false, reason: `key ${bob} was deleted` });
    const refused = await pull(img);
    expect(refused.status).toBe(403);
    expect(refused.message).toContain("found 1");
    const revoked = await events("attestation.revoke", img);
    expect(revoked.some((e) => (e.details as { reason: string; key?: string }).reason === "key deleted" && (e.details as { key?: string }).key === bob)).toBe(true);
    // a second DELETE finds nothing left to do
    expect((await admin(`/admin/trust-keys/${bob}`, { method: "DELETE" })).status).toBe(404);

    // replacing: bob's key registered again (a new generation) counts on the next pull's re-verification
    expect((await post("/admin/trust-keys", { name: bob, publicKey: vectors.keys.bob.pem })).status).toBe(201);
    expect((await pull(img)).status).toBe(200);
    expect(await verifiedSigners(img)).toEqual([alice, bob].sort());
  });

  it("a key walk cut short (the key gone, its repositories not yet revoked) is finished by repeating the DELETE", async () => {
    const { img, sigs, bob } = await setup();
    await pushVector(sigs, "alice-ecdsa-p256");
    await pushVector(sigs, "bob-ed25519");
    expect((await pull(img)).status).toBe(200);
    // the key row goes, as in a DELETE that crashed before its walk
    expect(await accountStoreFor(env as unknown as Env).deleteTrustKey(bob)).not.toBeNull();
    expect(await verifiedSigners(img)).toContain(bob); // nothing revoked yet
    expect((await admin(`/admin/trust-keys/${bob}`, { method: "DELETE" })).status).toBe(204); // not 404: the walk is finished
    expect(await verifiedSigners(img)).not.toContain(bob);
    expect((await pull(img)).status).toBe(403);
    expect((await admin(`/admin/trust-keys/${bob}`, { method: "DELETE" })).status).toBe(404);
  });

  it("a verification pass that read a key before its delete cannot record it as verified after the walk", async () => {
    const { img } = await setup({ gate: false });
    const store = trustStoreFor(env as unknown as Env, img);
    const row = (signer: string, signerGen: number) => ({ source: img, signature: `sha256:${"a".repeat(64)}`, payload: `sha256:${signer === "k" ? "b".repeat(64) : "c".repeat(64)}`, kind: "cosign", signer, verified: true, reason: null, verifiedAt: Date.now(), signerGen });
    await store.revokeSigner(img, "k", 1000); // the walk reached this repository: generation 1000 of key k is gone
    await store.recordAttestations(img, vectors.subject, [row("k", 1000), row("other", 1000)]);
    const got = await rows(img);
    expect(got.find((r) => r.signer === "k")).toMatchObject({ verified: false, reason: "key k was deleted" });
    expect(got.find((r) => r.signer === "other")).toMatchObject({ verified: true });
    // a later registration of the same name (a newer generation) counts
    await store.recordAttestations(img, vectors.subject, [row("k", 1001)]);
    expect(await verifiedSigners(img)).toEqual(["k"]);
  });

  it("removing the link stops the linked repository's rows counting at once; adding it back counts them again", async () => {
    const { p, img, sigs } = await setup();
    await pushVector(sigs, "alice-ecdsa-p256");
    await pushVector(sigs, "bob-ed25519");
    expect((await pull(img)).status).toBe(200);
    expect((await admin(`/admin/policies/${p}-link`, { method: "DELETE" })).status).toBe(204);
    const refused = await pull(img);
    expect(refused.status).toBe(403);
    expect(refused.message).toContain("found 0");
    expect((await post("/admin/policies", { id: `${p}-link`, kind: "signature-repository", repositories: `${p}/*`, target: `${p}-sigs/{1}` })).status).toBe(201);
    expect((await pull(img)).status).toBe(200);
  });
});

describe("retention deleting signatures", () => {
  it("GC retention removing a linked repository's signatures (orphan referrers, .sig tags) closes the gate", async () => {
    const { p, img, sigs } = await setup();
    await pushVector(sigs, "alice-ecdsa-p256"); // a referrer whose subject is not in the signature repository: an orphan there
    await pushVector(sigs, "bob-ed25519", "tag");
    expect((await pull(img)).status).toBe(200);
    // keep no tags, drop orphan referrers: retention deletes both signatures
    const rule = { pattern: `${p}-sigs/**`, keepLastTags: 0, keepTags: [], untaggedOlderThanDays: null, deleteOrphanReferrers: true };
    expect((await admin("/admin/retention", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(rule) })).status).toBe(200);
    try {
      const run = await runGc({ graceSeconds: 3600 });
      expect(run.stats.retentionManifestsDeleted).toBeGreaterThanOrEqual(1);
    } finally {
      await admin(`/admin/retention?pattern=${encodeURIComponent(rule.pattern)}`, { method: "DELETE" });
    }
    expect(await verifiedSigners(img)).toEqual([]);
    const refused = await pull(img);
    expect(refused.status).toBe(403);
    expect(refused.message).toContain("found 0");
    const revoked = await events("attestation.revoke", img);
    expect(revoked.some((e) => (e.details as { reason: string }).reason === "retention deleted signatures")).toBe(true);
  });
});

describe("signature gates carried in access tokens", () => {
  const tokenFor = async (repo: string) => {
    const r = await admin(`/token?service=registry.test&scope=repository:${repo}:pull`);
    expect(r.status, await r.clone().text()).toBe(200);
    const token = ((await r.json()) as { token: string }).token;
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) as { sg?: { name: string; gates: { id: string; keys: string[]; minimum: number }[]; links: string[] }[] };
    return { token, claims };
  };
  const bearer = (repo: string, token: string) => reqWith(VARS, `/v2/${repo}/manifests/v1`, { headers: { Authorization: `Bearer ${token}` } });

  it("a token names the gates and links of what it may pull; the gated Bearer pull obeys them", async () => {
    const { p, img, sigs, alice, bob } = await setup();
    const { token, claims } = await tokenFor(img);
    expect(claims.sg).toEqual([{ name: img, gates: [{ id: `${p}-gate`, keys: [alice, bob], minimum: 2 }], links: [sigs] }]);
    expect((await bearer(img, token)).status).toBe(403);
    await pushVector(sigs, "alice-ecdsa-p256");
    await pushVector(sigs, "bob-ed25519");
    expect((await bearer(img, token)).status).toBe(200);
    // an ungated repository: the claim is there, and empty
    const other = `${uid()}/free`;
    await blob(other, enc.encode("{}"));
    await put(other, "v1", vectors.subjectManifest);
    expect((await tokenFor(other)).claims.sg).toEqual([]);
  });

  it("too many gates to embed: the token carries no claim and the pull loads the rules (never ungated)", async () => {
    const { p, img } = await setup(); // one gate; 16 more make 17 (MAX_GATES_PER_REPOSITORY is 16)
    for (let i = 0; i < 16; i++) expect((await post("/admin/policies", { id: `${p}-extra-${i}`, kind: "signature-gate", repositories: `${p}/*`, keys: [`alice-${p}`], minimum: 1 })).status).toBe(201);
    const { token, claims } = await tokenFor(img);
    expect(claims.sg).toBeUndefined();
    const r = await bearer(img, token);
    expect(r.status).toBe(403);
    expect(await r.text()).toContain("found 0");
  });

  it("a gate added after a token was issued binds that token when it expires (TOKEN_TTL_SECONDS), a new token at once", async () => {
    const { p, img } = await setup({ gate: false });
    const before = await tokenFor(img);
    expect(before.claims.sg).toEqual([]);
    expect((await post("/admin/policies", { id: `${p}-late-gate`, kind: "signature-gate", repositories: `${p}/*`, keys: [`alice-${p}`], minimum: 1 })).status).toBe(201);
    expect((await bearer(img, before.token)).status).toBe(200); // the documented staleness bound
    expect((await bearer(img, (await tokenFor(img)).token)).status).toBe(403);
  });
});

describe("reverse signature-repository links", () => {
  const rules = (...rs: object[]): Rule[] => withBuiltins(rs.map((r, i) => parseRule({ id: `r${i}`, ...r })));
  const rev = (rs: Rule[], repo: string) => reverseLinkedRepositories(rs, repo, isValidName);

  it("inverts {N} and {repo} templates, checked by the forward mapping", () => {
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/*", target: "prod-sigs/{1}" }), "prod-sigs/app")).toEqual(["prod/app"]);
    expect(rev(rules({ kind: "signature-repository", repositories: "teams/*/apps/*", target: "sigs/{2}/{1}" }), "sigs/web/blue")).toEqual(["teams/blue/apps/web"]);
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/**", target: "sigs/{1}" }), "sigs/a/b/c")).toEqual(["prod/a/b/c"]);
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/**", target: "{repo}-sigs" }), "prod/x/app-sigs")).toEqual(["prod/x/app"]);
    // not a target of the link, or a target that maps back onto a name outside the glob
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/*", target: "prod-sigs/{1}" }), "other-sigs/app")).toEqual([]);
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/*", target: "prod-sigs/{1}" }), "prod-sigs/a/b")).toEqual([]);
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/**", target: "{repo}-sigs" }), "dev/app-sigs")).toEqual([]);
  });

  it("the explain API shows where a signature pushed into a repository counts", async () => {
    const { img, sigs } = await setup({ gate: false });
    const ex = (await (await admin(`/admin/explain?subject=user:nobody&action=pull&repository=${sigs}`)).json()) as { signaturesCountFor: string[] };
    expect(ex.signaturesCountFor).toEqual([img]);
  });

  it("skips links that cannot be inverted uniquely: an unused wildcard", () => {
    // every prod/<x>/app maps onto shared-sigs/app: which image is meant is unknowable
    expect(rev(rules({ kind: "signature-repository", repositories: "prod/*/app", target: "shared-sigs/app" }), "shared-sigs/app")).toEqual([]);
  });
});
