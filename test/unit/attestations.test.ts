// Verification keys (/admin/trust-keys) and GET /v2/<name>/attestations/<digest>: cosign
// signatures from cloister-spec/signatures/v1/vectors, pushed the way cosign does (a linked
// signature repository, referrers mode and the sha256-<hex>.sig tag), checked against the
// registered keys and recorded in the subject repository's TrustStore.
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import raw from "../../cloister-spec/signatures/v1/vectors/vectors.json";
import { reqWith, sha256 } from "./helpers";
import { trustStoreFor } from "../../src/stores";
import type { Env } from "../../src/env";
import { base64ToBytes } from "../../src/util/encoding";

interface Vectors {
  subject: string;
  subjectManifest: string;
  keys: Record<string, { algorithm: string; registered: boolean; pem: string }>;
  cases: { name: string; manifest: string; manifestDigest: string; blobs: Record<string, string>; expect: { verified: boolean; signer: string | null; reason?: string } }[];
}
const vectors = raw as unknown as Vectors;

const ADMIN_PW = "attestations-admin-password";
const TOKEN = { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW };
const as = (user: string, pw: string) => (path: string, init: RequestInit = {}) => {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `Basic ${btoa(`${user}:${pw}`)}`);
  return reqWith(TOKEN, path, { ...init, headers });
};
const admin = as("admin", ADMIN_PW);
const uid = () => "a" + crypto.randomUUID().replace(/-/g, "").slice(0, 10);
const json = (b: unknown): RequestInit => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(b) });
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const COSIGN_AT = "application/vnd.dev.cosign.artifact.sig.v1+json";

async function blob(repo: string, data: Uint8Array) {
  const d = await sha256(data);
  const r = await admin(`/v2/${repo}/blobs/uploads/?digest=${d}`, { method: "POST", body: data });
  expect(r.status, await r.clone().text()).toBe(201);
}
async function put(repo: string, ref: string, text: string) {
  const r = await admin(`/v2/${repo}/manifests/${ref}`, { method: "PUT", headers: { "Content-Type": OCI_MANIFEST }, body: text });
  expect(r.status, await r.clone().text()).toBe(201);
  return (await sha256(new TextEncoder().encode(text)));
}
/** A vector's signature manifest as cosign's referrers mode pushes it: the same layers, plus subject and artifactType. */
function asReferrer(manifest: string): string {
  const m = JSON.parse(manifest) as Record<string, unknown>;
  return JSON.stringify({ ...m, artifactType: COSIGN_AT, subject: { mediaType: OCI_MANIFEST, digest: vectors.subject, size: vectors.subjectManifest.length } });
}
type Row = { repository: string; signature: string; kind: string; signer: string | null; verified: boolean; reason: string | null };

