// The bad-input corpus: deterministic generators of malformed requests over every /v2 route
// (issue 9, "A bad-input corpus"). Each case names the statuses it may get and, for errors, the
// wire codes it may carry; the runner (../corpus.test.ts) adds the checks every case shares:
// never a 5xx, and every error is the OCI envelope with a code from the spec's list.
//
// Expectations are written from the spec and the documented behaviour, not read back from the
// code: where the spec leaves a choice (e.g. 400 or 404 for a malformed manifest digest), the
// case lists both.
import { Rng } from "./rng";

export interface Case {
  /** Stable id: group/route/variant; used in failure messages and the known-failing list. */
  id: string;
  group: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Uint8Array | string;
  /** Allowed statuses. */
  status: number[];
  /** Allowed wire codes on an error answer (default: any code from the spec's list). */
  codes?: string[];
  /** Extra check on the response; returns a complaint or null. */
  check?: (res: Response) => string | null;
}

export interface Fixtures {
  repo: string;
  other: string;
  blob: { digest: string; size: number };
  config: { digest: string; size: number };
  layer: { digest: string; size: number };
  manifest: { digest: string; tag: string };
  /** An open upload session of `repo` at offset 0, and one of `other`. */
  upload: string;
  otherUpload: string;
  /** Spare sessions of `repo`, one per case that may wrongly append to the session it is sent to. */
  spares: string[];
}

const te = new TextEncoder();
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const KiB = 1024;
const MiB = 1024 * KiB;

const enc = encodeURIComponent;
const hex64 = (r: Rng) => r.hex(64);

// ---- names ------------------------------------------------------------------------------------

/** Tokens that make a name invalid wherever they appear; none is rewritten by the URL parser. */
const BAD_NAME_TOKENS = [
  "A", "Z", "%20", "!", "$", "&", "'", "(", ")", "*", "+", ",", ";", "=", "@", ":", "~", "%2F", "%2f",
  "%2e", "%00", "%", "%C3%A4", "%E2%82%AC", "%F0%9F%98%80", "|", "^", "`", "{", "}", "[", "]", "%3C", "%3E", "%22",
  "..", "__.", "-", ".", "_", "___",
];

/** Invalid repository names, as raw path text. `loose`: the URL parser or routing may turn it into a 404. */
function badNames(r: Rng): { name: string; why: string; loose?: boolean }[] {
  const out: { name: string; why: string; loose?: boolean }[] = [
    { name: "A", why: "uppercase" },
    { name: "Library/Ubuntu", why: "uppercase-path" },
    { name: "a".repeat(256), why: "too-long-256" },
    { name: "a/".repeat(128) + "ab", why: "too-long-components" },
    { name: "a".repeat(64 * KiB), why: "too-long-64k" },
    { name: "a/".repeat(2000) + "a", why: "4001-components" },
    { name: "-a", why: "leading-dash" },
    { name: "a-", why: "trailing-dash" },
    { name: "_a", why: "leading-underscore" },
    { name: "a_", why: "trailing-underscore" },
    { name: ".a", why: "leading-dot" },
    { name: "a.", why: "trailing-dot" },
    { name: "a..b", why: "double-dot" },
    { name: "a___b", why: "triple-underscore" },
    { name: "a._b", why: "mixed-separators" },
    { name: "a//b", why: "empty-component" },
    { name: "a/", why: "trailing-slash" },
    { name: "/a", why: "leading-slash" },
    { name: "a%2Fb", why: "encoded-slash" },
    { name: "a%2fb", why: "encoded-slash-lower" },
    { name: "a%252Fb", why: "double-encoded-slash" },
    { name: "a/%2e%2e/b", why: "encoded-dotdot", loose: true },
    { name: "a/../b", why: "dotdot", loose: true },
    { name: "a/./b", why: "dot-segment", loose: true },
    { name: "..", why: "only-dotdot", loose: true },
    { name: "a/%2E%2E%2Fb", why: "encoded-dotdot-slash" },
    { name: "a%00b", why: "nul" },
    { name: "a%0Ab", why: "encoded-newline" },
    { name: "%C3%A4", why: "non-ascii" },
    { name: "a%FFb", why: "invalid-utf8-escape" },
    { name: "a:b", why: "colon" },
    { name: "a@b", why: "at" },
    { name: "a b", why: "space" },
    { name: "_catalog", why: "reserved-underscore" },
  ];
  // Random: a valid name with one bad token spliced in at a random place.
  for (let i = 0; i < 36; i++) {
    const parts = Array.from({ length: r.int(1, 3) }, () => r.component());
    const base = parts.join("/");
    const at = r.int(0, base.length);
    const tok = r.pick(BAD_NAME_TOKENS);
    const name = base.slice(0, at) + tok + base.slice(at);
    // ".", "..", "-" or "_" spliced at a component boundary may still be valid or form a dot segment.
    const loose = [".", "..", "-", "_", "__.", "___"].includes(tok);
    out.push({ name, why: `random-${i}`, loose });
  }
  return out;
}

// ---- digests ----------------------------------------------------------------------------------

/** Malformed digests, as raw path text (no "/", "?" or "#"). All contain ":" unless noted. */
function badDigests(r: Rng): { d: string; why: string }[] {
  const h = hex64(r);
  const out = [
    { d: "sha256:", why: "empty-hex" },
    { d: ":" + h, why: "empty-algorithm" },
    { d: "sha256:abc", why: "short" },
    { d: "sha256:" + h.slice(1), why: "63-hex" },
    { d: "sha256:" + h + "0", why: "65-hex" },
    { d: "sha256:" + h.toUpperCase(), why: "uppercase-hex" },
    { d: "SHA256:" + h, why: "uppercase-algorithm" },
    { d: "sha256:" + "g".repeat(64), why: "non-hex" },
    { d: "sha256:" + h.slice(0, 63) + "=", why: "padding-char" },
    { d: "md5:" + r.hex(32), why: "md5" },
    { d: "sha1:" + r.hex(40), why: "sha1" },
    { d: "sha384:" + r.hex(96), why: "sha384" },
    { d: "sha512:" + h, why: "sha512-64-hex" },
    { d: "blake3:" + r.hex(128), why: "blake3-128-hex" },
    { d: "sha256:" + h + ":" + h, why: "two-colons" },
    { d: "sha256::" + h, why: "double-colon" },
    { d: "sha256+b64u:" + "A".repeat(43), why: "unregistered-algorithm" },
    { d: "sha256:" + h + "%20", why: "trailing-space" },
    { d: "sha256:%2e%2e", why: "encoded-dots" },
    { d: "sha256:" + h.slice(0, 32) + "%00" + h.slice(32), why: "nul" },
    { d: "sha256:" + "0".repeat(10000), why: "10k-hex" },
    { d: "x".repeat(300) + ":" + h, why: "long-algorithm" },
    { d: "sha-256:" + h, why: "dashed-algorithm" },
    { d: "sha256:" + h.slice(0, 60) + "%C3%A4", why: "non-ascii" },
  ];
  for (let i = 0; i < 22; i++) {
    // A valid sha256 digest with one character replaced, inserted or deleted.
    let s = "sha256:" + hex64(r);
    const at = r.int(0, s.length - 1);
    const op = r.int(0, 2);
    const ch = r.pick(["G", "z", "A", "F", "-", "_", ".", "=", "+", "~", "!", "%25", "%C3%A9", ":"]);
    if (op === 0) s = s.slice(0, at) + ch + s.slice(at + 1);
    else if (op === 1) s = s.slice(0, at) + ch + s.slice(at);
    else s = s.slice(0, at) + s.slice(at + 1);
    if (!s.includes(":")) s = "sha256:" + s; // keep it digest-like
    out.push({ d: s, why: `random-${i}` });
  }
  return out;
}

