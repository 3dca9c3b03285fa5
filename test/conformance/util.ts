// Shared fixtures for the OCI Distribution Spec v1.1 conformance tests.
//
// The fixtures mirror the shapes the official conformance suite (opencontainers/distribution-spec
// conformance/setup.go) pushes — tab-indented JSON, a config descriptor carrying `data` and an
// unspecified extra field, the 2-byte empty JSON blob, artifacts typed by config.mediaType or by
// artifactType — but they are written from the spec text, not copied.
import { expect } from "vitest";
import { BASE, req, sha256, withQuery } from "../unit/helpers";

export { BASE, req, sha256, withQuery };

export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_EMPTY = "application/vnd.oci.empty.v1+json";
export const OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
export const DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/** Spec "Error Codes" table (code-1 … code-14): a 4xx JSON body's `code` MUST be one of these. */
export const SPEC_ERROR_CODES = [
  "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
  "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
  "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
];

/** The official suite's own list (setup.go errorCodes) additionally tolerates the legacy Docker codes. */
export const SUITE_ERROR_CODES = [...SPEC_ERROR_CODES, "MANIFEST_UNVERIFIED", "TAG_INVALID"];

export const te = new TextEncoder();
/** Go's json.MarshalIndent(v, "", "\t") shape: what the official suite pushes, byte for byte in spirit. */
export const indent = (v: unknown) => te.encode(JSON.stringify(v, null, "\t"));

export const EMPTY_JSON = te.encode("{}");
export const EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
export const emptyDescriptor = { mediaType: OCI_EMPTY, digest: EMPTY_JSON_DIGEST, size: 2 };

export const uniq = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

export function b64(data: Uint8Array): string {
  let s = "";
  for (const b of data) s += String.fromCharCode(b);
  return btoa(s);
}

/** Path + query of a Location header, absolute or relative (RFC 7231 §7.1.2). */
export function locPath(location: string | null): string {
  expect(location, "Location header").toBeTruthy();
  const u = new URL(location!, BASE);
  return u.pathname + u.search;
}

export function blobBytes(res: Response): Promise<Uint8Array> {
  return res.arrayBuffer().then((b) => new Uint8Array(b));
}

/** POST /blobs/uploads/ then PUT <location>?digest= with the whole body (the suite's setup path). */
export async function postPut(repo: string, data: Uint8Array): Promise<{ digest: string; put: Response }> {
  const digest = await sha256(data);
  const post = await req(`/v2/${repo}/blobs/uploads/`, { method: "POST" });
  expect(post.status).toBe(202);
  const put = await req(withQuery(locPath(post.headers.get("Location")), `digest=${encodeURIComponent(digest)}`), {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream", "Content-Length": String(data.length) },
    body: data,
  });
  expect(put.status, await put.clone().text()).toBe(201);
  return { digest, put };
}

export function putManifestAs(repo: string, ref: string, body: Uint8Array, contentType: string | null = OCI_MANIFEST) {
  const headers: Record<string, string> = {};
  if (contentType !== null) headers["Content-Type"] = contentType;
  return req(`/v2/${repo}/manifests/${ref}`, { method: "PUT", headers, body });
}

/** A config blob made unique by its author, like the suite's per-workflow configs. */
export function configBlob(author: string): Uint8Array {
  return indent({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] }, author });
}

/** A small gzip'd tarball standing in for a layer (content is irrelevant to the registry). */
export const LAYER = new Uint8Array([
  0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xed, 0xce, 0x41, 0x0a, 0xc2, 0x30, 0x10, 0x85, 0xe1, 0xac,
  0x3d, 0x45, 0x2f, 0x30, 0x99, 0x24, 0x6d, 0x4e, 0xd3, 0x16, 0x8a, 0xa8, 0x74, 0x11, 0x45, 0xbc, 0xbd, 0x11, 0x04, 0x37,
]);

export interface Image {
  config: Uint8Array;
  configDigest: string;
  layerDigest: string;
  manifest: Uint8Array;
  digest: string;
}

/**
 * Push a config and the layer (POST then PUT) and build an OCI image manifest over them whose
 * config descriptor embeds `data` and carries an unspecified extra field, as the suite's does.
 */
export async function pushImage(repo: string, author: string, extra: Record<string, unknown> = {}): Promise<Image> {
  const config = configBlob(author);
  const { digest: configDigest } = await postPut(repo, config);
  const { digest: layerDigest } = await postPut(repo, LAYER);
  const manifest = indent({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length, data: b64(config), newUnspecifiedField: b64(te.encode("hello world")) },
    layers: [{ mediaType: OCI_LAYER_GZIP, digest: layerDigest, size: LAYER.length }],
    ...extra,
  });
  return { config, configDigest, layerDigest, manifest, digest: await sha256(manifest) };
}

/**
 * A 4xx answer: status is one of `statuses`; if the body is JSON it MUST have the spec's error
 * shape with a spec code (and, when given, one of `codes`). Returns the first error code (or null).
 */
export async function expectSpecError(res: Response, statuses: number[], codes?: string[]): Promise<string | null> {
  const text = await res.text();
  expect(statuses, `status ${res.status}, body ${text.slice(0, 300)}`).toContain(res.status);
  const ct = res.headers.get("Content-Type") ?? "";
  if (!ct.includes("json") || text === "") return null;
  const body = JSON.parse(text) as { errors?: { code: unknown; message?: unknown; detail?: unknown }[] };
  expect(Array.isArray(body.errors), `errors array in ${text.slice(0, 200)}`).toBe(true);
  expect(body.errors!.length).toBeGreaterThan(0);
  for (const e of body.errors!) {
    expect(typeof e.code).toBe("string");
    expect(e.code as string).toMatch(/^[A-Z_]+$/);
    expect(SPEC_ERROR_CODES, `error code ${String(e.code)} is not in the spec's code-1…code-14 table`).toContain(e.code);
    if (e.message !== undefined) expect(typeof e.message).toBe("string");
  }
  if (codes) expect(codes).toContain(body.errors![0].code);
  return body.errors![0].code as string;
}

export function parseLink(link: string | null): string | null {
  if (!link) return null;
  const m = /^<([^>]+)>;\s*rel="next"$/.exec(link.trim());
  expect(m, `Link header ${link} must be RFC 5988 <url>; rel="next"`).not.toBeNull();
  return locPath(m![1]);
}
