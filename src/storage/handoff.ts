// The content-addressed handoff, in ARCHITECTURE order: bytes are in R2 → record the digest and
// its holder in BlobStore (one call) → record membership in the repository's TrustStore (which
// adds the catalog row on first membership). Each step is idempotent, so a crash between steps
// leaves only unreferenced bytes or an extra holder for GC, never a reference to missing bytes.
// GC (docs/adr/0011): a link refused by a GC fence commits once more (resurrecting the digest
// with the offered object, or re-holding it) and links with the new holder sequence.
import type { Env } from "../env";
import { oci } from "../oci/errors";
import { blobStoreFor, trustStoreFor } from "../stores";
import { record } from "../audit/record";
import { indexedAnnotations, requiredBlobs, requiredManifests, type ParsedManifest } from "../oci/manifest";
import type { CommitResult } from "../stores/blob-store";
import type { LinkResult } from "../stores/trust-store";
import { quotaDenied } from "../gc/quotas";

export interface VerifiedObject {
  digest: string;
  size: number;
  r2Key: string;
  /** SHA-256 of the bytes, whatever the claim's algorithm: the dedupe key. */
  contentSha256: string;
}

/**
 * Commit verified bytes as a blob of `repo`. Returns the key that now holds them; when the
 * bytes were already stored, the offered object is redundant and deleted here.
 */
export async function commitBlob(env: Env, repo: string, obj: VerifiedObject, kind: "blob" | "manifest" = "blob", mediaType: string | null = null) {
  const result = await blobStoreFor(env, obj.digest).commit(obj, repo);
  return finishCommit(env, repo, obj, result, kind, mediaType);
}

/**
 * The steps after BlobStore's commit: the membership link (retried once through a new commit
 * when GC fenced the digest meanwhile), then the offered object is deleted if it was redundant —
 * only then, because a retry may need it to resurrect the digest.
 */
export async function finishCommit(env: Env, repo: string, obj: VerifiedObject, first: CommitResult, kind: "blob" | "manifest" = "blob", mediaType: string | null = null): Promise<CommitResult> {
  let result = first;
  if (kind === "blob") {
    const since = Date.now();
    const trust = trustStoreFor(env, repo);
    const link = (r: CommitResult): Promise<LinkResult> => trust.link(repo, { digest: obj.digest, kind, size: r.size, r2Key: r.r2Key, mediaType }, r.heldSeq);
    let linked = await link(result);
    if (!linked.ok && "fenced" in linked) {
      result = await blobStoreFor(env, obj.digest).commit(obj, repo);
      linked = await link(result);
      if (!linked.ok && "fenced" in linked) throw gcBusy(obj.digest);
    }
    if (!linked.ok && "quota" in linked) {
      // Nothing links it here: drop this push's holder (GC collects the bytes if nobody else holds them).
      await blobStoreFor(env, obj.digest).release(obj.digest, repo, since + 1).catch(() => {});
      if (!result.adoptedOffered && result.r2Key !== obj.r2Key) await env.BUCKET.delete(obj.r2Key).catch(() => {});
      throw await quotaDenied(env, repo, linked.quota, obj.digest);
    }
  }
  if (!result.adoptedOffered && result.r2Key !== obj.r2Key) {
    await env.BUCKET.delete(obj.r2Key).catch(() => {});
  }
  if (kind === "blob") await record(env, { action: "blob.upload", target: { repository: repo, digest: obj.digest }, outcome: { status: 201 }, details: { size: result.size, deduplicated: !result.adoptedOffered } });
  return result;
}

/** Only reachable when GC fences the same digest twice within one request: the client retries. */
export function gcBusy(digest: string) {
  return oci("BLOB_UPLOAD_INVALID", `blob ${digest} was being garbage-collected while this push linked it; push it again`, { digest }, 409);
}

export interface ManifestToCommit {
  repo: string;
  /** The digest it is stored under (the claim on a PUT by digest, else sha256 of the bytes). */
  digest: string;
  /** Hex SHA-256 of the bytes: the dedupe key (and the prefix of the object's unique key). */
  sha256: string;
  body: Uint8Array;
  parsed: ParsedManifest;
  tag: string | null;
  /** The id of the immutable-tags rule protecting `tag`, or null; asked only when the tag would move. */
  immutableRule?: () => Promise<string | null>;
  /**
   * Proxy namespaces (src/proxy): references are fetched from the upstream only when pulled, so
   * they are recorded for GC liveness but not required to be members yet.
   */
  lazyReferences?: boolean;
}

