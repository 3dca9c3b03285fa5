// The content-addressed handoff, in ARCHITECTURE order: bytes are in R2 → record the digest in
// BlobStore → record membership in TrustStore. Each step is idempotent, so a crash between
// steps leaves only unreferenced bytes for GC, never a reference to missing bytes.
import type { Env } from "../env";
import { blobStoreFor, trustStoreFor } from "../stores";
import { indexedAnnotations, requiredBlobs, requiredManifests, type ParsedManifest } from "../oci/manifest";
import { oci } from "../oci/errors";

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
  const result = await blobStoreFor(env, obj.digest).commit(obj);
  if (!result.adoptedOffered && result.r2Key !== obj.r2Key) {
    await env.BUCKET.delete(obj.r2Key).catch(() => {});
  }
  if (kind === "blob") {
    await trustStoreFor(env, repo).link(repo, { digest: obj.digest, kind, size: result.size, r2Key: result.r2Key, mediaType });
  }
  return result;
}

export interface ManifestToCommit {
  repo: string;
  /** The digest it is stored under (the claim on a PUT by digest, else sha256 of the bytes). */
  digest: string;
  /** Hex SHA-256 of the bytes: the content-addressed R2 key and the dedupe key. */
  sha256: string;
  body: Uint8Array;
  parsed: ParsedManifest;
  tag: string | null;
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
  if (blobs.length || children.length) {
    const pre = await trust.missingReferences(m.repo, blobs, children);
    if (pre.missingBlobs.length || pre.missingManifests.length) throw referencesUnknown(m.repo, pre.missingBlobs, pre.missingManifests);
  }
  const r2Key = `manifests/sha256/${m.sha256}`; // content-addressed: a re-push overwrites in place
  await env.BUCKET.put(r2Key, m.body, { httpMetadata: { contentType: m.parsed.mediaType } });
  const stored = await blobStoreFor(env, m.digest).commit({ digest: m.digest, size: m.body.length, r2Key, contentSha256: m.sha256 });
  const result = await trust.putManifest({
    repo: m.repo,
    manifest: { digest: m.digest, size: m.body.length, r2Key: stored.r2Key, mediaType: m.parsed.mediaType },
    tag: m.tag,
    subject: m.parsed.subject ? m.parsed.subject.digest : null,
    artifactType: m.parsed.artifactType ?? null,
    annotations: indexedAnnotations(m.parsed),
    requiredBlobs: blobs,
    requiredManifests: children,
  });
  if (!result.ok) throw referencesUnknown(m.repo, result.missingBlobs, result.missingManifests);
}

function referencesUnknown(repo: string, missingBlobs: string[], missingManifests: string[]) {
  const missing = [...missingBlobs.map((d) => `blob ${d}`), ...missingManifests.map((d) => `manifest ${d}`)];
  return oci("MANIFEST_BLOB_UNKNOWN", `manifest references content that is not in repository ${repo}: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ` and ${missing.length - 10} more` : ""}; push it first`, {
    missingBlobs: missingBlobs.slice(0, 100), missingManifests: missingManifests.slice(0, 100),
  });
}