// ---- manifests --------------------------------------------------------------------------------

function imageManifest(fx: Fixtures, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: OCI_CONFIG, digest: fx.config.digest, size: fx.config.size },
    layers: [{ mediaType: OCI_LAYER, digest: fx.layer.digest, size: fx.layer.size }],
    ...extra,
  };
}

const json = (v: unknown) => JSON.stringify(v);

/** Grow the "pad" annotation so the JSON text is exactly `size` bytes (ASCII). */
function padTo(text: string, size: number): string {
  return text.replace('"pad":""', `"pad":"${"x".repeat(size - text.length)}"`);
}

function nested(depth: number, open = "[", close = "]", inner = "0"): string {
  return open.repeat(depth) + inner + close.repeat(depth);
}

function manifestBodies(fx: Fixtures, r: Rng): { why: string; body: Uint8Array | string; ct?: string | null; status: number[]; codes?: string[]; ref?: string }[] {
  const INV = ["MANIFEST_INVALID"];
  const ok = imageManifest(fx);
  const okText = json(ok);
  const missing = "sha256:" + hex64(r);
  const cfg = ok.config as Record<string, unknown>;
  const layer = (ok.layers as Record<string, unknown>[])[0];
  const withCfg = (over: Record<string, unknown>) => json(imageManifest(fx, { config: { ...cfg, ...over } }));
  const withLayer = (over: Record<string, unknown>) => json(imageManifest(fx, { layers: [{ ...layer, ...over }] }));
  const without = (k: string) => {
    const m = imageManifest(fx);
    delete m[k];
    return json(m);
  };
  const bytes = (...xs: number[]) => new Uint8Array(xs);
  const concat = (a: Uint8Array, b: Uint8Array) => {
    const o = new Uint8Array(a.length + b.length);
    o.set(a);
    o.set(b, a.length);
    return o;
  };
  const utf16le = (s: string) => {
    const o = new Uint8Array(s.length * 2 + 2);
    o[0] = 0xff; o[1] = 0xfe;
    for (let i = 0; i < s.length; i++) o[2 + i * 2] = s.charCodeAt(i);
    return o;
  };
  const bigLayers = (n: number) =>
    json(imageManifest(fx, { layers: Array.from({ length: n }, (_, i) => ({ mediaType: OCI_LAYER, digest: "sha256:" + i.toString(16).padStart(64, "0"), size: i })) }));

  return [
    // Not JSON, not an object, not UTF-8.
    { why: "empty", body: "", status: [400], codes: INV },
    { why: "whitespace", body: " \n\t ", status: [400], codes: INV },
    { why: "null", body: "null", status: [400], codes: INV },
    { why: "array", body: "[]", status: [400], codes: INV },
    { why: "number", body: "2", status: [400], codes: INV },
    { why: "string", body: '"manifest"', status: [400], codes: INV },
    { why: "true", body: "true", status: [400], codes: INV },
    { why: "truncated", body: okText.slice(0, okText.length - 1), status: [400], codes: INV },
    { why: "half", body: okText.slice(0, okText.length >> 1), status: [400], codes: INV },
    { why: "trailing-garbage", body: okText + "x", status: [400], codes: INV },
    { why: "two-objects", body: okText + okText, status: [400], codes: INV },
    { why: "comment", body: "/* c */" + okText, status: [400], codes: INV },
    { why: "single-quotes", body: okText.replace(/"/g, "'"), status: [400], codes: INV },
    { why: "nan-literal", body: okText.replace('"schemaVersion":2', '"schemaVersion":NaN'), status: [400], codes: INV },
    { why: "raw-control-char", body: okText.replace('"layers"', '"lay\u0001ers"'), status: [400], codes: INV },
    { why: "invalid-utf8-ff", body: concat(bytes(0xff, 0xfe, 0xfd), te.encode(okText)), status: [400], codes: INV },
    { why: "invalid-utf8-in-string", body: te.encode(okText).map((b, i, a) => (i === a.length - 3 ? 0xc0 : b)), status: [400], codes: INV },
    { why: "overlong-utf8", body: concat(te.encode(okText.slice(0, -1) + ',"annotations":{"k":"'), concat(bytes(0xc0, 0xaf), te.encode('"}}'))), status: [400], codes: INV },
    { why: "cesu-surrogate", body: concat(te.encode(okText.slice(0, -1) + ',"annotations":{"k":"'), concat(bytes(0xed, 0xa0, 0x80), te.encode('"}}'))), status: [400], codes: INV },
    { why: "utf16le", body: utf16le(okText), status: [400], codes: INV },
    { why: "latin1-byte", body: concat(te.encode(okText.slice(0, -1) + ',"annotations":{"k":"'), concat(bytes(0xe9), te.encode('"}}'))), status: [400], codes: INV },
    { why: "nul-bytes", body: new Uint8Array(4096), status: [400], codes: INV },
    // A UTF-8 BOM is stripped by the decoder: the manifest is fine.
    { why: "utf8-bom", body: concat(bytes(0xef, 0xbb, 0xbf), te.encode(okText)), status: [201] },
    // Deep nesting: refused where the field has a type, stored verbatim in unknown fields.
    { why: "deep-array-body", body: nested(100_000), status: [400], codes: INV },
    { why: "deep-object-body", body: nested(50_000, '{"a":', "}", "0"), status: [400], codes: INV },
    { why: "deep-unknown-field", body: okText.slice(0, -1) + ',"x":' + nested(100_000) + "}", status: [201, 400] },
    { why: "deep-annotations", body: okText.slice(0, -1) + ',"annotations":{"k":' + nested(10_000, '{"a":', "}", '"v"') + "}}", status: [400], codes: INV },
    { why: "deep-config", body: json(imageManifest(fx)).replace('"config":{', '"config":{"x":' + nested(10_000) + ","), status: [201, 400] },
    { why: "deep-layers", body: json({ ...ok, layers: JSON.parse(nested(1000)) }), status: [400], codes: INV },
    // Huge arrays.
    { why: "layers-10k-numbers", body: json(imageManifest(fx, { layers: Array.from({ length: 10_000 }, (_, i) => i) })), status: [400], codes: INV },
    { why: "layers-100k-missing", body: bigLayers(100_000), status: [400, 413], codes: ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "SIZE_INVALID"] },
    { why: "urls-100k", body: withLayer({ urls: Array.from({ length: 100_000 }, (_, i) => `https://x/${i}`) }), status: [201, 400] },
    { why: "annotations-100k-keys", body: json(imageManifest(fx, { annotations: Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, "v"])) })), status: [201, 400, 413] },
    { why: "annotation-3mib", body: json(imageManifest(fx, { annotations: { big: "x".repeat(3 * MiB) } })), status: [201, 400, 413] },
    { why: "index-50k-children", body: json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: Array.from({ length: 50_000 }, (_, i) => ({ mediaType: OCI_MANIFEST, digest: "sha256:" + i.toString(16).padStart(64, "0"), size: 1 })) }), ct: OCI_INDEX, status: [400, 413], codes: ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "SIZE_INVALID"] },
    // Wrong types, field by field.
    { why: "schemaVersion-string", body: json({ ...ok, schemaVersion: "2" }), status: [400], codes: INV },
    { why: "schemaVersion-3", body: json({ ...ok, schemaVersion: 3 }), status: [400], codes: INV },
    { why: "schemaVersion-null", body: json({ ...ok, schemaVersion: null }), status: [400], codes: INV },
    { why: "schemaVersion-missing", body: without("schemaVersion"), status: [400], codes: INV },
    { why: "schemaVersion-2.5", body: okText.replace('"schemaVersion":2', '"schemaVersion":2.5'), status: [400], codes: INV },
    { why: "schemaVersion-huge", body: okText.replace('"schemaVersion":2', '"schemaVersion":1e400'), status: [400], codes: INV },
    { why: "mediaType-number", body: json({ ...ok, mediaType: 5 }), status: [400], codes: INV },
    { why: "mediaType-empty", body: json({ ...ok, mediaType: "" }), status: [400], codes: INV },
    { why: "mediaType-config", body: json({ ...ok, mediaType: OCI_CONFIG }), ct: OCI_CONFIG, status: [400], codes: INV },
    { why: "mediaType-no-slash", body: json({ ...ok, mediaType: "manifest" }), ct: "manifest", status: [400], codes: INV },
    { why: "config-array", body: json({ ...ok, config: [] }), status: [400], codes: INV },
    { why: "config-string", body: json({ ...ok, config: cfg.digest }), status: [400], codes: INV },
    { why: "config-null", body: json({ ...ok, config: null }), status: [400], codes: INV },
    { why: "config-missing", body: without("config"), status: [400], codes: INV },
    { why: "config-digest-number", body: withCfg({ digest: 5 }), status: [400], codes: INV },
    { why: "config-digest-upper", body: withCfg({ digest: String(cfg.digest).toUpperCase() }), status: [400], codes: INV },
    { why: "config-digest-md5", body: withCfg({ digest: "md5:" + r.hex(32) }), status: [400], codes: INV },
    { why: "config-size-negative", body: withCfg({ size: -1 }), status: [400], codes: INV },
    { why: "config-size-fraction", body: withCfg({ size: 1.5 }), status: [400], codes: INV },
    { why: "config-size-string", body: withCfg({ size: String(cfg.size) }), status: [400], codes: INV },
    { why: "config-size-2^53", body: withCfg({ size: 2 ** 53 }), status: [400], codes: INV },
    { why: "config-size-1e400", body: withCfg({}).replace(`"size":${cfg.size}`, '"size":1e400'), status: [400], codes: INV },
    { why: "config-size-null", body: withCfg({ size: null }), status: [400], codes: INV },
    { why: "config-mediaType-empty", body: withCfg({ mediaType: "" }), status: [400], codes: INV },
    { why: "config-mediaType-a/b/c", body: withCfg({ mediaType: "a/b/c" }), status: [400], codes: INV },
    { why: "config-mediaType-params", body: withCfg({ mediaType: "application/json; charset=utf-8" }), status: [400], codes: INV },
    { why: "config-mediaType-long", body: withCfg({ mediaType: "a/" + "b".repeat(200) }), status: [400], codes: INV },
    { why: "config-data-not-base64", body: withCfg({ data: "!!!" }), status: [400], codes: INV },
    { why: "config-data-wrong-length", body: withCfg({ data: "AAAA" }), status: [400], codes: INV },
    { why: "config-data-number", body: withCfg({ data: 5 }), status: [400], codes: INV },
    { why: "layers-object", body: json({ ...ok, layers: {} }), status: [400], codes: INV },
    { why: "layers-string", body: json({ ...ok, layers: "x" }), status: [400], codes: INV },
    { why: "layers-null", body: json({ ...ok, layers: null }), status: [201] },
    { why: "layers-missing", body: without("layers"), status: [400], codes: INV },
    { why: "layers-null-entry", body: json({ ...ok, layers: [null] }), status: [400], codes: INV },
    { why: "layers-empty-object", body: json({ ...ok, layers: [{}] }), status: [400], codes: INV },
    { why: "layer-urls-string", body: withLayer({ urls: "https://x" }), status: [400], codes: INV },
    { why: "layer-urls-numbers", body: withLayer({ urls: [1] }), status: [400], codes: INV },
    { why: "layer-annotations-array", body: withLayer({ annotations: ["a"] }), status: [400], codes: INV },
    { why: "layer-annotation-number", body: withLayer({ annotations: { a: 1 } }), status: [400], codes: INV },
    { why: "layer-artifactType-bad", body: withLayer({ artifactType: "nope" }), status: [400], codes: INV },
    { why: "layer-platform-string", body: withLayer({ platform: "linux/amd64" }), status: [400], codes: INV },
    { why: "annotations-array", body: json({ ...ok, annotations: [] }), status: [400], codes: INV },
    { why: "annotations-string", body: json({ ...ok, annotations: "x" }), status: [400], codes: INV },
    { why: "annotation-null", body: json({ ...ok, annotations: { a: null } }), status: [400], codes: INV },
    { why: "annotation-object", body: json({ ...ok, annotations: { a: {} } }), status: [400], codes: INV },
    { why: "annotation-proto", body: okText.slice(0, -1) + ',"annotations":{"__proto__":{"a":"b"}}}', status: [400], codes: INV },
    { why: "annotation-proto-string", body: okText.slice(0, -1) + ',"annotations":{"__proto__":"x","constructor":"y"}}', status: [201] },
    { why: "artifactType-number", body: json({ ...ok, artifactType: 1 }), status: [400], codes: INV },
    { why: "artifactType-bad", body: json({ ...ok, artifactType: "not a type" }), status: [400], codes: INV },
    { why: "subject-string", body: json({ ...ok, subject: fx.manifest.digest }), status: [400], codes: INV },
    { why: "subject-empty", body: json({ ...ok, subject: {} }), status: [400], codes: INV },
    { why: "subject-bad-digest", body: json({ ...ok, subject: { mediaType: OCI_MANIFEST, digest: "sha256:x", size: 1 } }), status: [400], codes: INV },
    { why: "top-proto", body: okText.slice(0, -1) + ',"__proto__":{"schemaVersion":1}}', status: [201] },
    // Duplicate keys: the last one wins, as in Go's encoding/json (clients and registry agree).
    { why: "dup-schemaVersion-last-1", body: okText.replace('"schemaVersion":2', '"schemaVersion":2,"schemaVersion":1'), status: [400], codes: INV },
    { why: "dup-schemaVersion-last-2", body: okText.replace('"schemaVersion":2', '"schemaVersion":1,"schemaVersion":2'), status: [201] },
    { why: "dup-layers-last-valid", body: okText.replace('"layers":', `"layers":[{"mediaType":"${OCI_LAYER}","digest":"${missing}","size":1}],"layers":`), status: [201] },
    { why: "dup-config-last-missing", body: okText.slice(0, -1) + `,"config":{"mediaType":"${OCI_CONFIG}","digest":"${missing}","size":1}}`, status: [400], codes: ["MANIFEST_BLOB_UNKNOWN"] },
    // Media type against Content-Type.
    { why: "ct-docker-body-oci", body: okText, ct: DOCKER_MANIFEST, status: [400], codes: INV },
    { why: "ct-index-body-manifest", body: okText, ct: OCI_INDEX, status: [400], codes: INV },
    { why: "ct-text-plain", body: okText, ct: "text/plain", status: [400], codes: INV },
    { why: "ct-garbage", body: okText, ct: "garbage", status: [400], codes: INV },
    { why: "ct-100k", body: okText, ct: "a/" + "b".repeat(100 * KiB), status: [400], codes: INV },
    { why: "ct-with-params", body: okText, ct: OCI_MANIFEST + "; charset=utf-8", status: [201] },
    { why: "ct-uppercase", body: okText, ct: OCI_MANIFEST.toUpperCase(), status: [201] },
    { why: "ct-missing", body: okText, ct: null, status: [201] },
    { why: "ct-json-no-mediaType", body: without("mediaType"), ct: "application/json", status: [201] },
    { why: "ct-index-body-no-mediaType", body: without("mediaType"), ct: OCI_INDEX, status: [400], codes: INV },
    { why: "ct-none-no-shape", body: json({ schemaVersion: 2 }), ct: null, status: [400], codes: INV },
    { why: "index-with-config", body: json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], config: cfg }), ct: OCI_INDEX, status: [400], codes: INV },
    { why: "index-with-layers", body: json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], layers: [] }), ct: OCI_INDEX, status: [400], codes: INV },
    { why: "index-manifests-object", body: json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: {} }), ct: OCI_INDEX, status: [400], codes: INV },
    { why: "index-bad-platform", body: json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: fx.manifest.digest, size: 1, platform: { os: 1 } }] }), ct: OCI_INDEX, status: [400], codes: INV },
    { why: "index-missing-child", body: json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: missing, size: 1 }] }), ct: OCI_INDEX, status: [400], codes: ["MANIFEST_BLOB_UNKNOWN"] },
    { why: "manifest-with-manifests", body: json({ ...ok, manifests: [] }), status: [400], codes: INV },
    { why: "missing-config-blob", body: withCfg({ digest: missing }), status: [400], codes: ["MANIFEST_BLOB_UNKNOWN"] },
    { why: "missing-layer-blob", body: withLayer({ digest: missing }), status: [400], codes: ["MANIFEST_BLOB_UNKNOWN"] },
    // Docker schema 1, in each of its disguises.
    { why: "schema1-body", body: json({ schemaVersion: 1, name: "x", tag: "t", architecture: "amd64", fsLayers: [], history: [] }), ct: null, status: [400], codes: INV },
    { why: "schema1-ct", body: okText, ct: "application/vnd.docker.distribution.manifest.v1+json", status: [400], codes: INV },
    { why: "schema1-signed-ct", body: json({ schemaVersion: 1, name: "x", fsLayers: [], signatures: [] }), ct: "application/vnd.docker.distribution.manifest.v1+prettyjws", status: [400], codes: INV },
    { why: "schema1-fsLayers", body: json({ ...ok, fsLayers: [] }), status: [400], codes: INV },
    // By digest: the body must hash to it.
    { why: "digest-mismatch", body: okText, ref: "sha256:" + hex64(r), status: [400], codes: ["DIGEST_INVALID"] },
    { why: "digest-sha512-mismatch", body: okText, ref: "sha512:" + r.hex(128), status: [400], codes: ["DIGEST_INVALID"] },
    { why: "digest-unsupported", body: okText, ref: "md5:" + r.hex(32), status: [400], codes: ["DIGEST_INVALID"] },
    // A referrer's annotations are indexed: 4,000 KiB must be refused or stored, not a 500.
    { why: "referrer-annotation-4000KiB", body: json(imageManifest(fx, { subject: { mediaType: OCI_MANIFEST, digest: fx.manifest.digest, size: 1 }, annotations: { big: "x".repeat(4000 * KiB) } })), status: [201, 400, 413] },
    // Size: exactly MAX_MANIFEST_BYTES (32 MiB in the test pool) is accepted; one byte more is 413.
    { why: "exactly-max-manifest-bytes", body: padTo(json(imageManifest(fx, { annotations: { pad: "" } })), 32 * MiB), status: [201] },
    { why: "over-max-manifest-bytes", body: json(imageManifest(fx, { annotations: { pad: "" } })).replace('"pad":""', `"pad":"${"x".repeat(32 * MiB)}"`), status: [413], codes: ["SIZE_INVALID"] },
  ];
}

