// Signature-gated pulls (docs/signatures.md): "at least N valid signatures from distinct keys of a
// named set" for a repository glob, with cosign signatures from cloister-spec/signatures/v1/vectors
// and, for the index case, Ed25519 signatures made here with WebCrypto in cosign's layout.
import { describe, expect, it } from "vitest";
import raw from "../../cloister-spec/signatures/v1/vectors/vectors.json";
import { req, reqWith, sha256 } from "./helpers";
import { base64ToBytes, bytesToBase64 } from "../../src/util/encoding";
import { env } from "cloudflare:workers";
import { trustStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";

interface Vectors {
  subject: string;
  subjectManifest: string;
  keys: Record<string, { algorithm: string; registered: boolean; pem: string }>;
  cases: { name: string; manifest: string; blobs: Record<string, string> }[];
}
const vectors = raw as unknown as Vectors;

const ADMIN_PW = "gate-admin-password";
const admin = (path: string, init: RequestInit = {}) => {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Basic ${btoa(`admin:${ADMIN_PW}`)}`);
  return reqWith({ AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW }, path, { ...init, headers });
};
const uid = () => "g" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const post = (path: string, b: unknown) => admin(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const COSIGN_AT = "application/vnd.dev.cosign.artifact.sig.v1+json";
const enc = new TextEncoder();

async function blob(repo: string, data: Uint8Array) {
  const d = await sha256(data);
  const r = await admin(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data });
  expect(r.status, await r.clone().text()).toBe(201);
  return d;
}
async function put(repo: string, ref: string | null, text: string, type = OCI_MANIFEST) {
  const digest = await sha256(enc.encode(text));
  const r = await admin(`/v2/${repo}/manifests/${ref ?? digest}`, { method: "PUT", headers: { "Content-Type": type }, body: text });
  expect(r.status, await r.clone().text()).toBe(201);
  return digest;
}
/** Pushes vector `name`'s signature into `repo` as cosign's referrers mode does. */
async function pushVector(repo: string, name: string) {
  const v = vectors.cases.find((c) => c.name === name)!;
  for (const b of Object.values(v.blobs)) await blob(repo, base64ToBytes(b));
  const m = JSON.parse(v.manifest) as Record<string, unknown>;
  return put(repo, null, JSON.stringify({ ...m, artifactType: COSIGN_AT, subject: { mediaType: OCI_MANIFEST, digest: vectors.subject, size: vectors.subjectManifest.length } }));
}
async function denial(r: Response) {
  expect(r.status).toBe(403);
  return ((await r.json()) as { errors: { code: string; message: string; detail: { found: number } }[] }).errors[0];
}

describe("signature-gated pulls", () => {
  it("2 of {alice, bob}: refused with none or one valid signature (GET and HEAD, tag and digest), allowed with two; blobs are not gated", async () => {
    const p = uid();
    const img = `${p}/app`;
    const sigs = `${p}-sigs/app`;
    const empty = await blob(img, enc.encode("{}"));
    await put(img, "v1", vectors.subjectManifest);
    const alice = `alice-${p}`, bob = `bob-${p}`;
    expect((await post("/admin/trust-keys", { name: alice, publicKey: vectors.keys.alice.pem })).status).toBe(201);
    expect((await post("/admin/trust-keys", { name: bob, publicKey: vectors.keys.bob.pem })).status).toBe(201);
    expect((await post("/admin/policies", { id: `${p}-link`, kind: "signature-repository", repositories: `${p}/*`, target: `${p}-sigs/{1}` })).status).toBe(201);
    expect((await post("/admin/policies", { id: `${p}-gate`, kind: "signature-gate", repositories: `${p}/*`, keys: [alice, bob], minimum: 2 })).status).toBe(201);
    const refs = ["v1", vectors.subject];

    for (const ref of refs) {
      const e = await denial(await admin(`/v2/${img}/manifests/${ref}`));
      expect(e.code).toBe("DENIED");
      expect(e.message).toContain(`needs 2 valid signature(s) from distinct keys of {${alice}, ${bob}}`);
      expect(e.message).toContain("found 0");
      expect((await admin(`/v2/${img}/manifests/${ref}`, { method: "HEAD" })).status).toBe(403);
    }
    expect((await admin(`/v2/${img}/blobs/${empty}`)).status).toBe(200);
    // open mode (this pool's default) has no policy, hence no gate
    expect((await req(`/v2/${img}/manifests/v1`)).status).toBe(200);

    await pushVector(sigs, "alice-ecdsa-p256");
    // an unregistered key, a signature over another digest and a tampered payload do not count
    await pushVector(sigs, "mallory-unregistered");
    await pushVector(sigs, "alice-other-digest");
    await pushVector(sigs, "alice-tampered-payload");
    const e = await denial(await admin(`/v2/${img}/manifests/v1`));
    expect(e.message).toContain("found 1");
    expect(e.detail.found).toBe(1);

    await pushVector(sigs, "bob-ed25519");
    for (const ref of refs) {
      expect((await admin(`/v2/${img}/manifests/${ref}`)).status).toBe(200);
      expect((await admin(`/v2/${img}/manifests/${ref}`, { method: "HEAD" })).status).toBe(200);
    }
    // the explain API shows the gate and the link
    const ex = (await (await admin(`/admin/explain?subject=user:nobody&action=pull&repository=${img}`)).json()) as { signatureGates: { id: string }[]; signatureRepositories: string[] };
    expect(ex.signatureGates.map((g) => g.id)).toEqual([`${p}-gate`]);
    expect(ex.signatureRepositories).toEqual([sigs]);
    // a key has one name: the same public key under another name is refused
    const dup = await post("/admin/trust-keys", { name: `alias-${p}`, publicKey: vectors.keys.alice.pem });
    expect(dup.status).toBe(409);
    expect(await dup.text()).toContain(`already registered as ${alice}`);
    for (const k of [alice, bob]) expect((await admin(`/admin/trust-keys/${k}`, { method: "DELETE" })).status).toBe(204);
  });

  it("SIGNATURE_RECHECK_SECONDS is the safety net: a row whose delete event was lost counts only until it is that old", async () => {
    const p = uid();
    const img = `${p}/app`;
    const sigs = `${p}-sigs/app`;
    await blob(img, enc.encode("{}"));
    await put(img, "v1", vectors.subjectManifest);
    const alice = `alice-${p}`, bob = `bob-${p}`;
    expect((await post("/admin/trust-keys", { name: alice, publicKey: vectors.keys.alice.pem })).status).toBe(201);
    expect((await post("/admin/trust-keys", { name: bob, publicKey: vectors.keys.bob.pem })).status).toBe(201);
    expect((await post("/admin/policies", { id: `${p}-link`, kind: "signature-repository", repositories: `${p}/*`, target: `${p}-sigs/{1}` })).status).toBe(201);
    expect((await post("/admin/policies", { id: `${p}-gate`, kind: "signature-gate", repositories: `${p}/*`, keys: [alice, bob], minimum: 2 })).status).toBe(201);
    await pushVector(sigs, "alice-ecdsa-p256");
    const bobSig = await pushVector(sigs, "bob-ed25519");
    expect((await admin(`/v2/${img}/manifests/v1`)).status).toBe(200); // rows recorded at push

    // bob's signature leaves the linked repository without the Worker's delete event (as if the
    // revocation in the image repository was lost to a crash): the row stays...
    expect((await trustStoreFor(env as unknown as Env, sigs).deleteManifest(sigs, bobSig)).removed).toBe(true);
    expect((await admin(`/v2/${img}/manifests/v1`)).status).toBe(200);
    // ...and counts only while it is younger than SIGNATURE_RECHECK_SECONDS (0: every gated pull re-verifies)
    const stale = (path: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set("Authorization", `Basic ${btoa(`admin:${ADMIN_PW}`)}`);
      return reqWith({ AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW, SIGNATURE_RECHECK_SECONDS: "0" }, path, { ...init, headers });
    };
    const e = await denial(await stale(`/v2/${img}/manifests/v1`));
    expect(e.message).toContain("found 1");
    for (const k of [alice, bob]) expect((await admin(`/admin/trust-keys/${k}`, { method: "DELETE" })).status).toBe(204);
  });

  it("a signed index lets its child manifests be pulled by digest; the unsigned child alone is refused", async () => {
    const p = uid();
    const img = `${p}/app`;
    await blob(img, enc.encode("{}"));
    const child = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.empty.v1+json", digest: await sha256(enc.encode("{}")), size: 2 }, layers: [], annotations: { n: p } });
    const childDigest = await put(img, null, child);
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: childDigest, size: child.length, platform: { architecture: "amd64", os: "linux" } }] });
    const indexDigest = await put(img, "v1", index, OCI_INDEX);

    // a key made here (Ed25519, as `cosign generate-key-pair` can), registered, signing the index cosign-style
    const kp = (await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"])) as CryptoKeyPair;
    const spki = new Uint8Array((await crypto.subtle.exportKey("spki", kp.publicKey)) as ArrayBuffer);
    const pem = `-----BEGIN PUBLIC KEY-----\n${bytesToBase64(spki)}\n-----END PUBLIC KEY-----\n`;
    const key = `carol-${p}`;
    expect((await post("/admin/trust-keys", { name: key, publicKey: pem })).status).toBe(201);
    expect((await post("/admin/policies", { id: `${p}-gate`, kind: "signature-gate", repositories: `${p}/**`, keys: key, minimum: 1 })).status).toBe(201);
    expect((await admin(`/v2/${img}/manifests/${childDigest}`)).status).toBe(403);

    const payload = enc.encode(JSON.stringify({ critical: { identity: { "docker-reference": `registry.test/${img}` }, image: { "docker-manifest-digest": indexDigest }, type: "cosign container image signature" }, optional: null }));
    const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, kp.privateKey, payload));
    const payloadDigest = await blob(img, payload);
    const cfg = enc.encode(JSON.stringify({ rootfs: { type: "layers", diff_ids: [payloadDigest] } }));
    const sigManifest = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: await blob(img, cfg), size: cfg.length }, layers: [{ mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", digest: payloadDigest, size: payload.length, annotations: { "dev.cosignproject.cosign/signature": bytesToBase64(sig) } }] });
    const sigDigest = await put(img, `sha256-${indexDigest.slice(7)}.sig`, sigManifest);

    expect((await admin(`/v2/${img}/manifests/v1`)).status).toBe(200); // verifies and records the index's signature
    expect((await admin(`/v2/${img}/manifests/${childDigest}`)).status).toBe(200);
    // the signature manifest itself is gated (it is a manifest of the repository, and unsigned)
    expect((await admin(`/v2/${img}/manifests/${sigDigest}`)).status).toBe(403);
    // deleting the signature in the same repository drops its attestation: the gate closes again
    expect((await admin(`/v2/${img}/manifests/${sigDigest}`, { method: "DELETE" })).status).toBe(202);
    expect((await admin(`/v2/${img}/manifests/v1`)).status).toBe(403);
    expect((await admin(`/v2/${img}/manifests/${childDigest}`)).status).toBe(403);
  });

  it("the admin API refuses malformed gate rules with 400", async () => {
    for (const bad of [
      { repositories: "a/*", keys: ["k1"], minimum: 2 },
      { repositories: "a/*", keys: [], minimum: 1 },
      { repositories: "a/*", keys: ["K!"], minimum: 1 },
      { repositories: "a/*", keys: ["k1"], minimum: 0 },
    ]) {
      expect((await post("/admin/policies", { id: uid(), kind: "signature-gate", ...bad })).status, JSON.stringify(bad)).toBe(400);
    }
  });
});