/**
 * Store a validated manifest: references checked first (a refused push writes nothing), then
 * bytes → BlobStore → TrustStore, whose transaction checks the references again. Only a reference
 * deleted between the two checks can leave the bytes and BlobStore row behind (unreferenced, for
 * GC), never a reference to missing content. The stores receive only what they index: digests,
 * sizes, media types, the tag and a referrer's bounded annotations, never the bytes.
 * Throws MANIFEST_BLOB_UNKNOWN naming what is missing.
 */
export async function commitManifest(env: Env, m: ManifestToCommit): Promise<void> {
  const trust = trustStoreFor(env, m.repo);
  const blobs = requiredBlobs(m.parsed).map((d) => d.digest);
  const children = requiredManifests(m.parsed).map((d) => d.digest);
  if (!m.lazyReferences && (blobs.length || children.length)) {
    const pre = await trust.missingReferences(m.repo, blobs, children);
    if (pre.missingBlobs.length || pre.missingManifests.length) throw referencesUnknown(m.repo, pre.missingBlobs, pre.missingManifests);
  }
  // A unique key per PUT: a re-push never writes the object GC may be deleting (docs/adr/0011).
  const r2Key = `manifests/sha256/${m.sha256}/${crypto.randomUUID()}`;
  await env.BUCKET.put(r2Key, m.body, { httpMetadata: { contentType: m.parsed.mediaType } });
  const offered = { digest: m.digest, size: m.body.length, r2Key, contentSha256: m.sha256 };
  let stored = await blobStoreFor(env, m.digest).commit(offered, m.repo);
  try {
    await storeManifest();
  } finally {
    // Redundant when BlobStore already had the bytes; kept until here because a GC fence retry
    // may need it to resurrect the digest.
    if (!stored.adoptedOffered) await env.BUCKET.delete(r2Key).catch(() => {});
  }

  async function storeManifest(): Promise<void> {
  const input = {
    repo: m.repo,
    manifest: { digest: m.digest, size: m.body.length, r2Key: stored.r2Key, mediaType: m.parsed.mediaType },
    tag: m.tag,
    subject: m.parsed.subject ? m.parsed.subject.digest : null,
    artifactType: m.parsed.artifactType ?? null,
    annotations: indexedAnnotations(m.parsed),
    requiredBlobs: m.lazyReferences ? [] : blobs,
    requiredManifests: m.lazyReferences ? [] : children,
    refs: m.lazyReferences ? [...blobs, ...children] : undefined,
    heldSeq: stored.heldSeq,
  };
  // An immutable tag is decided in the transaction that would move it: the store refuses to move an
  // existing tag, the policy is read only then, and the write is repeated when no rule protects it.
  let result = await trust.putManifest({ ...input, ifTagMoves: "refuse" });
  if (!result.ok && result.fenced) {
    // GC fenced the digest after our commit: commit again (resurrect or re-hold), then retry.
    stored = await blobStoreFor(env, m.digest).commit(offered, m.repo);
    input.manifest.r2Key = stored.r2Key;
    input.heldSeq = stored.heldSeq;
    result = await trust.putManifest({ ...input, ifTagMoves: "refuse" });
    if (!result.ok && result.fenced) throw gcBusy(m.digest);
  }
  if (!result.ok && result.tagIsAt !== null) {
    const rule = (await m.immutableRule?.()) ?? null;
    if (rule !== null) {
      throw oci("DENIED", `tag "${m.tag}" in ${m.repo} is immutable (policy rule ${rule}): it cannot be moved to another manifest; push a new tag instead`,
        { repository: m.repo, tag: m.tag, rule, current: result.tagIsAt }, 403);
    }
    result = await trust.putManifest({ ...input, ifTagMoves: "allow" });
    if (!result.ok && result.fenced) throw gcBusy(m.digest);
  }
  if (!result.ok && result.quota) throw await quotaDenied(env, m.repo, result.quota, m.digest);
  if (!result.ok) throw referencesUnknown(m.repo, result.missingBlobs, result.missingManifests);
  await record(env, { action: "manifest.put", target: { repository: m.repo, tag: m.tag, digest: m.digest }, outcome: { status: 201 }, details: { previous: result.previousTagDigest, mediaType: m.parsed.mediaType, size: m.body.length } });
  }
}

function referencesUnknown(repo: string, missingBlobs: string[], missingManifests: string[]) {
  const missing = [...missingBlobs.map((d) => `blob ${d}`), ...missingManifests.map((d) => `manifest ${d}`)];
  return oci("MANIFEST_BLOB_UNKNOWN", `manifest references content that is not in repository ${repo}: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ` and ${missing.length - 10} more` : ""}; push it first`, {
    missingBlobs: missingBlobs.slice(0, 100), missingManifests: missingManifests.slice(0, 100),
  });
}
