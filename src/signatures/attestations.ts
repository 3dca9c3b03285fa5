// GET /v2/<name>/attestations/<digest> (cloister extension, cloister-spec/signatures/v1): what
// attests a digest. Each signature among the merged referrers (this repository and every linked
// one, whoever asks) is checked against the registered keys; the results replace the subject's
// attestation rows in this repository's TrustStore, and the caller sees the rows whose signature
// lives in a repository it may pull.
// The rows are kept current by events (ADR 0019, "Session 4"): a signature push records them in
// the background, a signature delete drops them, a key delete revokes them.
import type { Ctx } from "../app";
import { parseDigest } from "../oci/grammar";
import { COSIGN_SIGNATURE_ARTIFACT_TYPE, mergedReferrers, REFERRER_REPOSITORY_ANNOTATION } from "../oci/referrers";
import { trustStoreFor } from "../stores";
import { ATTESTATIONS_MAX, type AttestationRecord } from "../stores/trust-store";
import { rulesFor, storeOf } from "../auth/session";
import { mayPull } from "../auth";
import { parseRule, reverseLinkedRepositories, type Rule } from "../auth/policy";
import { accountStoreFor } from "../stores";
import { recordMany } from "../audit/record";
import type { EventInput } from "../audit/events";
import type { Env } from "../env";
import { SQL_IN_BATCH } from "../oci/limits";
import { isValidName } from "../oci/grammar";
import type { ParsedManifest } from "../oci/manifest";
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
      out.push({ name: k.name, algorithm: algorithm as KeyAlgorithm, key, gen: k.gen });
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
    const row = (kind: string, payload: string, verified: boolean, signer: string | null, reason: string | null, signerGen = 0) =>
      rows.push({ source, signature: d.digest, payload, kind, signer, verified, reason, verifiedAt: now, signerGen });
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
    for (const ch of checks) row("cosign", ch.payload, ch.verified, ch.signer, ch.reason, ch.signerGen ?? 0);
  }
  return rows.slice(0, ATTESTATIONS_MAX);
}

/**
 * Verifies and records the attestations of `subject` in `name`; an audit event when the verified
 * set changed. The keys that verified are noted in the AccountStore first (so a key delete knows
 * to revoke here), which also answers which of them are still registered: a key deleted while this
 * pass ran does not count.
 */
export async function attestAndRecord(c: Ctx, name: string, subject: string, trigger: "push" | "listing" | "pull" = "listing"): Promise<AttestationRecord[]> {
  let rows = await attest(c, name, subject);
  const used = new Map<string, number>();
  for (const r of rows) if (r.verified && r.signer !== null) used.set(r.signer, r.signerGen ?? 0);
  if (used.size) {
    const live = new Set(await storeOf(c).noteTrustKeyUses(name, [...used].map(([k, gen]) => ({ name: k, gen }))));
    rows = rows.map((r) => (r.verified && r.signer !== null && !live.has(r.signer) ? { ...r, verified: false, reason: `key ${r.signer} was deleted` } : r));
  }
  const r = await trustStoreFor(c.env, name).recordAttestations(name, subject, rows);
  if (r.changed) {
    const verified = rows.filter((x) => x.verified).map((x) => ({ repository: x.source, signature: x.signature, signer: x.signer }));
    await record(c.env, { action: "attestation.record", target: { repository: name, digest: subject }, details: { trigger, verified: verified.slice(0, 20), total: rows.length } }, "background");
  }
  return rows;
}

// ---- events: a signature pushed or deleted ------------------------------------------------------

const SIG_TAG_RE = /^sha256-([0-9a-f]{64})\.sig$/;

/**
 * The digests a pushed manifest is a signature of, as attest() counts signatures: a referrer with
 * a cosign or notation artifactType (its subject), and a manifest tagged `sha256-<hex>.sig`.
 */
export function signatureSubjects(parsed: ParsedManifest, tag: string | null): string[] {
  const out: string[] = [];
  if (parsed.subject && (parsed.artifactType === COSIGN_SIGNATURE_ARTIFACT_TYPE || parsed.artifactType === NOTATION_SIGNATURE_ARTIFACT_TYPE)) out.push(parsed.subject.digest);
  const m = tag === null ? null : SIG_TAG_RE.exec(tag);
  if (m && !out.includes(`sha256:${m[1]}`)) out.push(`sha256:${m[1]}`);
  return out;
}

/** `repo` and the image repositories whose links name it: where a signature stored in `repo` counts. */
async function countsIn(c: Ctx, repo: string): Promise<string[]> {
  return [repo, ...reverseLinkedRepositories(await rulesFor(c), repo, isValidName)];
}

/** Runs `work` after the response (waitUntil), or inline when there is no execution context. */
function background(c: Ctx, what: string, work: () => Promise<void>): Promise<void> {
  const p = work().catch((e) => console.error(JSON.stringify({ type: "attestation-background", what, error: String(e) })));
  try {
    c.executionCtx.waitUntil(p);
    return Promise.resolve();
  } catch {
    return p;
  }
}

/**
 * A signature manifest was committed to `repo`: verify it and record the subject's rows in `repo`
 * and in every repository linked to it, after the response. The push never waits for or fails on
 * verification; if this is lost (a crash), the rows are missing, which only keeps a gate shut
 * until a gated pull re-verifies (gate.ts), never opens one.
 */
export function afterSignaturePush(c: Ctx, repo: string, parsed: ParsedManifest, tag: string | null): Promise<void> {
  const subjects = signatureSubjects(parsed, tag);
  if (!subjects.length) return Promise.resolve();
  return background(c, `push ${repo}`, async () => {
    for (const target of await countsIn(c, repo)) {
      for (const subject of subjects) await attestAndRecord(c, target, subject, "push");
    }
  });
}

