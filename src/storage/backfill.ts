// Membership backfill for repositories stored before the membership index existed: walk every
// tagged or known manifest (and, through indexes, their children) and make the manifests and the
// blobs they reference members of that repository. Runs lazily on a read miss and as an admin task.
// Each grant records the BlobStore holder first, then the membership (handoff order).
import type { Env } from "../env";
import { blobStoreFor, legacyTrustStore, trustStoreFor } from "../stores";
import { indexedAnnotations, parseManifest, requiredBlobs, requiredManifests } from "../oci/manifest";

export async function backfillRepo(env: Env, repo: string): Promise<{ manifests: number; blobs: number }> {
  const trust = trustStoreFor(env, repo);
  const queue = await trust.backfillRoots(repo);
  const seen = new Set<string>();
  let manifests = 0;
  let blobs = 0;
  while (queue.length) {
    const digest = queue.pop()!;
    if (seen.has(digest)) continue;
    seen.add(digest);
    const stored = await blobStoreFor(env, digest).hold(digest, repo);
    if (!stored) continue; // bytes gone: nothing to grant
    const obj = await env.BUCKET.get(stored.r2Key);
    if (!obj) continue;
    const bytes = new Uint8Array(await obj.arrayBuffer());
    let parsed;
    try {
      parsed = parseManifest(bytes, obj.httpMetadata?.contentType ?? null, { limits: false }); // stored before a limit: keep access
    } catch {
      continue; // not a manifest we can read: grant nothing through it
    }
    for (const d of requiredBlobs(parsed)) {
      const b = await blobStoreFor(env, d.digest).hold(d.digest, repo);
      if (!b) continue;
      await trust.link(repo, { digest: d.digest, kind: "blob", size: b.size, r2Key: b.r2Key, mediaType: null }, b.heldSeq);
      blobs++;
    }
    for (const child of requiredManifests(parsed)) queue.push(child.digest);
    await trust.putManifest({
      repo, manifest: { digest, size: stored.size, r2Key: stored.r2Key, mediaType: parsed.mediaType }, tag: null,
      subject: parsed.subject?.digest ?? null, artifactType: parsed.artifactType ?? null, annotations: indexedAnnotations(parsed),
      requiredBlobs: [], requiredManifests: [], heldSeq: stored.heldSeq,
      refs: [...requiredBlobs(parsed), ...requiredManifests(parsed)].map((x) => x.digest),
    });
    manifests++;
  }
  await trust.finishBackfill(repo);
  return { manifests, blobs };
}

/**
 * Backfill every flagged repository. Only repositories of the pre-schema-3 single index can be
 * flagged (later ones are born with membership), so the legacy object lists the candidates.
 */
export async function backfillAll(env: Env): Promise<Record<string, { manifests: number; blobs: number }>> {
  const out: Record<string, { manifests: number; blobs: number }> = {};
  for (const repo of await legacyTrustStore(env).legacyPendingBackfills()) {
    if (await trustStoreFor(env, repo).needsBackfill(repo)) out[repo] = await backfillRepo(env, repo);
  }
  return out;
}

/** Read a blob membership, backfilling a pre-index repository once on a miss. */
export async function memberBlob(env: Env, repo: string, digest: string) {
  const trust = trustStoreFor(env, repo);
  const got = await trust.blob(repo, digest);
  if (got !== "backfill") return got;
  await backfillRepo(env, repo);
  const again = await trust.blob(repo, digest);
  return again === "backfill" ? null : again;
}

/** Resolve a manifest of `repo`, backfilling a pre-index repository once on a miss. */
export async function memberManifest(env: Env, repo: string, reference: string, isDigest: boolean, pulledDay?: number) {
  const trust = trustStoreFor(env, repo);
  const got = await trust.manifest(repo, reference, isDigest, pulledDay);
  if (got !== "backfill") return got;
  await backfillRepo(env, repo);
  const again = await trust.manifest(repo, reference, isDigest, pulledDay);
  return again === "backfill" ? null : again;
}
