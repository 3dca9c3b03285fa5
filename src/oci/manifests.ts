// /v2/<name>/manifests/<reference>: manifests are stored byte-exact in R2, indexed in BlobStore,
// and made readable per repository in TrustStore. Each PUT writes a unique key
// (manifests/sha256/<hex>/<uuid>): a re-push never writes the object GC may be deleting
// (docs/adr/0011); BlobStore keeps one object per digest and the redundant copy is deleted.
import type { Ctx } from "../app";
import { config } from "../env";
import { oci } from "./errors";
import { isDigestLike, isValidTag, parseDigest, truncate, type ParsedDigest } from "./grammar";
import { acceptable, indexedAnnotations, parseManifest, requiredBlobs, requiredManifests } from "./manifest";
import { blobStoreFor, trustStoreFor } from "../stores";
import { memberManifest } from "../storage/backfill";
import { assertClaim, computeAll } from "../digest/verify";
import { digestPolicy } from "./uploads";
import { deletesDisabled } from "./blobs";
import { tooLarge } from "../storage/ingest";
import { assertManifestDeletable, assertTagMutable } from "../auth";
import { rulesFor } from "../auth/session";
import { immutableRuleFor } from "../auth/policy";
import { deleteManifest } from "../storage/holders";
import { gcBusy } from "../storage/handoff";
import { quotaExceeded } from "../gc/quotas";

type Reference = { tag: string; digest: null } | { tag: null; digest: ParsedDigest };

/**
 * On reads and deletes (`lookup`), a reference that cannot be a tag names nothing: 404, as
 * the reference registry and the conformance suite expect. On PUT it is a client error.
 */
function parseReference(reference: string, lookup = false): Reference {
  if (isDigestLike(reference)) return { tag: null, digest: parseDigest(reference, "manifest digest") };
  if (!isValidTag(reference)) {
    if (lookup) throw manifestUnknown(reference);
    throw oci("MANIFEST_INVALID", `invalid tag "${truncate(reference)}": tags match [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`, { tag: truncate(reference) });
  }
  return { tag: reference, digest: null };
}

export async function get(c: Ctx, name: string, reference: string, head: boolean): Promise<Response> {
  const ref = parseReference(reference, true);
  const m = await memberManifest(c.env, name, ref.digest ? ref.digest.digest : ref.tag!, ref.digest !== null);
  if (!m) throw manifestUnknown(reference);
  const accept = c.req.header("Accept");
  if (!acceptable(accept, m.mediaType)) {
    throw oci("MANIFEST_UNKNOWN", `manifest ${m.digest} is ${m.mediaType}, which the request's Accept header does not include`, { mediaType: m.mediaType });
  }
  const headers = {
    "Content-Type": m.mediaType,
    "Content-Length": String(m.size),
    "Docker-Content-Digest": m.digest,
    ETag: `"${m.digest}"`,
  };
  if (head) return new Response(null, { status: 200, headers });
  const obj = await c.env.BUCKET.get(m.r2Key);
  if (!obj) {
    console.error(`manifest ${m.digest} is indexed but its object ${m.r2Key} is missing`);
    throw oci("INTERNAL", `manifest ${m.digest} is indexed but its bytes are missing; contact the operator`);
  }
  return new Response(obj.body, { status: 200, headers });
}

