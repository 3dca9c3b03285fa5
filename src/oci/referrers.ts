// GET /v2/<name>/referrers/<digest>: an OCI image index of the manifests whose `subject` is
// <digest>. Beyond the spec's artifactType filter, `annotation=<key>=<value>` (repeatable, all
// must match) lets a client ask for exactly the signature or metadata it trusts. Signature
// repository links (docs/signatures.md) merge referrers stored in other repositories.
import type { Ctx } from "../app";
import { oci } from "./errors";
import { parseDigest } from "./grammar";
import { MEDIA_TYPE_RE } from "./manifest";
import { trustStoreFor } from "../stores";
import { mayPull } from "../auth";
import { rulesFor } from "../auth/session";
import { linkedRepositories } from "../auth/policy";
import { isValidName } from "./grammar";
import { nextLink, parsePage } from "./pagination";
import { MAX_FILTER_KEY_LENGTH, MAX_FILTER_VALUE_LENGTH, MAX_PAGE_ENTRIES as MAX_PAGE, MAX_REFERRER_FILTERS, REFERRERS_PAGE_BYTES } from "./limits";

const INDEX = "application/vnd.oci.image.index.v1+json";

/** Annotation keys cloister sets on merged descriptors (cloister-spec/signatures.md); stored values are ignored. */
export const REFERRER_REPOSITORY_ANNOTATION = "dev.cloister.referrer.repository";
export const REFERRER_TAG_ANNOTATION = "dev.cloister.referrer.tag";
const RESERVED_PREFIX = "dev.cloister.referrer.";
/** artifactType given to a cosign tag-convention signature (`sha256-<hex>.sig`), as referrers-mode cosign uses. */
export const COSIGN_SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

export async function list(c: Ctx, name: string, digestParam: string): Promise<Response> {
  const { digest } = parseDigest(digestParam, "subject digest");
  const url = new URL(c.req.url);
  const { n, last } = parsePage(url, MAX_PAGE);
  const artifactType = url.searchParams.get("artifactType");
  if (artifactType !== null && !MEDIA_TYPE_RE.test(artifactType)) {
    throw oci("UNSUPPORTED", `artifactType "${artifactType.slice(0, 100)}" is not a media type`, undefined, 400);
  }
  const annotations = parseAnnotationFilters(url.searchParams.getAll("annotation"));
  const limit = n ?? MAX_PAGE;
  const { window, more } = await mergedReferrers(c, name, digest, artifactType, annotations, limit, last);
  const manifests = window.filter((d) => (artifactType === null || d.artifactType === artifactType) && annotations.every(([k, v]) => d.annotations?.[k] === v));
  const headers: Record<string, string> = { "Content-Type": INDEX };
  const applied = [...(artifactType !== null ? ["artifactType"] : []), ...(annotations.length ? ["annotation"] : [])];
  if (applied.length) headers["OCI-Filters-Applied"] = applied.join(",");
  if (more && window.length > 0) {
    headers.Link = nextLink(`/v2/${name}/referrers/${digest}`, {
      n: String(limit), last: window[window.length - 1].digest,
      ...(artifactType !== null ? { artifactType } : {}),
      ...(annotations.length ? { annotation: annotations.map(([k, v]) => `${k}=${v}`) } : {}),
    });
  }
  return new Response(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests }), { status: 200, headers });
}

/**
 * The referrers of `digest` in `name` and the linked repositories the caller may pull, merged by
 * digest (a page of at most `limit` before the filters on served descriptors apply): `window` is
 * the page, `more` says a next page may exist after its last digest. `readable` decides which
 * linked repositories count (default: those the caller may pull).
 */
