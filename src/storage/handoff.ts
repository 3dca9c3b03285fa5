// The content-addressed handoff, in ARCHITECTURE order: bytes are in R2 → record the digest and
// its holder in BlobStore (one call) → record membership in the repository's TrustStore (which
// adds the catalog row on first membership). Each step is idempotent, so a crash between steps
// leaves only unreferenced bytes or an extra holder for GC, never a reference to missing bytes.
// GC (docs/adr/0011): a link refused by a GC fence commits once more (resurrecting the digest
// with the offered object, or re-holding it) and links with the new holder sequence.
import type { Env } from "../env";
import { oci } from "../oci/errors";
import { blobStoreFor, trustStoreFor } from "../stores";
import { draftEvent } from "../audit/record";
import { indexedAnnotations, requiredBlobs, requiredManifests, type ParsedManifest } from "../oci/manifest";
import type { CommitResult } from "../stores/blob-store";
import type { LinkResult, PutManifestResult, UploadEnd } from "../stores/trust-store";
import { quotaDenied } from "../gc/quotas";
import { unknownUploadError } from "./upload-ids";

export interface VerifiedObject {
  digest: string;
  size: number;
  r2Key: string;
  /** SHA-256 of the bytes, whatever the claim's algorithm: the dedupe key. */
  contentSha256: string;
}

/**
 * Commit verified bytes as a blob of `repo`. Returns the key that now holds them; when the
 * bytes were already stored, the offered object is redundant and deleted here. `end`: the close
 * of a signed upload, ended in the link's transaction (docs/adr/0013).
 */
export async function commitBlob(env: Env, repo: string, obj: VerifiedObject, opts: { end?: UploadEnd | null } = {}) {
  const result = await blobStoreFor(env, obj.digest).commit(obj, repo);
  return finishCommit(env, repo, obj, result, opts.end ?? null);
}

/**
 * The steps after BlobStore's commit: the membership link (retried once through a new commit
 * when GC fenced the digest meanwhile), then the offered object is deleted if it was redundant —
 * only then, because a retry may need it to resurrect the digest. A refused link gives back what
 * the commit took (abandonCommit).
 */
export async function finishCommit(env: Env, repo: string, obj: VerifiedObject, first: CommitResult, end: UploadEnd | null = null): Promise<CommitResult> {
  let result = first;
  const trust = trustStoreFor(env, repo);
  // The event is written in the link's transaction (docs/adr/0021): no audit call on the request path.
  const event = (r: CommitResult) => draftEvent({ action: "blob.upload", target: { repository: repo, digest: obj.digest }, outcome: { status: 201 }, details: { size: r.size, deduplicated: !r.adoptedOffered } });
  const link = (r: CommitResult): Promise<LinkResult> => trust.link(repo, { digest: obj.digest, kind: "blob", size: r.size, r2Key: r.r2Key, mediaType: null }, r.heldSeq, end, event(r));
  let linked = await link(result);
  if (!linked.ok && "fenced" in linked) {
    result = await blobStoreFor(env, obj.digest).commit(obj, repo);
    linked = await link(result);
    if (!linked.ok && "fenced" in linked) {
      // Fenced twice: GC condemned it again; the client pushes again. Whatever this push holds goes.
      await abandonCommit(env, repo, obj.digest, obj.r2Key, result, false);
      throw gcBusy(obj.digest);
    }
  }
  if (!linked.ok) {
    // Nothing links it here: drop this push's holder and, when it created the row, the row and bytes.
    await abandonCommit(env, repo, obj.digest, obj.r2Key, result, linked.held);
    if ("quota" in linked) throw await quotaDenied(env, repo, linked.quota, obj.digest);
    throw unknownUploadError();
  }
  if (!result.adoptedOffered && result.r2Key !== obj.r2Key) {
    await env.BUCKET.delete(obj.r2Key).catch(() => {});
  }
  return result;
}

/**
 * Give back what a refused push's BlobStore commit took (issue 10): its holder — never when the
 * repository holds the digest as a member already (`held`), which needs that holder — and, when the
 * commit adopted the offered object and nobody else came to hold it, the row and the object, so the
 * refused push leaves nothing stored. A redundant offered object is deleted either way. Best
 * effort: a failure here leaves a holder (collected once the repository lets go of nothing it
 * has) or an object no row names (removed by GC's reconcile), never a reference to missing bytes.
 */