/** Seeded byte-level mutations of a valid manifest: most are refused, some still parse. */
function mutatedManifests(fx: Fixtures, r: Rng, n: number): Uint8Array[] {
  const base = te.encode(JSON.stringify(imageManifest(fx), null, "\t"));
  const noise = te.encode('{}[]",:0a\\ -.e');
  const out: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    let b = base.slice();
    const ops = r.int(1, 3);
    for (let k = 0; k < ops; k++) {
      const at = r.int(0, b.length - 1);
      switch (r.int(0, 5)) {
        case 0: b = new Uint8Array([...b.subarray(0, at), ...b.subarray(at + 1)]); break; // delete
        case 1: b = new Uint8Array([...b.subarray(0, at), r.pick([...noise]), ...b.subarray(at)]); break; // insert
        case 2: b[at] = r.int(0, 255); break; // random byte (may be invalid UTF-8)
        case 3: b = b.subarray(0, at); break; // truncate
        case 4: { const j = r.int(0, b.length - 1); const t = b[at]; b[at] = b[j]; b[j] = t; break; } // swap
        default: b = new Uint8Array([...b.subarray(0, at), ...b.subarray(at, Math.min(b.length, at + r.int(1, 40))), ...b.subarray(at)]); // duplicate a slice
      }
    }
    out.push(b);
  }
  return out;
}

