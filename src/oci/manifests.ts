// /v2/<name>/manifests/<reference>: manifests are stored byte-exact in R2 under a per-PUT
// unique key (docs/adr/0011), indexed in BlobStore, and made readable per repository in TrustStore
// (the handoff is storage/handoff.ts commitManifest).
import type { Ctx } from "../app";
import { config } from "../env";
import { readStreamCapped } from "../http/body";
import { oci } from "./errors";
import { isDigestLike, isValidTag, parseDigest, truncate, type ParsedDigest } from "./grammar";
import { acceptable, parseManifestSliced } from "./manifest";
import { trustStoreFor } from "../stores";
import { commitManifest } from "../storage/handoff";
import { assertClaim, computeAllSliced } from "../digest/verify";
import { digestPolicy } from "./uploads";
import { deletesDisabled } from "./blobs";
import { tooLarge } from "../storage/ingest";
import { assertManifestDeletable, assertTagMutable } from "../auth";
import { draftEvent, pullAudited, record } from "../audit/record";
import { rulesFor } from "../auth/session";
import { immutableRuleFor } from "../auth/policy";
import { deleteManifest } from "../storage/holders";
import { proxyManifest, STALE_HEADER } from "../proxy/pull";
import { pullDay } from "../stores/trust-store";
import { gatedMemberManifest } from "../signatures/gate";
import { afterSignaturePush, beforeSignatureDelete, signatureTagSubject } from "../signatures/attestations";

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
  // A GET is a pull (GC's unpulled-days retention): the lookup stamps the day, HEAD does not.
  const pulledDay = head ? undefined : pullDay();
  const proxied = await proxyManifest(c.env, name, { tag: ref.tag, digest: ref.digest?.digest ?? null }, pulledDay);
  const m = await gatedMemberManifest(c, name, ref.digest ? ref.digest.digest : ref.tag!, ref.digest !== null, { known: proxied?.manifest, pulledDay });
  if (!m) throw manifestUnknown(reference);
  const accept = c.req.header("Accept");
  if (!acceptable(accept, m.mediaType)) {
    throw oci("MANIFEST_UNKNOWN", `manifest ${m.digest} is ${m.mediaType}, which the request's Accept header does not include`, { mediaType: m.mediaType });
  }
  const headers: Record<string, string> = {
    "Content-Type": m.mediaType,
    "Content-Length": String(m.size),
    "Docker-Content-Digest": m.digest,
    ETag: `"${m.digest}"`,
  };
  if (proxied?.stale) headers[STALE_HEADER] = proxied.stale;
  if (head) return new Response(null, { status: 200, headers });
  if (pullAudited(c.env)) void record(c.env, { action: "pull.manifest", target: { repository: name, tag: ref.tag, digest: m.digest } }, "background");
  const obj = await c.env.BUCKET.get(m.r2Key);
  if (!obj) {
    console.error(`manifest ${m.digest} is indexed but its object ${m.r2Key} is missing`);
    throw oci("INTERNAL", `manifest ${m.digest} is indexed but its bytes are missing; contact the operator`);
  }
  return new Response(obj.body, { status: 200, headers });
}

export async function put(c: Ctx, name: string, reference: string): Promise<Response> {
  const ref = parseReference(reference);
  const cfg = config(c.env);
  const body = await readCapped(c, cfg.maxManifestBytes);
  // Sliced: a 15 MB manifest's parse and hash give the thread back every few ms (docs/adr/0022).
  const parsed = await parseManifestSliced(body, c.req.header("Content-Type"), { maxReferences: cfg.maxManifestReferences });

  const policy = digestPolicy(c.env, name);
  const computed = await computeAllSliced(body, ref.digest, policy);
  let digest = `sha256:${computed.sha256}`;
  if (ref.digest) {
    assertClaim(ref.digest, computed, policy);
    digest = ref.digest.digest;
  }

  // Immutable tags (docs/auth.md) are decided inside the tag write (commitManifest); the policy is
  // read only when that write finds the tag pointing elsewhere.
  const tag = ref.tag;
  const immutableRule = async () => (tag === null ? null : immutableRuleFor(await rulesFor(c), name, tag)?.id ?? null);
  await commitManifest(c.env, { repo: name, digest, sha256: computed.sha256!, body, parsed, tag, immutableRule });
  // A signature: its attestation rows are recorded after the response (docs/signatures.md).
  await afterSignaturePush(c, name, parsed, tag);
  const headers: Record<string, string> = {
    Location: `/v2/${name}/manifests/${digest}`,
    "Docker-Content-Digest": digest,
    "Content-Length": "0",
  };
  if (parsed.subject) headers["OCI-Subject"] = parsed.subject.digest;
  return new Response(null, { status: 201, headers });
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
  // Rows a signature gave in linked repositories go first, so the gate closes when this answers.
  if (ref.digest) await beforeSignatureDelete(c, name, ref.digest.digest);
  else {
    const signed = signatureTagSubject(ref.tag!);
    const at = signed === null ? null : await trust.tagDigest(name, ref.tag!);
    if (at !== null) await beforeSignatureDelete(c, name, at, signed);
  }
  // Each delete's audit event is written in the store's transaction (docs/adr/0021).
  const removed = ref.digest
    ? await deleteManifest(c.env, name, ref.digest.digest)
    : await trust.deleteTag(name, ref.tag!, draftEvent({ action: "tag.delete", target: { repository: name, tag: ref.tag, digest: null }, outcome: { status: 202 } }));
  if (!removed) throw manifestUnknown(reference);
  return new Response(null, { status: 202, headers: { "Content-Length": "0" } });
}

function manifestUnknown(reference: string) {
  return oci("MANIFEST_UNKNOWN", `manifest ${truncate(reference)} is not known to this repository`, { reference: truncate(reference) });
}

/**
 * Read a request body into memory, refusing more than `max` bytes with 413. With a declared
 * Content-Length the bytes go straight into one buffer of that size (no second copy: a 32 MiB
 * manifest then needs 32 MiB here, not 64, in an isolate of 128 MB).
 */
async function readCapped(c: Ctx, max: number): Promise<Uint8Array> {
  const declared = c.req.header("Content-Length");
  const length = declared && /^\d+$/.test(declared) ? Number(declared) : null;
  if (length !== null && length > max) throw manifestTooLarge(max);
  const bodyCap = config(c.env).maxBodyBytes;
  if (bodyCap > 0 && length !== null && length > bodyCap) throw tooLarge(bodyCap);
  const stream = c.req.raw.body;
  if (!stream) throw oci("MANIFEST_INVALID", "manifest body is empty");
  return readStreamCapped(stream, max, length, () => manifestTooLarge(max));
}

function manifestTooLarge(max: number) {
  return oci("TOO_LARGE", `manifest exceeds this registry's limit of ${max} bytes`, { limit: max }, 413);
}
