// Every fixed limit a client can run into on the /v2 surface, in one place (docs/limits.md lists
// them with their status codes; MAX_MANIFEST_BYTES and MAX_BODY_BYTES are variables, see src/env.ts).
// They exist so that no request can push a Durable Object past its platform limits — 32 MiB per
// RPC argument or result, 2 MB per SQLite row or string, 100 bound parameters per statement — and
// so that one request's work is bounded. Each is far above what real clients send.

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * Distinct digests a manifest requires the repository to hold: config + layers (foreign layers
 * with `urls` excepted), or index children; repeats count once. Over it: 400 MANIFEST_INVALID.
 * The default; the MAX_MANIFEST_REFERENCES variable sets it up to the ceiling, which keeps the
 * digest lists of one push (~140 bytes per sha512 digest, sent to TrustStore twice) far under
 * the 32 MiB RPC cap. Real images have tens of layers; a build-cache/v1 tree of many small files
 * may need more (one distinct chunk per file).
 */
export const MAX_MANIFEST_REFERENCES = 10_000;
export const MAX_MANIFEST_REFERENCES_CEILING = 100_000;

/**
 * build-cache/v1 manifests (artifactType below) list one layer per distinct chunk, and the spec
 * (cloister-spec/build-cache/v1 §7) sizes them for caches of ~100,000 small files, so they may
 * reference up to the ceiling whatever MAX_MANIFEST_REFERENCES says. Their cost stays on their own
 * repository's TrustStore object.
 */
export const BUILD_CACHE_ARTIFACT_TYPE = "application/vnd.cloister.build-cache.v1";

/**
 * UTF-8 bytes of the JSON `annotations` object of a manifest that has a `subject`. The referrers
 * index stores them and serves them in every referrers page, so they are refused (400
 * MANIFEST_INVALID), not truncated: the spec requires a referrer's descriptor to carry its
 * manifest's annotations. Manifests without a subject are not indexed and are bounded only by
 * MAX_MANIFEST_BYTES. Large payloads belong in a layer.
 */
export const MAX_REFERRER_ANNOTATION_BYTES = 64 * KiB;

/**
 * Shape of a manifest's JSON, checked by a byte scan before JSON.parse: parse time depends on the
 * number of objects, arrays and object members far more than on bytes (measured in V8: 32 MiB of
 * `[[[[…` or `[],[],…` or one object with 2M keys parses in 2–8 s; 32 MiB of one string in
 * ~30 ms). With these caps the parse of the largest manifest stays under half a second, and real
 * manifests are inside them: a 10,000-child index with platforms and annotations has ~40k
 * containers and ~150k members; a 32 MiB build-cache/v1 manifest with layer annotations
 * (~110k descriptors) ~225k containers and ~900k members. Over any: 400 MANIFEST_INVALID.
 */
export const MAX_MANIFEST_JSON_DEPTH = 64;
export const MAX_MANIFEST_JSON_CONTAINERS = 500_000;
export const MAX_MANIFEST_JSON_MEMBERS = 1_000_000;

/** `annotation=<key>=<value>` filters per referrers request; more: 400 UNSUPPORTED. */
export const MAX_REFERRER_FILTERS = 16;
/** Length (UTF-16 code units, as URL-decoded) of one filter's key and of its value; longer: 400 UNSUPPORTED. */
export const MAX_FILTER_KEY_LENGTH = 256;
export const MAX_FILTER_VALUE_LENGTH = 4096;

/**
 * Entries per page of tags/list, _catalog and referrers. A larger `n` is clamped (the spec lets a
 * registry return fewer than n, with a Link to the rest); it is never an error.
 */
export const MAX_PAGE_ENTRIES = 1000;

/**
 * Bytes of one referrers response. A page holds at most `n` descriptors and shrinks to fit this
 * budget (Link points at the rest), so no set of stored referrers can make a listing fail.
 */
export const REFERRERS_PAGE_BYTES = 4 * MiB;

/** Bound parameters per `IN (…)` batch: Durable Object SQLite allows 100 per statement. */
export const SQL_IN_BATCH = 90;
