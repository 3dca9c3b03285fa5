// Splits a /v2 path into repository name and resource. Names contain "/", so the resource is
// found by its suffix, the way distribution does it. Percent-encoded slashes or dots never
// form a name: the raw path is used and any "%" in the name makes it invalid.
import { oci } from "./errors";
import { assertName } from "./grammar";

export type V2Route =
  | { kind: "base" }
  | { kind: "catalog" }
  | { kind: "tags"; name: string }
  | { kind: "manifest"; name: string; reference: string }
  | { kind: "blob"; name: string; digest: string }
  | { kind: "uploads"; name: string } // POST …/blobs/uploads/
  | { kind: "upload"; name: string; uuid: string }
  | { kind: "referrers"; name: string; digest: string }
  | { kind: "attestations"; name: string; digest: string }; // cloister extension (docs/signatures.md)

const PATTERNS: [RegExp, (m: RegExpExecArray) => V2Route][] = [
  [/^\/v2\/?$/, () => ({ kind: "base" })],
  [/^\/v2\/_catalog$/, () => ({ kind: "catalog" })],
  [/^\/v2\/(.+)\/tags\/list$/, (m) => ({ kind: "tags", name: m[1] })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: "manifest", name: m[1], reference: m[2] })],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: "uploads", name: m[1] })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: "upload", name: m[1], uuid: m[2] })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: "blob", name: m[1], digest: m[2] })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: "referrers", name: m[1], digest: m[2] })],
  [/^\/v2\/(.+)\/attestations\/([^/]+)$/, (m) => ({ kind: "attestations", name: m[1], digest: m[2] })],
];

/** Returns null when the path is not a /v2 route at all (→ 404 NAME_UNKNOWN / not found). */
export function parseV2Path(rawPath: string): V2Route | null {
  for (const [re, make] of PATTERNS) {
    const m = re.exec(rawPath);
    if (!m) continue;
    const route = make(m);
    if ("name" in route) {
      assertName(route.name);
      for (const key of ["reference", "digest", "uuid"] as const) {
        const v = (route as Record<string, string>)[key];
        if (v !== undefined && v.includes("%")) {
          if (key === "uuid") throw oci("BLOB_UPLOAD_UNKNOWN", "upload session not found");
          throw oci(key === "reference" ? "MANIFEST_INVALID" : "DIGEST_INVALID", `invalid ${key} "${v.slice(0, 100)}"`);
        }
      }
    }
    return route;
  }
  return null;
}