export async function mergedReferrers(c: Ctx, name: string, digest: string, artifactType: string | null, annotations: [string, string][], limit: number, last: string | null, readable: (repo: string) => Promise<boolean> = (repo) => mayPull(c, repo)): Promise<{ window: Descriptor[]; more: boolean }> {
  // Sources: this repository, then the linked signature repositories the caller may pull. A
  // linked repository the caller may not pull is skipped silently: absent looks like empty.
  const links = linkedRepositories(await rulesFor(c), name, isValidName);
  const sources = [name];
  for (const repo of links) if (await readable(repo)) sources.push(repo);
  // Stored rows are filtered in SQL by their own annotations; filters on cloister's keys are
  // checked here, on the descriptor as served.
  const storedFilter = { artifactType, annotations: annotations.filter(([k]) => !k.startsWith(RESERVED_PREFIX)) };
  const pages = limit === 0 ? [] : await Promise.all(sources.map((repo) => trustStoreFor(c.env, repo).referrersAndSignatureTag(repo, digest, storedFilter, limit, last, REFERRERS_PAGE_BYTES)));
  // Merge by digest (stable paging across sources); a digest listed by several sources appears
  // once, from the first source (this repository first).
  const byDigest = new Map<string, Descriptor>();
  let more = false;
  let bound = null as string | null; // no source has been read past this digest
  for (const [i, { page, signatureTag }] of pages.entries()) {
    const from = i === 0 ? null : sources[i];
    if (page.next !== null) {
      more = true;
      if (bound === null || page.next < bound) bound = page.next;
    }
    for (const r of page.items) {
      if (byDigest.has(r.digest)) continue;
      byDigest.set(r.digest, decorate({ mediaType: r.mediaType, digest: r.digest, size: r.size, ...(r.artifactType ? { artifactType: r.artifactType } : {}), annotations: r.annotations ?? undefined }, from, null));
    }
    if (signatureTag && signatureTag.digest > (last ?? "") && !byDigest.has(signatureTag.digest)) {
      byDigest.set(signatureTag.digest, decorate({ mediaType: signatureTag.mediaType, digest: signatureTag.digest, size: signatureTag.size, artifactType: COSIGN_SIGNATURE_ARTIFACT_TYPE }, from, signatureTag.tag));
    }
  }
  const window: Descriptor[] = [];
  let bytes = 0;
  for (const d of [...byDigest.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1))) {
    const cost = JSON.stringify(d).length + 1;
    if ((bound !== null && d.digest > bound) || window.length === limit || (window.length > 0 && bytes + cost > REFERRERS_PAGE_BYTES - 256)) {
      more = true;
      break;
    }
    bytes += cost;
    window.push(d);
  }
  return { window, more };
}

/**
 * The descriptor as served: cloister's reserved keys are never taken from the stored manifest
 * (a pusher cannot claim another source); a linked source and a tag-convention signature are named.
 */
function decorate(d: Descriptor, from: string | null, tag: string | null): Descriptor {
  const a: Record<string, string> = {};
  for (const [k, v] of Object.entries(d.annotations ?? {})) if (!k.startsWith(RESERVED_PREFIX)) a[k] = v;
  if (from !== null) a[REFERRER_REPOSITORY_ANNOTATION] = from;
  if (tag !== null) a[REFERRER_TAG_ANNOTATION] = tag;
  const { annotations: _, ...rest } = d;
  return Object.keys(a).length ? { ...rest, annotations: a } : rest;
}

/** `annotation=<key>=<value>` filters, bounded in number and length (src/oci/limits.ts). */
function parseAnnotationFilters(raw: string[]): [string, string][] {
  if (raw.length > MAX_REFERRER_FILTERS) {
    throw oci("UNSUPPORTED", `${raw.length} annotation filters given; at most ${MAX_REFERRER_FILTERS} per request (MAX_REFERRER_FILTERS)`, { limit: MAX_REFERRER_FILTERS }, 400);
  }
  return raw.map((a) => {
    const eq = a.indexOf("=");
    if (eq <= 0) throw oci("UNSUPPORTED", `annotation filter "${a.slice(0, 100)}" must be <key>=<value>`, undefined, 400);
    const key = a.slice(0, eq);
    const value = a.slice(eq + 1);
    if (key.length > MAX_FILTER_KEY_LENGTH) {
      throw oci("UNSUPPORTED", `annotation filter key "${key.slice(0, 100)}…" is ${key.length} characters; at most ${MAX_FILTER_KEY_LENGTH}`, { limit: MAX_FILTER_KEY_LENGTH }, 400);
    }
    if (value.length > MAX_FILTER_VALUE_LENGTH) {
      throw oci("UNSUPPORTED", `annotation filter value for "${key.slice(0, 100)}" is ${value.length} characters; at most ${MAX_FILTER_VALUE_LENGTH}`, { limit: MAX_FILTER_VALUE_LENGTH }, 400);
    }
    return [key, value];
  });
}