// ---- the corpus -------------------------------------------------------------------------------

const SPEC_SETS = {
  name: ["NAME_INVALID"],
  digest: ["DIGEST_INVALID"],
};

export function generateCorpus(fx: Fixtures, seed = 0x9e3779b9): Case[] {
  const r = new Rng(seed);
  const cases: Case[] = [];
  const add = (c: Case) => cases.push(c);
  const { repo, blob } = fx;
  const validManifest = json(imageManifest(fx));
  const anyDigest = "sha256:" + hex64(r);

  // 1. Invalid names on every route that takes one.
  const nameRoutes: { route: string; method: string; path: (n: string) => string; body?: string; headers?: Record<string, string> }[] = [
    { route: "tags", method: "GET", path: (n) => `/v2/${n}/tags/list` },
    { route: "manifest", method: "GET", path: (n) => `/v2/${n}/manifests/latest` },
    { route: "manifest", method: "HEAD", path: (n) => `/v2/${n}/manifests/latest` },
    { route: "manifest", method: "PUT", path: (n) => `/v2/${n}/manifests/latest`, body: validManifest, headers: { "Content-Type": OCI_MANIFEST } },
    { route: "manifest", method: "DELETE", path: (n) => `/v2/${n}/manifests/${fx.manifest.digest}` },
    { route: "blob", method: "GET", path: (n) => `/v2/${n}/blobs/${blob.digest}` },
    { route: "blob", method: "HEAD", path: (n) => `/v2/${n}/blobs/${blob.digest}` },
    { route: "blob", method: "DELETE", path: (n) => `/v2/${n}/blobs/${blob.digest}` },
    { route: "uploads", method: "POST", path: (n) => `/v2/${n}/blobs/uploads/` },
    { route: "uploads-digest", method: "POST", path: (n) => `/v2/${n}/blobs/uploads/?digest=${blob.digest}`, body: "x" },
    { route: "upload", method: "GET", path: (n) => `/v2/${n}/blobs/uploads/${fx.upload}` },
    { route: "upload", method: "PATCH", path: (n) => `/v2/${n}/blobs/uploads/${fx.upload}`, body: "ab", headers: { "Content-Range": "0-1" } },
    { route: "upload", method: "PUT", path: (n) => `/v2/${n}/blobs/uploads/${fx.upload}?digest=${blob.digest}` },
    { route: "upload", method: "DELETE", path: (n) => `/v2/${n}/blobs/uploads/${fx.upload}` },
    { route: "referrers", method: "GET", path: (n) => `/v2/${n}/referrers/${fx.manifest.digest}` },
  ];
  for (const { name, why, loose } of badNames(r)) {
    for (const rt of nameRoutes) {
      // A loose name may normalise into a valid one: then the route answers for that repository,
      // which holds nothing (404), or a POST opens a session there (202).
      add({
        id: `name/${rt.route}/${rt.method}/${why}`, group: "names", method: rt.method, path: rt.path(name), body: rt.body, headers: rt.headers,
        // A loose name may normalise into a valid one; then the request is an ordinary one on an
        // empty repository, and only the shared rules (no 5xx, OCI envelope) apply.
        status: loose ? [200, 202, 400, 404] : [400],
        codes: loose ? [] : SPEC_SETS.name,
      });
    }
  }
  // Boundary: the longest valid name is routed (and unknown).
  for (const [i, n] of ["a".repeat(255), "a/".repeat(127) + "a", "a" + "-".repeat(253) + "b", "a__b.c-d/e"].entries()) {
    add({ id: `name/tags/GET/valid-boundary-${i}-${n.length}`, group: "names", method: "GET", path: `/v2/${n}/tags/list`, status: [404], codes: ["NAME_UNKNOWN"] });
  }

  // 2. Malformed digests wherever a digest is taken.
  for (const { d, why } of badDigests(r)) {
    const q = enc(decodeURIComponentSafe(d));
    const digestRoutes: [string, string, string, (string | undefined)?, Record<string, string>?][] = [
      ["blob", "GET", `/v2/${repo}/blobs/${d}`],
      ["blob", "HEAD", `/v2/${repo}/blobs/${d}`],
      ["blob", "DELETE", `/v2/${repo}/blobs/${d}`],
      ["referrers", "GET", `/v2/${repo}/referrers/${d}`],
      ["uploads-digest", "POST", `/v2/${repo}/blobs/uploads/?digest=${q}`, "x"],
      ["uploads-mount", "POST", `/v2/${repo}/blobs/uploads/?mount=${q}&from=${fx.other}`],
      ["upload-close", "PUT", `/v2/${repo}/blobs/uploads/${fx.upload}?digest=${q}`],
    ];
    for (const [route, method, path, body, headers] of digestRoutes) {
      add({ id: `digest/${route}/${method}/${why}`, group: "digests", method, path, body, headers, status: [400], codes: SPEC_SETS.digest });
    }
    // Manifests: a malformed digest names nothing (404) or is refused as malformed (400).
    for (const method of ["GET", "HEAD", "DELETE"]) {
      add({ id: `digest/manifest/${method}/${why}`, group: "digests", method, path: `/v2/${repo}/manifests/${d}`, status: [400, 404], codes: ["DIGEST_INVALID", "MANIFEST_UNKNOWN", "MANIFEST_INVALID"] });
    }
    add({ id: `digest/manifest/PUT/${why}`, group: "digests", method: "PUT", path: `/v2/${repo}/manifests/${d}`, body: validManifest, headers: { "Content-Type": OCI_MANIFEST }, status: [400], codes: ["DIGEST_INVALID", "MANIFEST_INVALID"] });
  }
  // Missing digest query parameters.
  add({ id: "digest/upload-close/PUT/absent", group: "digests", method: "PUT", path: `/v2/${repo}/blobs/uploads/${fx.upload}`, status: [400], codes: SPEC_SETS.digest });
  add({ id: "digest/upload-close/PUT/empty", group: "digests", method: "PUT", path: `/v2/${repo}/blobs/uploads/${fx.upload}?digest=`, status: [400], codes: SPEC_SETS.digest });
  add({ id: "digest/uploads-digest/POST/empty", group: "digests", method: "POST", path: `/v2/${repo}/blobs/uploads/?digest=`, body: "x", status: [400], codes: SPEC_SETS.digest });

  // 3. Invalid tags (references).
  const badTags: [string, string][] = [
    ["a".repeat(129), "129-chars"], ["a".repeat(10_000), "10k-chars"], [".a", "leading-dot"], ["-a", "leading-dash"],
    ["a*b", "star"], ["a+b", "plus"], ["a=b", "equals"], ["a!b", "bang"], ["a@b", "at"], ["a$b", "dollar"], ["a,b", "comma"],
    ["a;b", "semicolon"], ["a(b)", "parens"], ["a'b", "quote"], ["a~b", "tilde"], ["a%20b", "space"], ["%C3%A4", "non-ascii"],
    ["a%00", "nul"], ["a%2Fb", "encoded-slash"], ["a%3Ab", "encoded-colon"],
  ];
  for (let i = 0; i < 12; i++) {
    const t = r.component() + r.pick(["*", "+", "!", "'", "~", "$", "%25", "%7F", "^", "|"]) + r.component();
    badTags.push([t, `random-${i}`]);
  }
  for (const [t, why] of badTags) {
    const encoded = t.includes("%");
    for (const method of ["GET", "HEAD", "DELETE"]) {
      add({ id: `tag/manifest/${method}/${why}`, group: "references", method, path: `/v2/${repo}/manifests/${t}`, status: encoded ? [400, 404] : [404], codes: ["MANIFEST_UNKNOWN", "MANIFEST_INVALID"] });
    }
    add({ id: `tag/manifest/PUT/${why}`, group: "references", method: "PUT", path: `/v2/${repo}/manifests/${t}`, body: validManifest, headers: { "Content-Type": OCI_MANIFEST }, status: [400], codes: ["MANIFEST_INVALID"] });
  }
  add({ id: "tag/manifest/GET/128-chars-valid", group: "references", method: "GET", path: `/v2/${repo}/manifests/${"a".repeat(128)}`, status: [404], codes: ["MANIFEST_UNKNOWN"] });
  add({ id: "tag/manifest/GET/unknown-digest", group: "references", method: "GET", path: `/v2/${repo}/manifests/${anyDigest}`, status: [404], codes: ["MANIFEST_UNKNOWN"] });

  // 4. Range on blob GET/HEAD (blob of blob.size bytes).
  const S = blob.size;
  const huge = "9".repeat(400);
  const ranges: [string, number, [number, number] | null][] = [
    // [header, status, [start,end] of a 206]
    ["bytes=9-0", 416, null], [`bytes=${S}-`, 416, null], [`bytes=${S}-${S}`, 416, null], ["bytes=-0", 416, null],
    ["bytes=-", 416, null], ["bytes=", 416, null], ["bytes=abc", 416, null], ["bytes=a-b", 416, null], ["bytes=1-a", 416, null],
    ["bytes=99999999999999999999-", 416, null], [`bytes=${huge}-`, 416, null], [`bytes=${huge}-${huge}`, 416, null],
    ["bytes=1.5-2", 416, null], ["bytes=-1-2", 416, null], ["bytes=0x10-0x20", 416, null], ["bytes=0--9", 416, null],
    ["bytes=--9", 416, null], ["bytes=+0-9", 416, null], ["bytes=1e2-2e2", 416, null], ["bytes=0-9-", 416, null],
    ["bytes=" + "9".repeat(70_000), 416, null],
    ["bytes=0-99999999999999999999", 206, [0, S - 1]], [`bytes=0-${huge}`, 206, [0, S - 1]], [`bytes=-${huge}`, 206, [0, S - 1]],
    ["bytes=-99999999999999999999", 206, [0, S - 1]], [`bytes=${S - 1}-${S - 1}`, 206, [S - 1, S - 1]], ["bytes= 0-9", 206, [0, 9]],
    ["BYTES=0-9", 206, [0, 9]], ["bytes=0-9 ", 206, [0, 9]],
    // Several ranges, another unit, or no "=": served whole (RFC 9110 lets a server ignore Range).
    ["bytes=0-9,20-29", 200, null], ["bytes=0-9, 20-29", 200, null], ["bytes=9-0,0-1", 200, null], ["bytes=" + "0-0,".repeat(16_000) + "0-0", 200, null],
    ["items=0-9", 200, null], ["bytes 0-9", 200, null], ["0-9", 200, null], ["", 200, null],
  ];
  for (const [h, status, span] of ranges) {
    for (const method of ["GET", "HEAD"]) {
      // HEAD answers the whole representation's headers; a malformed range is still refused.
      const want = method === "HEAD" && status === 206 ? 200 : status;
      add({
        id: `range/blob/${method}/${h.length > 40 ? h.slice(0, 20) + `…(${h.length})` : h}`, group: "ranges", method, path: `/v2/${repo}/blobs/${blob.digest}`,
        headers: { Range: h }, status: [want], codes: ["BLOB_UPLOAD_INVALID", "SIZE_INVALID", "UNSUPPORTED"],
        check: (res) => {
          if (res.status === 416 && res.headers.get("Content-Range") !== `bytes */${S}`) return `416 without Content-Range bytes */${S}`;
          if (res.status === 206 && span && res.headers.get("Content-Range") !== `bytes ${span[0]}-${span[1]}/${S}`) return `206 with Content-Range ${res.headers.get("Content-Range")}`;
          return null;
        },
      });
    }
  }
  // Range and If-None-Match on manifests are ignored or answered by the spec's rules.
  add({ id: "range/manifest/GET/inverted", group: "ranges", method: "GET", path: `/v2/${repo}/manifests/${fx.manifest.tag}`, headers: { Range: "bytes=9-0" }, status: [200, 416] });
  add({ id: "ifnonematch/blob/GET/star", group: "ranges", method: "GET", path: `/v2/${repo}/blobs/${blob.digest}`, headers: { "If-None-Match": "*" }, status: [304] });
  add({ id: "ifnonematch/blob/GET/garbage", group: "ranges", method: "GET", path: `/v2/${repo}/blobs/${blob.digest}`, headers: { "If-None-Match": '"x", W/"y", ,,,' }, status: [200] });
  add({ id: "ifnonematch/blob/GET/1MiB", group: "ranges", method: "GET", path: `/v2/${repo}/blobs/${blob.digest}`, headers: { "If-None-Match": '"x",'.repeat(256 * KiB) }, status: [200] });

  // 5. Content-Range on PATCH and PUT of an open session (offset 0): never appends.
  // [Content-Range, body, statuses]; ranges that parse and start at 0 would really append on a
  // PUT (and close the session), so those are sent as PATCH only, where the length check refuses them.
  const contentRanges: [string, string, number[]][] = [
    ["5-2", "ab", [416]], ["abc", "ab", [416]], ["0-", "ab", [416]], ["-1", "ab", [416]], ["0-1,2-3", "ab", [416]],
    ["bytes=0-1/2/3", "ab", [416]], ["1-2", "ab", [416]], ["2-3", "ab", [416]], ["0x0-0x1", "ab", [416]], ["1e0-2e0", "ab", [416]],
    ["-0-1", "ab", [416]], ["0 - 1", "ab", [416]], ["0-1-2", "ab", [416]], ["bytes */2", "ab", [416]], ["", "ab", [416]],
    ["0-5", "ab", [400, 416]], ["0-0", "ab", [400, 416]], ["0-99999999999999999999", "a", [400, 416]],
    ["99999999999999999999-99999999999999999999", "a", [400, 416]], [`${huge}-${huge}`, "a", [400, 416]],
    [`0-${huge}`, "a", [400, 416]], ["4294967296-4294967297", "ab", [416]], ["9007199254740993-9007199254740994", "ab", [400, 416]],
    ["0-" + "1".repeat(70_000), "ab", [400, 416]],
  ];
  let spare = 0;
  for (const [cr, body, status] of contentRanges) {
    const label = cr.length > 40 ? cr.slice(0, 20) + `…(${cr.length})` : cr;
    const startsAtZero = /^0-\d+$/.test(cr);
    const headers = { "Content-Range": cr, "Content-Type": "application/octet-stream" };
    add({ id: `content-range/upload/PATCH/${label}`, group: "content-range", method: "PATCH", path: `/v2/${repo}/blobs/uploads/${fx.upload}`, headers: { ...headers, "Content-Length": String(body.length) }, body, status, codes: ["BLOB_UPLOAD_INVALID", "SIZE_INVALID"] });
    // Without Content-Length (chunked, as docker sends), the range's length must still be checked
    // against the bytes that arrive; a spare session takes these, since a miss would append.
    if (startsAtZero) add({ id: `content-range/upload/PATCH-chunked/${label}`, group: "content-range", method: "PATCH", path: `/v2/${repo}/blobs/uploads/${fx.spares[spare++ % fx.spares.length]}`, headers, body, status, codes: ["BLOB_UPLOAD_INVALID", "SIZE_INVALID"] });
    // A closing PUT whose Content-Range disagrees with its Content-Length must be refused for
    // that, not closed with the bytes it carried (spare sessions again: a miss ends the session).
    if (startsAtZero) add({ id: `content-range/upload/PUT-spare/${label}`, group: "content-range", method: "PUT", path: `/v2/${repo}/blobs/uploads/${fx.spares[spare++ % fx.spares.length]}?digest=${blob.digest}`, headers: { ...headers, "Content-Length": String(body.length) }, body, status, codes: ["BLOB_UPLOAD_INVALID", "SIZE_INVALID"] });
    if (startsAtZero) continue;
    add({ id: `content-range/upload/PUT/${label}`, group: "content-range", method: "PUT", path: `/v2/${repo}/blobs/uploads/${fx.upload}?digest=${blob.digest}`, headers: { "Content-Range": cr, "Content-Type": "application/octet-stream" }, body, status, codes: ["BLOB_UPLOAD_INVALID", "SIZE_INVALID", "DIGEST_INVALID"] });
  }

  // 6. Pagination on tags, catalog and referrers.
  const pageRoutes: [string, string][] = [
    ["tags", `/v2/${repo}/tags/list`],
    ["catalog", "/v2/_catalog"],
    ["referrers", `/v2/${repo}/referrers/${fx.manifest.digest}`],
  ];
  const badN = ["-1", "-0", "1.5", "1e3", "0x10", "%201", "1%20", "%2B1", "abc", "NaN", "Infinity", "-Infinity", "1,2", "%00", "%D9%A1", "0.0", "00x", "1_000", "%EF%BC%91"];
  const okN = ["0", "1", "007", "1000", "1001", "99999999999999999999999", huge];
  const badLast = ["%00", "%FF", "..%2F..%2F", "'%20OR%201=1%20--", "%E2%80%AE", "z".repeat(256), "x".repeat(10_000)];
  for (const [route, base] of pageRoutes) {
    for (const n of badN) add({ id: `page/${route}/GET/n=${n}`, group: "pagination", method: "GET", path: `${base}?n=${n}`, status: [400], codes: ["UNSUPPORTED"] });
    for (const n of okN) add({ id: `page/${route}/GET/n=${n.length > 30 ? `9x${n.length}` : n}`, group: "pagination", method: "GET", path: `${base}?n=${n}`, status: [200] });
    // An empty n is "no n" to the reference registry; either answer is fine, but never a 5xx.
    add({ id: `page/${route}/GET/n=empty`, group: "pagination", method: "GET", path: `${base}?n=`, status: [200, 400], codes: ["UNSUPPORTED"] });
    add({ id: `page/${route}/GET/n-twice-first-bad`, group: "pagination", method: "GET", path: `${base}?n=abc&n=1`, status: [400], codes: ["UNSUPPORTED"] });
    add({ id: `page/${route}/GET/n-twice-first-good`, group: "pagination", method: "GET", path: `${base}?n=1&n=abc`, status: [200, 400], codes: ["UNSUPPORTED"] });
    for (const last of badLast) add({ id: `page/${route}/GET/last=${last.length > 30 ? `${last[0]}x${last.length}` : last}`, group: "pagination", method: "GET", path: `${base}?n=5&last=${last}`, status: [200, 400], codes: ["UNSUPPORTED"] });
    add({ id: `page/${route}/GET/last=empty`, group: "pagination", method: "GET", path: `${base}?last=`, status: [200] });
    add({ id: `page/${route}/GET/last=1MiB`, group: "pagination", method: "GET", path: `${base}?last=${"l".repeat(MiB)}`, status: [200, 400, 414], codes: ["UNSUPPORTED", "SIZE_INVALID"] });
    add({ id: `page/${route}/GET/last=3MiB`, group: "pagination", method: "GET", path: `${base}?last=${"l".repeat(3 * MiB)}`, status: [200, 400, 414], codes: ["UNSUPPORTED", "SIZE_INVALID"] });
  }

  // 7. Manifest bodies.
  let m = 0;
  for (const b of manifestBodies(fx, r)) {
    const headers: Record<string, string> = {};
    const ct = b.ct === undefined ? OCI_MANIFEST : b.ct;
    if (ct !== null) headers["Content-Type"] = ct;
    add({ id: `manifest/PUT/${b.why}`, group: "manifests", method: "PUT", path: `/v2/${repo}/manifests/${b.ref ?? `corpus-${m++}`}`, headers, body: b.body, status: b.status, codes: b.codes });
  }
  for (const [i, body] of mutatedManifests(fx, r, 150).entries()) {
    add({ id: `manifest/PUT/mutated-${i}`, group: "manifests", method: "PUT", path: `/v2/${repo}/manifests/mutated-${i}`, headers: { "Content-Type": OCI_MANIFEST }, body, status: [201, 400], codes: ["MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN"] });
  }

  // 8. Upload ids: unknown, malformed, and another repository's.
  const uuid4 = () => { const h = r.hex(32); return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20)}`; };
  const ids: [string, string][] = [
    [uuid4(), "unknown-v4"], [uuid4(), "unknown-v4-2"], [fx.upload.toUpperCase(), "uppercase-of-open"], [fx.upload.replace(/-/g, ""), "no-dashes"],
    [fx.upload + "0", "open-plus-char"], [fx.upload.slice(1), "open-minus-char"], ["00000000-0000-1000-8000-000000000000", "v1"],
    ["00000000-0000-0000-0000-000000000000", "nil"], ["x", "x"], ["a".repeat(10_000), "10k"], ["%2e%2e%2F" + fx.upload, "encoded-traversal"],
    [fx.otherUpload, "other-repos-upload"], ["%00", "nul"], [fx.upload + "%00", "open-plus-nul"], ["-1", "minus-one"],
  ];
  for (const [id, why] of ids) {
    const p = `/v2/${repo}/blobs/uploads/${id}`;
    const reqs: [string, string, string?, Record<string, string>?][] = [
      ["GET", p], ["PATCH", p, "ab", { "Content-Type": "application/octet-stream" }], ["PATCH", p, "ab", { "Content-Range": "0-1" }],
      ["PUT", `${p}?digest=${blob.digest}`], ["PUT", `${p}?digest=${blob.digest}`, "x"], ["DELETE", p],
    ];
    for (const [j, [method, path, body, headers]] of reqs.entries()) {
      add({ id: `upload-id/${method}/${why}/${j}`, group: "upload-ids", method, path, body, headers, status: [404], codes: ["BLOB_UPLOAD_UNKNOWN", "NAME_UNKNOWN"] });
    }
  }

  // 9. Methods a route does not take, and paths that are no route.
  const routes: [string, string, string[]][] = [
    ["base", "/v2/", ["GET", "HEAD"]],
    ["catalog", "/v2/_catalog", ["GET", "HEAD"]],
    ["tags", `/v2/${repo}/tags/list`, ["GET", "HEAD"]],
    ["manifest", `/v2/${repo}/manifests/${fx.manifest.tag}`, ["GET", "HEAD", "PUT", "DELETE"]],
    ["blob", `/v2/${repo}/blobs/${blob.digest}`, ["GET", "HEAD", "DELETE"]],
    ["uploads", `/v2/${repo}/blobs/uploads/`, ["POST"]],
    ["upload", `/v2/${repo}/blobs/uploads/${fx.upload}`, ["GET", "PATCH", "PUT", "DELETE"]],
    ["referrers", `/v2/${repo}/referrers/${fx.manifest.digest}`, ["GET", "HEAD"]],
  ];
    // workerd refuses methods it does not know (e.g. "FOO") before the Worker runs, and upper-cases
  // the ones it knows, so these are all a client can reach us with.
  const methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH", "PURGE"];
  for (const [route, path, allowed] of routes) {
    for (const method of methods) {
      if (allowed.includes(method)) continue;
      add({
        id: `method/${route}/${method}`, group: "methods", method, path, status: [405], codes: ["UNSUPPORTED"],
        check: (res) => (res.headers.get("Allow") ? null : "405 without an Allow header"),
      });
    }
  }
  const noRoute = [
    `/v2/${repo}`, `/v2/${repo}/`, `/v2/${repo}/blobs`, `/v2/${repo}/blobs/`, `/v2/${repo}/manifests`, `/v2/${repo}/manifests/`,
    `/v2/${repo}/tags`, `/v2/${repo}/tags/list/x`, "/v2/_catalog/x", `/v2/${repo}/referrers/`, `/v2/${repo}/foo/bar`,
    `/v2/${repo}/blobs/uploads/${fx.upload}/x`, "/v2//", "/v2/_catalog/", `/v2/${repo}/tags/list/`,
  ];
  for (const path of noRoute) {
    for (const method of ["GET", "PUT"]) add({ id: `noroute/${method}/${path.replace(repo, "<repo>")}`, group: "methods", method, path, status: [404], codes: ["NAME_UNKNOWN"] });
  }

  // 10. Oversized headers and queries.
  const mpath = `/v2/${repo}/manifests/${fx.manifest.tag}`;
  add({ id: "big/manifest/GET/accept-1MiB-junk", group: "oversized", method: "GET", path: mpath, headers: { Accept: "x/y,".repeat(256 * KiB) }, status: [404, 406], codes: ["MANIFEST_UNKNOWN"] });
  add({ id: "big/manifest/GET/accept-1MiB-star", group: "oversized", method: "GET", path: mpath, headers: { Accept: "x/y,".repeat(256 * KiB) + "*/*" }, status: [200] });
  add({ id: "big/manifest/GET/accept-q-junk", group: "oversized", method: "GET", path: mpath, headers: { Accept: `${OCI_MANIFEST};q=abc;q=;=;;,` }, status: [200, 404], codes: ["MANIFEST_UNKNOWN"] });
  add({ id: "big/manifest/PUT/ct-1MiB", group: "oversized", method: "PUT", path: `/v2/${repo}/manifests/big-ct`, headers: { "Content-Type": "a/" + "b".repeat(MiB) }, body: validManifest, status: [400], codes: ["MANIFEST_INVALID"] });
  add({ id: "big/tags/GET/100k-params", group: "oversized", method: "GET", path: `/v2/${repo}/tags/list?` + Array.from({ length: 100_000 }, (_, i) => `p${i}=${i}`).join("&"), status: [200] });
  add({ id: "big/blob/GET/1MiB-query", group: "oversized", method: "GET", path: `/v2/${repo}/blobs/${blob.digest}?q=${"q".repeat(MiB)}`, status: [200] });
  add({ id: "big/base/GET/1MiB-header", group: "oversized", method: "GET", path: "/v2/", headers: { "X-Junk": "j".repeat(MiB) }, status: [200] });
  add({ id: "big/base/GET/5000-headers", group: "oversized", method: "GET", path: "/v2/", headers: Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`x-h${i}`, "v"])), status: [200] });
  add({ id: "big/blob/GET/range-1MiB", group: "oversized", method: "GET", path: `/v2/${repo}/blobs/${blob.digest}`, headers: { Range: "bytes=" + "1".repeat(MiB) + "-" }, status: [416] });
  add({ id: "big/upload/PATCH/content-range-1MiB", group: "oversized", method: "PATCH", path: `/v2/${repo}/blobs/uploads/${fx.upload}`, headers: { "Content-Range": "0-" + "1".repeat(MiB), "Content-Length": "2" }, body: "ab", status: [400, 416] });
  add({ id: "big/upload/PATCH-chunked/content-range-1MiB", group: "oversized", method: "PATCH", path: `/v2/${repo}/blobs/uploads/${fx.spares[spare++ % fx.spares.length]}`, headers: { "Content-Range": "0-" + "1".repeat(MiB) }, body: "ab", status: [400, 416] });
  add({ id: "big/uploads/POST/mount-from-1MiB", group: "oversized", method: "POST", path: `/v2/${repo}/blobs/uploads/?mount=${blob.digest}&from=${"f".repeat(MiB)}`, status: [202] });
  add({ id: "big/uploads/POST/digest-algorithm-junk", group: "oversized", method: "POST", path: `/v2/${repo}/blobs/uploads/?digest-algorithm=${"md5".repeat(1000)}`, status: [202] });
  add({ id: "big/manifest/GET/authorization-1MiB-open", group: "oversized", method: "GET", path: mpath, headers: { Authorization: "Bearer " + "t".repeat(MiB) }, status: [200, 401], codes: ["UNAUTHORIZED"] });

  // 11. Referrers filters.
  const rpath = `/v2/${repo}/referrers/${fx.manifest.digest}`;
  for (const count of [1, 10, 48, 49, 50, 100, 1000]) {
    const q = Array.from({ length: count }, (_, i) => `annotation=${enc(`k${i}=v${i}`)}`).join("&");
    add({ id: `referrers/GET/annotation-filters-${count}`, group: "referrers", method: "GET", path: `${rpath}?${q}`, status: [200, 400], codes: ["UNSUPPORTED"] });
  }
  const badAnnotations = ["noeq", "=v", "%22k%22=v", "=", "%00=%00"];
  for (const a of badAnnotations) add({ id: `referrers/GET/annotation-${a}`, group: "referrers", method: "GET", path: `${rpath}?annotation=${a}`, status: [200, 400], codes: ["UNSUPPORTED"] });
  add({ id: "referrers/GET/annotation-empty-value", group: "referrers", method: "GET", path: `${rpath}?annotation=k=`, status: [200] });
  add({ id: "referrers/GET/annotation-key-100k", group: "referrers", method: "GET", path: `${rpath}?annotation=${"k".repeat(100 * KiB)}=v`, status: [200, 400], codes: ["UNSUPPORTED"] });
  add({ id: "referrers/GET/annotation-value-3MiB", group: "referrers", method: "GET", path: `${rpath}?annotation=k=${"v".repeat(3 * MiB)}`, status: [200, 400], codes: ["UNSUPPORTED"] });
  const artifactTypes: [string, number[]][] = [
    ["", [200, 400]], ["a", [400]], ["a/b/c", [400]], ["..%2F..", [400]], ["text/plain;%20charset=utf-8", [400]], ["a".repeat(300) + "/b", [400]],
    ["%00", [400]], ["%C3%A4/b", [400]], ["*/*", [400]], ["application/vnd.example%2Bjson", [200]], ["a/" + "b".repeat(MiB), [400]],
  ];
  for (const [t, status] of artifactTypes) {
    add({ id: `referrers/GET/artifactType-${t.length > 30 ? `${t.slice(0, 10)}…${t.length}` : t}`, group: "referrers", method: "GET", path: `${rpath}?artifactType=${t}`, status, codes: ["UNSUPPORTED"] });
  }
  add({ id: "referrers/GET/artifactType-twice", group: "referrers", method: "GET", path: `${rpath}?artifactType=a/b&artifactType=nope`, status: [200, 400], codes: ["UNSUPPORTED"] });
  add({ id: "referrers/GET/unknown-subject", group: "referrers", method: "GET", path: `/v2/${repo}/referrers/${anyDigest}`, status: [200] });
  add({ id: "referrers/GET/unknown-repo", group: "referrers", method: "GET", path: `/v2/corpus/nowhere/referrers/${anyDigest}`, status: [200, 404], codes: ["NAME_UNKNOWN"] });

  // 12. Monolithic and mount uploads with wrong claims.
  const mono: [string, string, string | undefined, number[], string[]][] = [
    ["digest-mismatch", `?digest=${anyDigest}`, "hello", [400], ["DIGEST_INVALID"]],
    ["empty-body-wrong-digest", `?digest=${anyDigest}`, "", [400], ["DIGEST_INVALID"]],
    ["sha512-mismatch", `?digest=sha512:${r.hex(128)}`, "hello", [400], ["DIGEST_INVALID"]],
    ["blake3-mismatch", `?digest=blake3:${r.hex(64)}`, "hello", [400], ["DIGEST_INVALID"]],
    ["digest-twice", `?digest=${anyDigest}&digest=${blob.digest}`, "hello", [400], ["DIGEST_INVALID"]],
    ["mount-from-bad-name", `?mount=${blob.digest}&from=BAD..name`, undefined, [202], []],
    ["mount-unknown-digest", `?mount=${anyDigest}&from=${fx.other}`, undefined, [202], []],
    ["mount-and-bad-digest", `?mount=${blob.digest}&from=nowhere&digest=nope`, undefined, [202, 400], ["DIGEST_INVALID"]],
  ];
  for (const [why, q, body, status, codes] of mono) {
    add({ id: `uploads/POST/${why}`, group: "uploads", method: "POST", path: `/v2/${repo}/blobs/uploads/${q}`, body, headers: body !== undefined ? { "Content-Type": "application/octet-stream" } : undefined, status, codes });
  }
  return cases;
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