export async function put(c: Ctx, name: string, reference: string): Promise<Response> {
  const ref = parseReference(reference);
  const body = await readCapped(c, config(c.env).maxManifestBytes);
  const parsed = parseManifest(body, c.req.header("Content-Type"));

  const policy = digestPolicy(c.env, name);
  const computed = computeAll(body, ref.digest, policy);
  let digest = `sha256:${computed.sha256}`;
  if (ref.digest) {
    assertClaim(ref.digest, computed, policy);
    digest = ref.digest.digest;
  }

  // A refused push stores nothing: check every reference before writing a byte. putManifest checks
  // again inside its transaction; only a reference deleted between the two checks can leave the
  // bytes and BlobStore row behind (unreferenced, for GC), never a reference to missing content.
  const trust = trustStoreFor(c.env, name);
  const blobs = requiredBlobs(parsed).map((d) => d.digest);
  const children = requiredManifests(parsed).map((d) => d.digest);
  if (blobs.length || children.length) {
    const pre = await trust.missingReferences(name, blobs, children);
    if (pre.missingBlobs.length || pre.missingManifests.length) throw referencesUnknown(name, pre.missingBlobs, pre.missingManifests);
  }

  // Bytes → BlobStore (digest + holder) → TrustStore. Only what the index needs crosses to the
  // stores (never the manifest's bytes).
  const r2Key = `manifests/sha256/${computed.sha256}/${crypto.randomUUID()}`;
  await c.env.BUCKET.put(r2Key, body, { httpMetadata: { contentType: parsed.mediaType } });
  const offered = { digest, size: body.length, r2Key, contentSha256: computed.sha256! };
  let stored = await blobStoreFor(c.env, digest).commit(offered, name);
  try {
    return await storeManifest();
  } finally {
    // The offered copy is redundant when BlobStore already had the bytes (kept until here: a GC
    // fence retry may need it to resurrect the digest).
    if (!stored.adoptedOffered) await c.env.BUCKET.delete(r2Key).catch(() => {});
  }

  async function storeManifest(): Promise<Response> {
  const input = {
    repo: name,
    manifest: { digest, size: body.length, r2Key: stored.r2Key, mediaType: parsed.mediaType },
    tag: ref.tag,
    subject: parsed.subject ? parsed.subject.digest : null,
    artifactType: parsed.artifactType ?? null,
    annotations: indexedAnnotations(parsed),
    requiredBlobs: blobs,
    requiredManifests: children,
    heldSeq: stored.heldSeq,
  };
  // Immutable tags (docs/auth.md), atomically: the store refuses to move an existing tag; only
  // then are the policy rules consulted, and the write is retried when no rule protects the tag.
  let result = await trust.putManifest({ ...input, ifTagMoves: "refuse" });
  if (!result.ok && result.fenced) {
    // GC fenced the digest after our commit: commit again (resurrect or re-hold), then retry.
    stored = await blobStoreFor(c.env, digest).commit(offered, name);
    input.manifest.r2Key = stored.r2Key;
    input.heldSeq = stored.heldSeq;
    result = await trust.putManifest({ ...input, ifTagMoves: "refuse" });
    if (!result.ok && result.fenced) throw gcBusy(digest);
  }
  if (!result.ok && result.tagIsAt !== null) {
    const rule = immutableRuleFor(await rulesFor(c), name, ref.tag!);
    if (rule) {
      throw oci("DENIED", `tag "${ref.tag}" in ${name} is immutable (policy rule ${rule.id}): it cannot be moved to another manifest; push a new tag instead`,
        { repository: name, tag: ref.tag, rule: rule.id, current: result.tagIsAt }, 403);
    }
    result = await trust.putManifest({ ...input, ifTagMoves: "allow" });
    if (!result.ok && result.fenced) throw gcBusy(digest);
  }
  if (!result.ok && result.quota) throw quotaExceeded(name, result.quota);
  if (!result.ok) throw referencesUnknown(name, result.missingBlobs, result.missingManifests);
  const headers: Record<string, string> = {
    Location: `/v2/${name}/manifests/${digest}`,
    "Docker-Content-Digest": digest,
    "Content-Length": "0",
  };
  if (parsed.subject) headers["OCI-Subject"] = parsed.subject.digest;
  return new Response(null, { status: 201, headers });
  }
}

export async function remove(c: Ctx, name: string, reference: string): Promise<Response> {
  if (!config(c.env).deleteEnabled) throw deletesDisabled();
  const ref = parseReference(reference, true);
  const trust = trustStoreFor(c.env, name);
  if (ref.digest) {
    const d = ref.digest.digest;
    await assertManifestDeletable(c, name, d, () => trust.tagsOf(name, d));
  } else {
    const tag = ref.tag;
    await assertTagMutable(c, name, tag, () => trust.tagDigest(name, tag), null);
  }
  const removed = ref.digest ? await deleteManifest(c.env, name, ref.digest.digest) : await trust.deleteTag(name, ref.tag!);
  if (!removed) throw manifestUnknown(reference);
  return new Response(null, { status: 202, headers: { "Content-Length": "0" } });
}

function referencesUnknown(name: string, missingBlobs: string[], missingManifests: string[]) {
  const missing = [...missingBlobs.map((d) => `blob ${d}`), ...missingManifests.map((d) => `manifest ${d}`)];
  return oci("MANIFEST_BLOB_UNKNOWN", `manifest references content that is not in repository ${name}: ${missing.slice(0, 10).join(", ")}${missing.length > 10 ? ` and ${missing.length - 10} more` : ""}; push it first`, {
    missingBlobs: missingBlobs.slice(0, 100), missingManifests: missingManifests.slice(0, 100),
  });
}

function manifestUnknown(reference: string) {
  return oci("MANIFEST_UNKNOWN", `manifest ${truncate(reference)} is not known to this repository`, { reference: truncate(reference) });
}

/** Read a request body into memory, refusing more than `max` bytes with 413. */
async function readCapped(c: Ctx, max: number): Promise<Uint8Array> {
  const declared = c.req.header("Content-Length");
  if (declared && /^\d+$/.test(declared) && Number(declared) > max) throw manifestTooLarge(max);
  const bodyCap = config(c.env).maxBodyBytes;
  if (bodyCap > 0 && declared && Number(declared) > bodyCap) throw tooLarge(bodyCap);
  const stream = c.req.raw.body;
  if (!stream) throw oci("MANIFEST_INVALID", "manifest body is empty");
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel().catch(() => {});
      throw manifestTooLarge(max);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const ch of chunks) {
    out.set(ch, off);
    off += ch.length;
  }
  return out;
}

function manifestTooLarge(max: number) {
  return oci("TOO_LARGE", `manifest exceeds this registry's limit of ${max} bytes`, { limit: max }, 413);
}