export async function abandonCommit(env: Env, repo: string, digest: string, offeredKey: string, result: CommitResult, held: boolean): Promise<void> {
  const adopted = result.adoptedOffered && result.r2Key === offeredKey;
  try {
    if (held) {
      if (!adopted) await env.BUCKET.delete(offeredKey);
      return;
    }
    const undone = await blobStoreFor(env, digest).abandon(digest, repo, result.touchedAt, adopted ? offeredKey : null);
    if (!adopted || undone.dropped) await env.BUCKET.delete(offeredKey);
  } catch (err) {
    console.error(`undoing the refused push of ${digest} to ${repo} failed`, err);
  }
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
 * Store a validated manifest in two round trips (issue 10): bytes to a key unique to this PUT →
 * BlobStore commit with the holder → one TrustStore transaction that checks the references, the
 * GC fence, the immutable tag and the quota, and writes membership, tag and referrer. A refused
 * PUT then gives back what it took (abandonCommit): the holder, and the row and bytes when it
 * created them, so the final state after a refusal is nothing stored (test/unit/limits.test.ts); a
 * crash in between leaves only an object no row names, which GC's reconcile removes. The stores
 * receive only what they index: digests, sizes, media types, the tag and a referrer's bounded
 * annotations, never the bytes. Throws MANIFEST_BLOB_UNKNOWN naming what is missing.
 */
export async function commitManifest(env: Env, m: ManifestToCommit): Promise<void> {
  const trust = trustStoreFor(env, m.repo);
  const blobs = requiredBlobs(m.parsed).map((d) => d.digest);
  const children = requiredManifests(m.parsed).map((d) => d.digest);
  // A unique key per PUT: a re-push never writes the object GC may be deleting (docs/adr/0011).
  const r2Key = `manifests/sha256/${m.sha256}/${crypto.randomUUID()}`;
  await env.BUCKET.put(r2Key, m.body, { httpMetadata: { contentType: m.parsed.mediaType } });
  const offered = { digest: m.digest, size: m.body.length, r2Key, contentSha256: m.sha256 };
  let stored = await blobStoreFor(env, m.digest).commit(offered, m.repo);
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
    // Written in the put's transaction, which fills in details.previous (docs/adr/0021).
    audit: draftEvent({ action: "manifest.put", target: { repository: m.repo, tag: m.tag, digest: m.digest }, outcome: { status: 201 }, details: { previous: null, mediaType: m.parsed.mediaType, size: m.body.length } }),
  };
  let result: PutManifestResult;
  try {
    // An immutable tag is decided in the transaction that would move it: the store refuses to move
    // an existing tag, the policy is read only then, and the write is repeated when no rule protects it.
    result = await trust.putManifest({ ...input, ifTagMoves: "refuse" });
    if (!result.ok && result.fenced) {
      // GC fenced the digest after our commit: commit again (resurrect or re-hold), then retry.
      stored = await blobStoreFor(env, m.digest).commit(offered, m.repo);
      input.manifest.r2Key = stored.r2Key;
      input.heldSeq = stored.heldSeq;
      result = await trust.putManifest({ ...input, ifTagMoves: "refuse" });
    }
    if (!result.ok && !result.fenced && result.tagIsAt !== null) {
      const rule = (await m.immutableRule?.()) ?? null;
      if (rule === null) result = await trust.putManifest({ ...input, ifTagMoves: "allow" });
      else {
        await abandonCommit(env, m.repo, m.digest, r2Key, stored, result.held);
        throw oci("DENIED", `tag "${m.tag}" in ${m.repo} is immutable (policy rule ${rule}): it cannot be moved to another manifest; push a new tag instead`,
          { repository: m.repo, tag: m.tag, rule, current: result.tagIsAt }, 403);
      }
    }
  } catch (err) {
    // Not answered (a store call failed): keep the object when BlobStore may name it; GC sorts it out.
    if (!stored.adoptedOffered) await env.BUCKET.delete(r2Key).catch(() => {});
    throw err;
  }
  if (!result.ok) {
    await abandonCommit(env, m.repo, m.digest, r2Key, stored, result.held);
    if (result.fenced) throw gcBusy(m.digest);
    if (result.quota) throw await quotaDenied(env, m.repo, result.quota, m.digest);
    throw referencesUnknown(m.repo, result.missingBlobs, result.missingManifests);
  }
  // Redundant when BlobStore already had the bytes; kept until here because a GC fence retry may
  // need it to resurrect the digest.
  if (!stored.adoptedOffered) await env.BUCKET.delete(r2Key).catch(() => {});
}

function referencesUnknown(repo: string, missingBlobs: string[], missingManifests: string[]) {
  const missing = [...missingBlobs.map((d) => `blob ${d}`), ...missingManifests.map((d) => `manifest ${d}`)];
  return oci("MANIFEST_BLOB_UNKNOWN", `manifest references content that is not in repository ${repo}: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ` and ${missing.length - 10} more` : ""}; push it first`, {
    missingBlobs: missingBlobs.slice(0, 100), missingManifests: missingManifests.slice(0, 100),
  });
}
