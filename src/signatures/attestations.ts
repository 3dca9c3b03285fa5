// GET /v2/<name>/attestations/<digest> (cloister extension, cloister-spec/signatures/v1): what
// attests a digest. Each signature among the merged referrers (this repository and every linked
// one, whoever asks) is checked against the registered keys; the results replace the subject's
// attestation rows in this repository's TrustStore, and the caller sees the rows whose signature
// lives in a repository it may pull.
import type { Ctx } from "../app";
import { parseDigest } from "../oci/grammar";
import { COSIGN_SIGNATURE_ARTIFACT_TYPE, mergedReferrers, REFERRER_REPOSITORY_ANNOTATION } from "../oci/referrers";
import { trustStoreFor } from "../stores";
import { ATTESTATIONS_MAX, type AttestationRecord } from "../stores/trust-store";
import { storeOf } from "../auth/session";
import { mayPull } from "../auth";
import { record } from "../audit/record";
import { importPublicKeyPem, MAX_PAYLOAD_BYTES, verifySimpleSigning, type KeyAlgorithm, type VerificationKey } from "./verify";

export const NOTATION_SIGNATURE_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature";
/** Signature manifests checked per request (each costs up to three store calls and two R2 reads). */
export const MAX_ATTESTED_SIGNATURES = 50;
/** Largest signature manifest read (cosign's are under 2 KiB). */
export const MAX_SIGNATURE_MANIFEST_BYTES = 1024 * 1024;

/** The registered keys, imported; a stored key that no longer imports is skipped. */
export async function verificationKeys(c: Ctx): Promise<VerificationKey[]> {
  const out: VerificationKey[] = [];
  for (const k of await storeOf(c).trustKeys()) {
    try {
      const { algorithm, key } = await importPublicKeyPem(k.pem);
      out.push({ name: k.name, algorithm: algorithm as KeyAlgorithm, key });
    } catch {
      console.error(`cloister: registered key ${k.name} no longer imports; skipped`);
    }
  }
  return out;
}

async function readObject(c: Ctx, r2Key: string, size: number, max: number): Promise<Uint8Array | null> {
  if (size > max) return null;
  const obj = await c.env.BUCKET.get(r2Key);
  return obj ? new Uint8Array(await obj.arrayBuffer()) : null;
}

/** Verifies every signature of `subject` visible from `name` through links and returns the rows. */
export async function attest(c: Ctx, name: string, subject: string): Promise<AttestationRecord[]> {
  const { window } = await mergedReferrers(c, name, subject, null, [], MAX_ATTESTED_SIGNATURES, null, async () => true);
  const sigs = window.filter((d) => d.artifactType === COSIGN_SIGNATURE_ARTIFACT_TYPE || d.artifactType === NOTATION_SIGNATURE_ARTIFACT_TYPE);
  if (!sigs.length) return [];
  const keys = await verificationKeys(c);
  const now = Date.now();
  const rows: AttestationRecord[] = [];
  for (const d of sigs) {
    const source = d.annotations?.[REFERRER_REPOSITORY_ANNOTATION] ?? name;
    const row = (kind: string, payload: string, verified: boolean, signer: string | null, reason: string | null) =>
      rows.push({ source, signature: d.digest, payload, kind, signer, verified, reason, verifiedAt: now });
    if (d.artifactType === NOTATION_SIGNATURE_ARTIFACT_TYPE) {
      row("notation", "", false, null, "notation signatures are recorded, not verified");
      continue;
    }
    const store = trustStoreFor(c.env, source);
    const m = await store.manifest(source, d.digest, true);
    const bytes = m && m !== "backfill" ? await readObject(c, m.r2Key, m.size, MAX_SIGNATURE_MANIFEST_BYTES) : null;
    if (!bytes) {
      row("cosign", "", false, null, `signature manifest missing or over ${MAX_SIGNATURE_MANIFEST_BYTES} bytes`);
      continue;
    }
    const checks = await verifySimpleSigning(bytes, subject, keys, async (p) => {
      const b = await store.blob(source, p);
      return b && b !== "backfill" ? readObject(c, b.r2Key, b.size, MAX_PAYLOAD_BYTES) : null;
    });
    if (!checks.length) row("cosign", "", false, null, "no cosign simple-signing layer");
    for (const ch of checks) row("cosign", ch.payload, ch.verified, ch.signer, ch.reason);
  }
  return rows.slice(0, ATTESTATIONS_MAX);
}

/** Verifies and records the attestations of `subject` in `name`; an audit event when the verified set changed. */
export async function attestAndRecord(c: Ctx, name: string, subject: string): Promise<AttestationRecord[]> {
  const rows = await attest(c, name, subject);
  const r = await trustStoreFor(c.env, name).recordAttestations(name, subject, rows);
  if (r.changed) {
    const verified = rows.filter((x) => x.verified).map((x) => ({ repository: x.source, signature: x.signature, signer: x.signer }));
    await record(c.env, { action: "attestation.record", target: { repository: name, digest: subject }, details: { verified: verified.slice(0, 20), total: rows.length } }, "background");
  }
  return rows;
}

export async function list(c: Ctx, name: string, digestParam: string): Promise<Response> {
  const { digest } = parseDigest(digestParam, "subject digest");
  const rows = await attestAndRecord(c, name, digest);
  const readable = new Map<string, boolean>([[name, true]]);
  const visible: AttestationRecord[] = [];
  for (const r of rows) {
    if (!readable.has(r.source)) readable.set(r.source, await mayPull(c, r.source));
    if (readable.get(r.source)) visible.push(r);
  }
  return c.json({
    subject: digest,
    attestations: visible.map((r) => ({ repository: r.source, signature: r.signature, payload: r.payload || null, kind: r.kind, signer: r.signer, verified: r.verified, reason: r.reason, verifiedAt: new Date(r.verifiedAt).toISOString() })),
  });
}