/**
 * Before manifest `digest` (or only its `sha256-<hex>.sig` tag, `subject` set) leaves `repo`: drop
 * the rows it gave in the repositories linked to `repo`, awaited, so a gate closes when the delete
 * answers. Done before the delete: a crash in between leaves a signature without rows, which a
 * gated pull re-verifies, never rows without a signature. `repo`'s own rows go in the delete's
 * transaction (TrustStore.deleteManifest); for a tag, here too.
 */
export async function beforeSignatureDelete(c: Ctx, repo: string, digest: string, subject: string | null = null): Promise<void> {
  const targets = subject === null ? reverseLinkedRepositories(await rulesFor(c), repo, isValidName) : await countsIn(c, repo);
  for (const target of targets) {
    const { subjects } = await trustStoreFor(c.env, target).dropAttestationsFrom(target, repo, digest, subject);
    for (const s of subjects) {
      await record(c.env, { action: "attestation.revoke", target: { repository: target, digest: s }, details: { reason: subject === null ? "signature deleted" : "signature tag deleted", source: repo, signature: digest } }, "background");
    }
  }
}

/** The subject a `sha256-<hex>.sig` tag names, or null for any other tag. */
export function signatureTagSubject(tag: string): string | null {
  const m = SIG_TAG_RE.exec(tag);
  return m ? `sha256:${m[1]}` : null;
}

/**
 * Retention (GC phase 1) deleted manifests or tags of `repo` outside any request: drop the rows
 * they gave, in `repo` and in the image repositories linked to it, as a DELETE would. Best effort:
 * a failure is logged and left to SIGNATURE_RECHECK_SECONDS (the GC run goes on; the deletions
 * stand either way).
 */
export async function afterRetention(env: Env, repo: string, r: { tags: { tag: string; digest: string }[]; manifests: { digest: string }[] }): Promise<void> {
  const tags = r.tags.map((t) => ({ subject: signatureTagSubject(t.tag), digest: t.digest })).filter((t): t is { subject: string; digest: string } => t.subject !== null);
  if (!r.manifests.length && !tags.length) return;
  try {
    const rules: Rule[] = [];
    for (const text of await accountStoreFor(env).rules()) {
      try {
        rules.push(parseRule(JSON.parse(text)));
      } catch {
        // an invalid stored rule: the auth layer logs it
      }
    }
    const digests = r.manifests.map((m) => m.digest);
    const events: EventInput[] = [];
    for (const target of [repo, ...reverseLinkedRepositories(rules, repo, isValidName)]) {
      const store = trustStoreFor(env, target);
      let dropped = 0;
      for (let i = 0; i < digests.length; i += SQL_IN_BATCH) dropped += (await store.dropAttestationsFromMany(target, repo, digests.slice(i, i + SQL_IN_BATCH))).dropped;
      for (const t of tags) dropped += (await store.dropAttestationsFrom(target, repo, t.digest, t.subject)).subjects.length;
      if (dropped) events.push({ action: "attestation.revoke", principal: "gc:retention", target: { repository: target }, details: { reason: "retention deleted signatures", source: repo, rows: dropped } });
    }
    if (events.length) await recordMany(env, events);
  } catch (e) {
    console.error(JSON.stringify({ type: "attestation-retention", repository: repo, error: String(e) }));
  }
}

/** Repositories revoked per AccountStore page while sweeping a deleted key. */
const REVOKE_PAGE = 50;
/**
 * Most repositories one key-delete request revokes in (one TrustStore call each, plus two
 * AccountStore calls and one audit append per page of 50: well under a Worker's subrequest limit);
 * the rest wait for the DELETE to be repeated.
 */
export const MAX_KEY_REVOCATIONS_PER_REQUEST = 500;

/**
 * Trust key `name` was deleted: in every repository holding rows it verified (noted by
 * attestAndRecord), those rows stop counting now. Pages through the AccountStore's list, revoking
 * REVOKE_PAGE repositories at a time and crossing each page off only once done, so a crash leaves
 * the rest listed for the next DELETE of that name. Answers how many repositories are still pending.
 */
export async function revokeKey(c: Ctx, name: string): Promise<{ repositories: number; rows: number; pending: boolean }> {
  const store = storeOf(c);
  let repositories = 0;
  let rows = 0;
  while (repositories < MAX_KEY_REVOCATIONS_PER_REQUEST) {
    const page = await store.pendingKeyRevocations(name, REVOKE_PAGE);
    if (!page.length) return { repositories, rows, pending: false };
    const results = await Promise.all(page.map((p) => trustStoreFor(c.env, p.repo).revokeSigner(p.repo, name, p.gen)));
    const events: EventInput[] = [];
    for (const [i, r] of results.entries()) {
      if (r.revoked > 0) events.push({ action: "attestation.revoke", target: { repository: page[i].repo }, details: { reason: "key deleted", key: name, rows: r.revoked } });
      rows += r.revoked;
    }
    if (events.length) await recordMany(c.env, events); // one append per page, durable before the answer
    await store.finishKeyRevocations(name, page);
    repositories += page.length;
  }
  return { repositories, rows, pending: (await store.pendingKeyRevocations(name, 1)).length > 0 };
}

export async function list(c: Ctx, name: string, digestParam: string): Promise<Response> {
  const { digest } = parseDigest(digestParam, "subject digest");
  const rows = await attestAndRecord(c, name, digest, "listing");
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