describe("attestations", () => {
  it("lists each signature of the digest, verified only by a registered key over that digest; keys are admin-managed", async () => {
    const p = uid();
    const img = `${p}/app`;
    const sigs = `${p}-sigs/app`;
    await blob(img, new TextEncoder().encode("{}"));
    expect(await put(img, "v1", vectors.subjectManifest)).toBe(vectors.subject);
    expect((await admin("/admin/policies", json({ id: `${p}-link`, kind: "signature-repository", repositories: `${p}/*`, target: `${p}-sigs/{1}` }))).status).toBe(201);

    // register the keys (names are global: suffix them), refusing junk
    const keyName = (n: string) => `${n}-${p}`;
    for (const [n, k] of Object.entries(vectors.keys)) {
      if (!k.registered) continue;
      const r = await admin("/admin/trust-keys", json({ name: keyName(n), publicKey: k.pem }));
      expect(r.status, await r.clone().text()).toBe(201);
      expect(((await r.json()) as { algorithm: string }).algorithm).toBe(k.algorithm);
    }
    expect((await admin("/admin/trust-keys", json({ name: keyName("alice"), publicKey: vectors.keys.alice.pem }))).status).toBe(409);
    expect((await admin("/admin/trust-keys", json({ name: `junk-${p}`, publicKey: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----" }))).status).toBe(400);
    const listed = (await (await admin("/admin/trust-keys")).json()) as { keys: { name: string }[] };
    expect(listed.keys.map((k) => k.name)).toEqual(expect.arrayContaining([keyName("alice"), keyName("bob")]));

    // push the signatures (the payload-digest-mismatch case cannot exist in a registry: blobs are content-addressed)
    const pushed: Record<string, string> = {};
    for (const v of vectors.cases.filter((c) => c.name !== "alice-payload-digest-mismatch")) {
      for (const b64 of Object.values(v.blobs)) await blob(sigs, base64ToBytes(b64));
      const text = asReferrer(v.manifest);
      pushed[v.name] = await put(sigs, await sha256(new TextEncoder().encode(text)), text);
    }
    // and one in the tag convention, in the image's own repository
    const tagged = vectors.cases.find((c) => c.name === "bob-ed25519")!;
    for (const b64 of Object.values(tagged.blobs)) await blob(img, base64ToBytes(b64));
    await put(img, `sha256-${vectors.subject.slice(7)}.sig`, tagged.manifest);

    const r = await admin(`/v2/${img}/attestations/${vectors.subject}`);
    expect(r.status, await r.clone().text()).toBe(200);
    const rows = ((await r.json()) as { attestations: Row[] }).attestations;
    const bySig = (repo: string, digest: string) => rows.find((x) => x.repository === repo && x.signature === digest);
    for (const v of vectors.cases.filter((c) => c.name !== "alice-payload-digest-mismatch")) {
      const row = bySig(sigs, pushed[v.name]);
      expect(row, v.name).toBeDefined();
      expect(row!.verified, v.name).toBe(v.expect.verified);
      expect(row!.signer, v.name).toBe(v.expect.signer === null ? null : keyName(v.expect.signer));
      if (v.expect.reason) expect(row!.reason, v.name).toContain(v.expect.reason);
    }
    expect(bySig(img, tagged.manifestDigest)).toMatchObject({ kind: "cosign", verified: true, signer: keyName("bob") });
    expect(rows.filter((x) => x.verified).length).toBe(3);

    // recorded in the subject repository's TrustStore
    const stored = await trustStoreFor(env as unknown as Env, img).attestations(img, vectors.subject);
    expect(stored.filter((x) => x.verified).map((x) => x.signer).sort()).toEqual([keyName("alice"), keyName("bob"), keyName("bob")]);

    // a key removed no longer verifies
    expect((await admin(`/admin/trust-keys/${keyName("alice")}`, { method: "DELETE" })).status).toBe(204);
    expect((await admin(`/admin/trust-keys/${keyName("alice")}`, { method: "DELETE" })).status).toBe(404);
    const after = ((await (await admin(`/v2/${img}/attestations/${vectors.subject}`)).json()) as { attestations: Row[] }).attestations;
    expect(after.filter((x) => x.verified).map((x) => x.signer)).toEqual([keyName("bob"), keyName("bob")]);
  });

  it("needs pull on the repository, and hides rows from linked repositories the caller may not pull", async () => {
    const p = uid();
    const user = `${p}u`;
    expect((await admin("/admin/users", json({ name: user, password: `${user}-long-password` }))).status).toBe(201);
    const reader = as(user, `${user}-long-password`);
    const img = `${user}/app`;
    const sigs = `${p}-sigs/app`;
    await blob(img, new TextEncoder().encode("{}"));
    await put(img, "v1", vectors.subjectManifest);
    expect((await admin("/admin/policies", json({ id: `${p}-link`, kind: "signature-repository", repositories: `${user}/*`, target: `${p}-sigs/{1}` }))).status).toBe(201);
    const v = vectors.cases[0];
    for (const b64 of Object.values(v.blobs)) await blob(sigs, base64ToBytes(b64));
    const text = asReferrer(v.manifest);
    await put(sigs, await sha256(new TextEncoder().encode(text)), text);

    expect((await as(`${p}x`, "nobody-password")(`/v2/${img}/attestations/${vectors.subject}`)).status).toBe(401);
    const hidden = ((await (await reader(`/v2/${img}/attestations/${vectors.subject}`)).json()) as { attestations: Row[] }).attestations;
    expect(hidden).toEqual([]);
    expect((await admin("/admin/policies", json({ id: `${p}-pull`, effect: "allow", subjects: `user:${user}`, actions: "pull", repositories: `${p}-sigs/**` }))).status).toBe(201);
    const shown = ((await (await reader(`/v2/${img}/attestations/${vectors.subject}`)).json()) as { attestations: Row[] }).attestations;
    expect(shown.map((x) => x.repository)).toEqual([sigs]);
  });
});
