// The deploy gate of issue 15 with a real client: skopeo pushes an image to prod/app; cosign-layout
// signatures (made with node:crypto: ECDSA P-256 DER and Ed25519, base64 in
// dev.cosignproject.cosign/signature) are pushed over HTTP into prod-sigs/app; a link merges them
// into prod/app's referrers; a "2 of {alice, bob}" signature-gate rule refuses the skopeo pull
// with one valid signature, allows it with two, and refuses it again at once when one is deleted.
// Unregistered keys and other digests don't count.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { createHash, generateKeyPairSync, sign, type KeyObject } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { Skopeo, needClients } from "./helpers/exec";
import { request, describe as show } from "./helpers/http";
import { buildLayout, type Layout } from "./helpers/images";

const ADMIN_PW = "e2e-signatures-admin-password";
const admin = { Authorization: `Basic ${Buffer.from(`admin:${ADMIN_PW}`).toString("base64")}` };
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const COSIGN_AT = "application/vnd.dev.cosign.artifact.sig.v1+json";
const sha = (b: Buffer | string) => "sha256:" + createHash("sha256").update(b).digest("hex");

let reg: RunningRegistry;
let skopeo: Skopeo;
let work: string;
let layout: Layout;
let subject: string;
let subjectSize: number;

const clients = needClients("signatures.e2e", ["skopeo", "umoci"]);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-sigs-"));
  const [r, l] = await Promise.all([startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW, SIGNATURE_RECHECK_SECONDS: "86400" } }), buildLayout(join(work, "layout"), work)]);
  reg = r;
  layout = l;
  skopeo = new Skopeo(reg);
});

