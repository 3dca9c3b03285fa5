#!/usr/bin/env node
// Generates cloister-spec/signatures/v1/vectors/vectors.json: cosign simple-signing signatures in
// cosign's exact layout (payload JSON, ASN.1 DER ECDSA or raw Ed25519 signature, base64 in the
// layer annotation dev.cosignproject.cosign/signature), made with Node's crypto.
// Keys are fresh on every run and ECDSA signatures are randomised, so a re-run gives new bytes;
// the committed file is what tests verify (test/unit/signature-verify.test.ts). Usage: node gen-vectors.mjs
import { createHash, generateKeyPairSync, sign } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const sha = (b) => "sha256:" + createHash("sha256").update(b).digest("hex");
const b64 = (b) => Buffer.from(b).toString("base64");

const pair = (kind) => (kind === "ed25519" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "P-256" }));
const keys = { alice: ["ecdsa-p256", pair("ecdsa-p256")], bob: ["ed25519", pair("ed25519")], mallory: ["ecdsa-p256", pair("ecdsa-p256")] };
// cosign signs ECDSA over SHA-256 of the payload with a DER signature, Ed25519 over the payload itself.
const signWith = (name, payload) => {
  const [alg, { privateKey }] = keys[name];
  return sign(alg === "ed25519" ? null : "sha256", payload, privateKey);
};

// The subject is a real (pushable) manifest: an empty-config artifact.
const EMPTY = Buffer.from("{}");
const artifact = (title) => JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", artifactType: "application/vnd.example.signed", config: { mediaType: "application/vnd.oci.empty.v1+json", digest: sha(EMPTY), size: 2 }, layers: [], annotations: { "org.opencontainers.image.title": title } });
const subjectManifest = artifact("cloister signatures/v1 subject");
const subject = sha(Buffer.from(subjectManifest));
const other = sha(Buffer.from(artifact("cloister signatures/v1 another manifest")));
const payloadFor = (digest) =>
  Buffer.from(JSON.stringify({ critical: { identity: { "docker-reference": "registry.example.com/prod/app" }, image: { "docker-manifest-digest": digest }, type: "cosign container image signature" }, optional: null }));

/** A signature manifest as cosign writes it: one simple-signing layer, config listing its diff_id. */
function signatureManifest(payload, signature, layerDigest = sha(payload)) {
  const config = Buffer.from(JSON.stringify({ architecture: "", config: {}, created: "0001-01-01T00:00:00Z", history: [{ created: "0001-01-01T00:00:00Z" }], os: "", rootfs: { type: "layers", diff_ids: [layerDigest] } }));
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", size: config.length, digest: sha(config) },
    layers: [{ mediaType: "application/vnd.dev.cosign.simplesigning.v1+json", size: payload.length, digest: layerDigest, annotations: { "dev.cosignproject.cosign/signature": b64(signature) } }],
  });
  return { manifest, config };
}

const cases = [];
function add(name, description, payload, signature, expect, opts = {}) {
  const { manifest, config } = signatureManifest(opts.signedPayload ?? payload, signature, opts.layerDigest);
  const blobs = { [sha(config)]: b64(config), [opts.layerDigest ?? sha(opts.signedPayload ?? payload)]: b64(opts.servedPayload ?? opts.signedPayload ?? payload) };
  cases.push({ name, description, manifest, manifestDigest: sha(Buffer.from(manifest)), blobs, expect });
}

const p = payloadFor(subject);
add("alice-ecdsa-p256", "ECDSA P-256 signature by a registered key over the subject", p, signWith("alice", p), { verified: true, signer: "alice" });
add("bob-ed25519", "Ed25519 signature by a registered key over the subject", p, signWith("bob", p), { verified: true, signer: "bob" });
add("mallory-unregistered", "valid signature by a key that is not registered", p, signWith("mallory", p), { verified: false, signer: null, reason: "no registered key" });
const q = payloadFor(other);
add("alice-other-digest", "valid signature by a registered key over another digest", q, signWith("alice", q), { verified: false, signer: null, reason: "not " + subject });
const tampered = Buffer.from(p.toString().replace("registry.example.com", "registry.example.org"));
add("alice-tampered-payload", "payload changed after signing (layer digest matches the changed bytes)", tampered, signWith("alice", p), { verified: false, signer: null, reason: "no registered key" });
add("alice-payload-digest-mismatch", "payload served does not hash to the layer digest", p, signWith("alice", p), { verified: false, signer: null, reason: "do not match" }, { servedPayload: tampered });

const out = {
  description: "cosign simple-signing signature vectors for cloister-spec/signatures/v1. Registered keys: those with registered=true.",
  subject,
  subjectManifest,
  keys: Object.fromEntries(Object.entries(keys).map(([name, [algorithm, { publicKey }]]) => [name, { algorithm, registered: name !== "mallory", pem: publicKey.export({ type: "spki", format: "pem" }) }])),
  cases,
};
mkdirSync(join(here, "vectors"), { recursive: true });
writeFileSync(join(here, "vectors", "vectors.json"), JSON.stringify(out, null, 2) + "\n");
console.log(`wrote ${cases.length} cases to vectors/vectors.json`);
