// GET /v2/<name>/referrers/<digest>: an OCI image index of the manifests whose `subject` is
// <digest>. Beyond the spec's artifactType filter, `annotation=<key>=<value>` (repeatable, all
// must match) lets a client ask for exactly the signature or metadata it trusts.
import type { Ctx } from "../app";
import { oci } from "./errors";
import { parseDigest } from "./grammar";
import { MEDIA_TYPE_RE } from "./manifest";
import { trustStoreFor } from "../stores";
import { nextLink, parsePage } from "./pagination";
import { MAX_FILTER_KEY_LENGTH, MAX_FILTER_VALUE_LENGTH, MAX_PAGE_ENTRIES as MAX_PAGE, MAX_REFERRER_FILTERS, REFERRERS_PAGE_BYTES } from "./limits";

const INDEX = "application/vnd.oci.image.index.v1+json";

export async function list(c: Ctx, name: string, digestParam: string): Promise<Response> {
  const { digest } = parseDigest(digestParam, "subject digest");
  const url = new URL(c.req.url);
  const { n, last } = parsePage(url, MAX_PAGE);
  const artifactType = url.searchParams.get("artifactType");
  if (artifactType !== null && !MEDIA_TYPE_RE.test(artifactType)) {
    throw oci("UNSUPPORTED", `artifactType "${artifactType.slice(0, 100)}" is not a media type`, undefined, 400);
  }
  const annotations = parseAnnotationFilters(url.searchParams.getAll("annotation"));
  const page = await trustStoreFor(c.env, name).referrers(name, digest, { artifactType, annotations }, n ?? MAX_PAGE, last, REFERRERS_PAGE_BYTES);
  const manifests = page.items.map((r) => ({
    mediaType: r.mediaType,
    digest: r.digest,
    size: r.size,
    ...(r.artifactType ? { artifactType: r.artifactType } : {}),
    ...(r.annotations ? { annotations: r.annotations } : {}),
  }));
  const headers: Record<string, string> = { "Content-Type": INDEX };
  const applied = [...(artifactType !== null ? ["artifactType"] : []), ...(annotations.length ? ["annotation"] : [])];
  if (applied.length) headers["OCI-Filters-Applied"] = applied.join(",");
  if (page.next !== null) {
    headers.Link = nextLink(`/v2/${name}/referrers/${digest}`, {
      n: String(n ?? MAX_PAGE), last: page.next,
      ...(artifactType !== null ? { artifactType } : {}),
      ...(annotations.length ? { annotation: annotations.map(([k, v]) => `${k}=${v}`) } : {}),
    });
  }
  return new Response(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests }), { status: 200, headers });
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