afterAll(async () => {
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function call(method: string, path: string, body?: Buffer | string, type?: string, expected = 201) {
  const r = await request(reg, method, path, { headers: { ...admin, ...(type ? { "Content-Type": type } : {}) }, body });
  expect(r.status, `${method} ${path}: ${show(r)}`).toBe(expected);
  return r;
}

const keys: Record<string, { kind: "ec" | "ed25519"; privateKey: KeyObject; publicKey: KeyObject }> = {};
function makeKey(name: string, kind: "ec" | "ed25519") {
  const k = kind === "ec" ? generateKeyPairSync("ec", { namedCurve: "P-256" }) : generateKeyPairSync("ed25519");
  keys[name] = { kind, ...k };
}

/** Pushes a cosign simple-signing signature of `digest` by `key` into `repo` (referrers mode, or as the .sig tag). */
async function pushSignature(repo: string, key: string, digest: string, tag: string | null = null) {
  const payload = Buffer.from(JSON.stringify({ critical: { identity: { "docker-reference": `${reg.host}/prod/app` }, image: { "docker-manifest-digest": digest }, type: "cosign container image signature" }, optional: { signer: key } }));
  const k = keys[key];
  const signature = sign(k.kind === "ec" ? "sha256" : null, payload, k.privateKey).toString("base64");
  const config = Buffer.from(JSON.stringify({ architecture: "", config: {}, created: "0001-01-01T00:00:00Z", os: "", rootfs: { type: "layers", diff_ids: [sha(payload)] } }));
  for (const b of [payload, config]) await call("POST", `/v2/${repo}/blobs/uploads/?digest=${sha(b)}`, b, "application/octet-stream");
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: "application/vnd.oci.image.config.v1+json", size: config.length, digest: sha(config) },
    layers: [{ mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", size: payload.length, digest: sha(payload), annotations: { "dev.cosignproject.cosign/signature": signature } }],
  };
  if (!tag) Object.assign(m, { artifactType: COSIGN_AT, subject: { mediaType: OCI_MANIFEST, digest: subject, size: subjectSize } });
  const text = JSON.stringify(m);
  await call("PUT", `/v2/${repo}/manifests/${tag ?? sha(text)}`, text, OCI_MANIFEST);
  return sha(text);
}

const pull = () => skopeo.run("copy", ["--src-creds", `admin:${ADMIN_PW}`, skopeo.ref("prod/app:1"), `oci:${join(work, "pulled")}:x`], { allowFail: true });
type Refs = { manifests: { digest: string; annotations?: Record<string, string> }[] };

describe.skipIf(clients.skip)("signatures across repositories and the signature gate, with skopeo", () => {
  test("deploy gate: 2 of {alice, bob}", async () => {
    const push = await skopeo.run("copy", ["--dest-creds", `admin:${ADMIN_PW}`, `oci:${layout.dir}:amd64`, skopeo.ref("prod/app:1")]);
    expect(push.code).toBe(0);
    const head = await call("HEAD", "/v2/prod/app/manifests/1", undefined, undefined, 200);
    subject = String(head.headers["docker-content-digest"]);
    subjectSize = Number(head.headers["content-length"]);
    expect(subject).toMatch(/^sha256:[0-9a-f]{64}$/);

    makeKey("alice", "ec");
    makeKey("bob", "ed25519");
    makeKey("mallory", "ec");
    for (const name of ["alice", "bob"]) {
      await call("POST", "/admin/trust-keys", JSON.stringify({ name, publicKey: keys[name].publicKey.export({ type: "spki", format: "pem" }) }), "application/json");
    }
    const aliceSig = await pushSignature("prod-sigs/app", "alice", subject);
    await pushSignature("prod-sigs/app", "mallory", subject); // unregistered key
    await pushSignature("prod-sigs/app", "bob", sha("another manifest")); // bob, but over another digest

    // before the link: nothing from prod-sigs
    const refs = `/v2/prod/app/referrers/${subject}`;
    expect(((await call("GET", refs, undefined, undefined, 200)).json() as Refs).manifests).toEqual([]);
    await call("POST", "/admin/policies", JSON.stringify({ id: "prod-sigs", kind: "signature-repository", repositories: "prod/*", target: "prod-sigs/{1}" }), "application/json");
    const merged = (await call("GET", refs, undefined, undefined, 200)).json() as Refs;

    for (const m of merged.manifests) expect(m.annotations?.["dev.cloister.referrer.repository"]).toBe("prod-sigs/app");
    const filtered = (await call("GET", `${refs}?artifactType=${encodeURIComponent(COSIGN_AT)}&annotation=${encodeURIComponent("dev.cloister.referrer.repository=prod-sigs/app")}`, undefined, undefined, 200)).json() as Refs;
    expect(filtered.manifests.map((m) => m.digest)).toContain(aliceSig);

    await call("POST", "/admin/policies", JSON.stringify({ id: "deploy-gate", kind: "signature-gate", repositories: "prod/*", keys: ["alice", "bob"], minimum: 2 }), "application/json");
    const refused = await pull();
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/denied|403/i);
    const head403 = await request(reg, "HEAD", "/v2/prod/app/manifests/1", { headers: admin });
    expect(head403.status).toBe(403);
    const get403 = await request(reg, "GET", "/v2/prod/app/manifests/1", { headers: admin });
    expect(get403.json().errors[0].message).toContain("found 1");

    // bob signs the image, as the .sig tag in prod-sigs (cosign's default layout): two valid signatures
    await pushSignature("prod-sigs/app", "bob", subject, `sha256-${subject.slice(7)}.sig`);
    const allowed = await pull();
    expect(allowed.code, allowed.stderr).toBe(0);
    const att = (await call("GET", `/v2/prod/app/attestations/${subject}`, undefined, undefined, 200)).json() as { attestations: { signer: string | null; verified: boolean }[] };
    expect(att.attestations.filter((a) => a.verified).map((a) => a.signer).sort()).toEqual(["alice", "bob"]);

    // bob's .sig tag is deleted: the gate closes at once (rows never go stale here: SIGNATURE_RECHECK_SECONDS is a day)
    await call("DELETE", `/v2/prod-sigs/app/manifests/sha256-${subject.slice(7)}.sig`, undefined, undefined, 202);
    const closed = await pull();
    expect(closed.code).not.toBe(0);
    expect(closed.stderr).toMatch(/denied|403/i);
    expect((await request(reg, "GET", "/v2/prod/app/manifests/1", { headers: admin })).json().errors[0].message).toContain("found 1");
  });
});
