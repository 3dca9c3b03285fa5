// Manifest and index parsing and validation: pure, synchronous, no I/O.
//
// The manifest routes call parseManifest() on the pushed bytes, then ask the stores whether
// requiredBlobs()/requiredManifests() exist in the repository before accepting the push.
//
// Validation is written as plain checks rather than zod schemas: a 16 MiB manifest with ~100k
// layers validates ~3x faster this way (measured: zod ≈ 30–50 ms vs ≈ 13–18 ms for the
// descriptor walk, on top of ≈ 35 ms of JSON.parse), and each rule produces its own precise,
// path-bearing message (`layers[2].digest "…" must be sha256: followed by 64 …`) without an
// issue-translation layer. Each rule lives in exactly one function below.
import { oci } from "./errors";
import { runSliced, runWhole, type SliceClock, type Sliced } from "../util/slices";
import { parseDigest, truncate, tryParseDigest } from "./grammar";
import {
  MAX_MANIFEST_JSON_CONTAINERS, MAX_MANIFEST_JSON_DEPTH, MAX_MANIFEST_JSON_MEMBERS, MAX_MANIFEST_REFERENCES, MAX_REFERRER_ANNOTATION_BYTES,
  BUILD_CACHE_ARTIFACT_TYPE, MAX_MANIFEST_REFERENCES_CEILING,
} from "./limits";

export const MediaType = {
  OCI_MANIFEST: "application/vnd.oci.image.manifest.v1+json",
  OCI_INDEX: "application/vnd.oci.image.index.v1+json",
  OCI_CONFIG: "application/vnd.oci.image.config.v1+json",
  OCI_LAYER: "application/vnd.oci.image.layer.v1.tar",
  OCI_LAYER_GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
  OCI_LAYER_ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
  OCI_EMPTY: "application/vnd.oci.empty.v1+json",
  DOCKER_MANIFEST: "application/vnd.docker.distribution.manifest.v2+json",
  DOCKER_LIST: "application/vnd.docker.distribution.manifest.list.v2+json",
  DOCKER_CONFIG: "application/vnd.docker.container.image.v1+json",
  DOCKER_LAYER: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DOCKER_FOREIGN_LAYER: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  DOCKER_SCHEMA1: "application/vnd.docker.distribution.manifest.v1+json",
  DOCKER_SCHEMA1_SIGNED: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

/** The manifest media types this registry accepts on push. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.OCI_MANIFEST,
  MediaType.OCI_INDEX,
  MediaType.DOCKER_MANIFEST,
  MediaType.DOCKER_LIST,
];

const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.OCI_INDEX, MediaType.DOCKER_LIST];
const SCHEMA1_MEDIA_TYPES: readonly string[] = [MediaType.DOCKER_SCHEMA1, MediaType.DOCKER_SCHEMA1_SIGNED];
/** Content-Types that say nothing about the manifest's kind; the body decides. */
const GENERIC_CONTENT_TYPES: readonly string[] = ["", "application/json", "application/octet-stream"];

/** RFC 6838 §4.2: type "/" subtype, each restricted-name = ALPHA/DIGIT then up to 126 restricted-name-chars. */
export const MEDIA_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

export interface Platform {
  architecture: string;
  os: string;
  "os.version"?: string;
  "os.features"?: string[];
  variant?: string;
  features?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
  /** base64 embedded content; its decoded length is checked against size (its digest is not). */
  data?: string;
}

export interface ParsedManifest {
  /** Effective media type: body mediaType, else Content-Type, else inferred from shape. Always one of MANIFEST_MEDIA_TYPES. */
  mediaType: string;
  kind: "image" | "index";
  /** Image manifests only. */
  config?: Descriptor;
  /** Image manifests; [] for an index. */
  layers: Descriptor[];
  /** Index / manifest-list children; [] for an image manifest. */
  manifests: Descriptor[];
  subject?: Descriptor;
  /** For the referrers API: manifest artifactType, else (image) config.mediaType; undefined for an index without one. */
  artifactType?: string;
  annotations?: Record<string, string>;
}

const SCHEMA1_REFUSAL =
  "Docker schema 1 manifests are not supported; push a schema 2 or OCI manifest (e.g. skopeo copy --format v2s2 or --format oci)";

type Json = Record<string, unknown>;

/** Slice sizes of parseManifestSliced: each slice is a few ms of work (docs/adr/0022). */
const SCAN_SLICE_BYTES = 2 * 1024 * 1024;
const VALIDATE_SLICE_DESCRIPTORS = 10_000;

function invalid(message: string, field?: string): never {
  throw oci("MANIFEST_INVALID", message, field === undefined ? undefined : { field });
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const has = (o: Json, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k) && o[k] !== undefined;
/** Short rendering of an offending value for messages. */
const show = (v: unknown): string => {
  if (typeof v === "string") return JSON.stringify(truncate(v));
  if (Array.isArray(v)) return "an array";
  if (v === null) return "null";
  if (typeof v === "object") return "an object";
  return truncate(String(v));
};

/** Media type from a Content-Type header: parameters dropped, trimmed, lower-cased. */
function normalizeContentType(ct: string | null | undefined): string {
  if (!ct) return "";
  const semi = ct.indexOf(";");
  return (semi < 0 ? ct : ct.slice(0, semi)).trim().toLowerCase();
}

// ---------------------------------------------------------------------------------------------
// Field rules. `path` is a thunk so that the hot path (100k valid descriptors) builds no strings.

type Path = () => string;

function checkMediaTypeValue(v: unknown, path: Path): string {
  if (typeof v !== "string") invalid(`${path()} must be a media type string, got ${show(v)}`, path());
  if (!MEDIA_TYPE_RE.test(v)) invalid(`${path()} ${show(v)} is not a valid media type (expected type/subtype, RFC 6838)`, path());
  return v;
}

function checkDigestValue(v: unknown, path: Path): string {
  if (typeof v !== "string") invalid(`${path()} must be a digest string, got ${show(v)}`, path());
  if (tryParseDigest(v)) return v;
  // Let the grammar module say precisely what is wrong, but report it as MANIFEST_INVALID.
  try {
    parseDigest(v, path());
  } catch (e) {
    invalid((e as Error).message, path());
  }
  invalid(`${path()} ${show(v)} is not a valid digest`, path());
}

function checkSizeValue(v: unknown, path: Path): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    invalid(`${path()} must be a non-negative integer, got ${show(v)}`, path());
  }
  return v;
}

function checkStringArray(v: unknown, path: Path): void {
  if (!Array.isArray(v)) invalid(`${path()} must be an array of strings, got ${show(v)}`, path());
  for (let i = 0; i < v.length; i++) {
    if (typeof v[i] !== "string") invalid(`${path()}[${i}] must be a string, got ${show(v[i])}`, `${path()}[${i}]`);
  }
}

function checkAnnotations(v: unknown, path: Path): void {
  if (!isObject(v)) invalid(`${path()} must be an object mapping strings to strings, got ${show(v)}`, path());
  for (const k in v) {
    if (has(v, k) && typeof v[k] !== "string") {
      invalid(`${path()}[${JSON.stringify(truncate(k))}] must be a string, got ${show(v[k])}`, `${path()}.${k}`);
    }
  }
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Embedded data: standard padded base64 whose decoded length equals size. (Its digest is not verified: that needs async crypto.subtle.) */
function checkData(v: unknown, size: number, path: Path): void {
  if (typeof v !== "string" || !BASE64_RE.test(v)) invalid(`${path()} must be a base64 string`, path());
  const decoded = (v.length / 4) * 3 - (v.endsWith("==") ? 2 : v.endsWith("=") ? 1 : 0);
  if (decoded !== size) invalid(`${path()} decodes to ${decoded} bytes but size is ${size}`, path());
}

function checkPlatform(v: unknown, path: Path): void {
  if (!isObject(v)) invalid(`${path()} must be an object, got ${show(v)}`, path());
  for (const k of ["architecture", "os"] as const) {
    if (typeof v[k] !== "string") invalid(`${path()}.${k} is required and must be a string, got ${show(v[k])}`, `${path()}.${k}`);
  }
  for (const k of ["os.version", "variant"] as const) {
    if (has(v, k) && typeof v[k] !== "string") invalid(`${path()}["${k}"] must be a string, got ${show(v[k])}`, `${path()}.${k}`);
  }
  for (const k of ["os.features", "features"] as const) {
    if (has(v, k)) checkStringArray(v[k], () => `${path()}["${k}"]`);
  }
}

/** One descriptor (config, layer, child manifest, subject). Unknown fields are tolerated. */
function checkDescriptor(v: unknown, path: Path): Descriptor {
  if (!isObject(v)) invalid(`${path()} must be a descriptor object, got ${show(v)}`, path());
  if (!has(v, "mediaType")) invalid(`${path()}.mediaType is required`, `${path()}.mediaType`);
  checkMediaTypeValue(v.mediaType, () => `${path()}.mediaType`);
  if (!has(v, "digest")) invalid(`${path()}.digest is required`, `${path()}.digest`);
  checkDigestValue(v.digest, () => `${path()}.digest`);
  if (!has(v, "size")) invalid(`${path()}.size is required`, `${path()}.size`);
  const size = checkSizeValue(v.size, () => `${path()}.size`);
  if (has(v, "urls")) checkStringArray(v.urls, () => `${path()}.urls`);
  if (has(v, "annotations")) checkAnnotations(v.annotations, () => `${path()}.annotations`);
  if (has(v, "artifactType")) checkMediaTypeValue(v.artifactType, () => `${path()}.artifactType`);
  if (has(v, "platform")) checkPlatform(v.platform, () => `${path()}.platform`);
  if (has(v, "data")) checkData(v.data, size, () => `${path()}.data`);
  return v as unknown as Descriptor;
}

/** Go encoders write a nil slice as `null`; distribution reads that as empty, and so do we. */
function* checkDescriptorArray(v: unknown, name: string): Sliced<Descriptor[]> {
  if (v === null) return [];
  if (!Array.isArray(v)) invalid(`${name} must be an array of descriptors, got ${show(v)}`, name);
  for (let i = 0; i < v.length; i++) {
    if (i > 0 && i % VALIDATE_SLICE_DESCRIPTORS === 0) yield;
    checkDescriptor(v[i], () => `${name}[${i}]`);
  }
  return v as Descriptor[];
}

// ---------------------------------------------------------------------------------------------

/**
 * Where the one large array of a manifest lies (the top-level `layers` or `manifests`), so that
 * parseManifestSliced can JSON.parse it in pieces: `start`/`end` are the byte offsets of its `[` and
 * `]`, `seps` those of the commas between its elements.
 */
interface ArraySplit { key: "layers" | "manifests"; start: number; end: number; seps: number[] }

const KEY_LAYERS = new TextEncoder().encode("layers");
const KEY_MANIFESTS = new TextEncoder().encode("manifests");
const bytesAre = (body: Uint8Array, from: number, to: number, want: Uint8Array) =>
  to - from === want.length && want.every((b, k) => body[from + k] === b);

/**
 * Bound what JSON.parse will build: nesting depth, objects + arrays, and object members (a ':'
 * outside strings), counted in one pass over the bytes. Strings are skipped with a native search
 * for the closing quote. UTF-8 continuation bytes are never ASCII, so byte values are safe to test.
 * Malformed JSON is left to JSON.parse to describe. On the way it notes where the top-level
 * `layers`/`manifests` array lies (ArraySplit), unless such a key appears twice.
 */
function* checkJsonShape(body: Uint8Array): Sliced<ArraySplit | null> {
  let depth = 0;
  let containers = 0;
  let members = 0;
  const n = body.length;
  let sliceEnd = SCAN_SLICE_BYTES;
  let key: ArraySplit["key"] | null = null; // the depth-1 string just read, when it is a target name
  let awaiting: ArraySplit["key"] | null = null; // after `"layers":` at depth 1, until the value starts
  let current: ArraySplit | null = null;
  let split: ArraySplit | null = null;
  let targets = 0;
  for (let i = 0; i < n; i++) {
    if (i >= sliceEnd) {
      yield;
      sliceEnd = i + SCAN_SLICE_BYTES;
    }
    const b = body[i];
    if (b === 0x22) {
      const open = i;
      for (;;) {
        const close = body.indexOf(0x22, i + 1);
        if (close < 0) return null;
        let backslashes = 0;
        while (body[close - 1 - backslashes] === 0x5c) backslashes++;
        i = close;
        if ((backslashes & 1) === 0) break; // an even run of backslashes escapes itself, not the quote
      }
      awaiting = null;
      if (depth === 1) key = bytesAre(body, open + 1, i, KEY_LAYERS) ? "layers" : bytesAre(body, open + 1, i, KEY_MANIFESTS) ? "manifests" : null;
    } else if (b === 0x7b || b === 0x5b) {
      if (b === 0x5b && awaiting !== null) current = { key: awaiting, start: i, end: -1, seps: [] };
      awaiting = null;
      if (++depth > MAX_MANIFEST_JSON_DEPTH) invalid(`manifest JSON nests deeper than ${MAX_MANIFEST_JSON_DEPTH} levels (MAX_MANIFEST_JSON_DEPTH)`);
      if (++containers > MAX_MANIFEST_JSON_CONTAINERS) {
        invalid(`manifest JSON has more than ${MAX_MANIFEST_JSON_CONTAINERS} objects and arrays (MAX_MANIFEST_JSON_CONTAINERS)`);
      }
    } else if (b === 0x7d || b === 0x5d) {
      depth--;
      if (current !== null && depth === 1) {
        current.end = i;
        split = current;
        current = null;
      }
    } else if (b === 0x3a) {
      if (++members > MAX_MANIFEST_JSON_MEMBERS) invalid(`manifest JSON has more than ${MAX_MANIFEST_JSON_MEMBERS} object members (MAX_MANIFEST_JSON_MEMBERS)`);
      if (depth === 1) {
        awaiting = key;
        if (key !== null) targets++;
        key = null;
      }
    } else if (b === 0x2c) {
      if (current !== null && depth === 2) current.seps.push(i);
      awaiting = null;
    } else if (b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09) {
      awaiting = null; // a number or literal value
    }
  }
  // Two target keys: JSON.parse keeps the last, and the pieces must mean exactly what it means.
  return targets === 1 && depth === 0 ? split : null;
}

/** Elements of the large array per JSON.parse slice (~1.5 MB of text for image layers). */
const PARSE_SLICE_ELEMENTS = 10_000;

function* decodeJsonObject(body: Uint8Array, limits: boolean, sliced = false): Sliced<Json> {
  const split = limits ? yield* checkJsonShape(body) : null;
  if (sliced && split && split.seps.length >= PARSE_SLICE_ELEMENTS) {
    let doc: Json | null = null;
    try {
      doc = yield* parseInPieces(body, split);
    } catch {
      // Malformed somewhere: the whole parse below says what and where, as it always did.
    }
    if (doc) return doc;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(body);
  } catch {
    invalid("manifest is not valid UTF-8");
  }
  if (body.length > SCAN_SLICE_BYTES) yield;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    invalid(`manifest is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(value)) invalid(`manifest must be a JSON object, got ${show(value)}`);
  return value;
}

/**
 * JSON.parse in slices, with the same result as one JSON.parse of the whole text: the document with
 * the large array replaced by an unguessable placeholder string, then the array's elements
 * PARSE_SLICE_ELEMENTS at a time. Pieces are cut at ASCII bytes (`[`, `,`, `]`), so each decodes as
 * UTF-8 on its own. Null (the caller parses whole) when the placeholder is not what the document's
 * key ends up holding, or the pieces do not add up.
 */
function* parseInPieces(body: Uint8Array, split: ArraySplit): Sliced<Json | null> {
  const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false });
  const placeholder = `\u0000${crypto.randomUUID()}`;
  const doc: unknown = JSON.parse(utf8.decode(body.subarray(0, split.start)) + JSON.stringify(placeholder) + new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(body.subarray(split.end + 1)));
  if (!isObject(doc) || doc[split.key] !== placeholder) return null;
  const bounds = [split.start, ...split.seps, split.end];
  const elements: unknown[] = [];
  const piece = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  for (let i = 0; i + 1 < bounds.length; i += PARSE_SLICE_ELEMENTS) {
    yield;
    const j = Math.min(i + PARSE_SLICE_ELEMENTS, bounds.length - 1);
    const part = JSON.parse(`[${piece.decode(body.subarray(bounds[i] + 1, bounds[j]))}]`) as unknown[];
    if (part.length !== j - i) return null;
    for (const el of part) elements.push(el);
  }
  doc[split.key] = elements;
  return doc;
}

function isSchema1(contentType: string, doc: Json): boolean {
  return (
    SCHEMA1_MEDIA_TYPES.includes(contentType) ||
    (typeof doc.mediaType === "string" && SCHEMA1_MEDIA_TYPES.includes(doc.mediaType.toLowerCase())) ||
    doc.schemaVersion === 1 ||
    has(doc, "fsLayers") ||
    has(doc, "signatures")
  );
}

/** Effective media type: Content-Type and body must agree; either may be absent; otherwise infer from shape. */
function effectiveMediaType(contentType: string, doc: Json): string {
  let bodyType: string | undefined;
  if (has(doc, "mediaType")) bodyType = checkMediaTypeValue(doc.mediaType, () => "mediaType").toLowerCase();
  const headerType = GENERIC_CONTENT_TYPES.includes(contentType) ? undefined : contentType;
  if (headerType !== undefined && bodyType !== undefined && headerType !== bodyType) {
    invalid(
      `Content-Type "${truncate(headerType)}" does not match the manifest's mediaType "${truncate(bodyType)}"; they must be equal`,
      "mediaType",
    );
  }
  let type = bodyType ?? headerType;
  if (type === undefined) {
    if (has(doc, "manifests")) type = MediaType.OCI_INDEX;
    else if (has(doc, "config") || has(doc, "layers")) type = MediaType.OCI_MANIFEST;
    else invalid("cannot tell the manifest type: no mediaType, no specific Content-Type, and neither manifests nor config/layers present");
  }
  if (!MANIFEST_MEDIA_TYPES.includes(type)) {
    invalid(`unsupported manifest media type "${truncate(type)}" (supported: ${MANIFEST_MEDIA_TYPES.join(", ")})`, "mediaType");
  }
  return type;
}

export interface ParseOptions {
  /**
   * Enforce the push-time limits (JSON shape, references, MAX_REFERRER_ANNOTATION_BYTES).
   * Off only when re-reading bytes already stored (backfill), which must not lose access to
   * content accepted before a limit existed.
   */
  limits?: boolean;
  /** Distinct digests the repository must hold (the MAX_MANIFEST_REFERENCES variable); default MAX_MANIFEST_REFERENCES. */
  maxReferences?: number;
}

/**
 * Parse and validate a pushed manifest. `contentType` is the request's Content-Type header.
 * Throws OciError MANIFEST_INVALID (400) naming the offending field.
 */
export function parseManifest(body: Uint8Array, contentType: string | null | undefined, opts: ParseOptions = {}): ParsedManifest {
  return runWhole(parseSteps(body, contentType, opts, false));
}

/**
 * parseManifest for the push path: the same checks, with the thread given back between slices
 * (SCAN_SLICE_BYTES of the shape scan, VALIDATE_SLICE_DESCRIPTORS descriptors), so a 100,000-layer
 * manifest does not hold up every other request of the isolate (docs/adr/0022). A large
 * `layers`/`manifests` array is JSON.parsed PARSE_SLICE_ELEMENTS elements at a time (parseInPieces).
 */
export function parseManifestSliced(body: Uint8Array, contentType: string | null | undefined, opts: ParseOptions = {}, clock?: SliceClock): Promise<ParsedManifest> {
  return runSliced(parseSteps(body, contentType, opts, true), clock);
}

function* parseSteps(body: Uint8Array, contentType: string | null | undefined, opts: ParseOptions, sliced: boolean): Sliced<ParsedManifest> {
  const limits = opts.limits ?? true;
  const ct = normalizeContentType(contentType);
  const doc = yield* decodeJsonObject(body, limits, sliced);
  if (isSchema1(ct, doc)) invalid(SCHEMA1_REFUSAL);
  if (doc.schemaVersion !== 2) invalid(`schemaVersion must be 2, got ${has(doc, "schemaVersion") ? show(doc.schemaVersion) : "nothing"}`, "schemaVersion");

  const mediaType = effectiveMediaType(ct, doc);
  const kind: ParsedManifest["kind"] = INDEX_MEDIA_TYPES.includes(mediaType) ? "index" : "image";

  let config: Descriptor | undefined;
  let layers: Descriptor[] = [];
  let manifests: Descriptor[] = [];
  if (kind === "image") {
    if (has(doc, "manifests")) invalid(`an image manifest (${mediaType}) must not have "manifests"`, "manifests");
    if (!has(doc, "config")) invalid(`config is required in an image manifest (${mediaType})`, "config");
    config = checkDescriptor(doc.config, () => "config");
    if (!has(doc, "layers")) invalid(`layers is required in an image manifest (${mediaType}); use [] for an artifact without layers`, "layers");
    layers = yield* checkDescriptorArray(doc.layers, "layers");
  } else {
    for (const k of ["config", "layers"]) {
      if (has(doc, k)) invalid(`an index (${mediaType}) must not have "${k}"`, k);
    }
    if (!has(doc, "manifests")) invalid(`manifests is required in an index (${mediaType})`, "manifests");
    manifests = yield* checkDescriptorArray(doc.manifests, "manifests");
  }

  const subject = has(doc, "subject") ? checkDescriptor(doc.subject, () => "subject") : undefined;
  // OCI referrers: an empty or missing artifactType falls back to the config media type.
  let artifactType: string | undefined;
  if (has(doc, "artifactType") && doc.artifactType !== "") artifactType = checkMediaTypeValue(doc.artifactType, () => "artifactType");
  if (has(doc, "annotations")) checkAnnotations(doc.annotations, () => "annotations");

  const parsed: ParsedManifest = { mediaType, kind, layers, manifests };
  if (config) parsed.config = config;
  if (subject) parsed.subject = subject;
  const effectiveArtifactType = artifactType ?? config?.mediaType;
  if (effectiveArtifactType !== undefined) parsed.artifactType = effectiveArtifactType;
  if (has(doc, "annotations")) parsed.annotations = doc.annotations as Record<string, string>;
  if (limits) {
    // What the membership check costs is one lookup per distinct digest (repeats are free, and
    // build-cache/v1 repeats chunk digests freely), so distinct digests are what is capped.
    const buildCache = artifactType === BUILD_CACHE_ARTIFACT_TYPE;
    const configured = opts.maxReferences ?? MAX_MANIFEST_REFERENCES;
    const max = buildCache ? Math.max(configured, MAX_MANIFEST_REFERENCES_CEILING) : configured;
    if (layers.length + manifests.length > VALIDATE_SLICE_DESCRIPTORS) yield; // the count dedupes every digest
    const refs = requiredBlobs(parsed).length + requiredManifests(parsed).length;
    if (refs > max) {
      const which = buildCache ? "for build-cache/v1 manifests" : "per manifest (MAX_MANIFEST_REFERENCES)";
      invalid(`manifest references ${refs} distinct blobs and manifests (config, layers, index children); this registry accepts at most ${max} ${which}`, kind === "index" ? "manifests" : "layers");
    }
  }
  if (limits && subject && parsed.annotations) {
    const size = annotationBytes(parsed.annotations);
    if (size > MAX_REFERRER_ANNOTATION_BYTES) {
      invalid(`annotations of a manifest with a subject are ${size} bytes as JSON; the referrers index serves them and accepts at most ${MAX_REFERRER_ANNOTATION_BYTES} bytes (MAX_REFERRER_ANNOTATION_BYTES). Put large data in a layer`, "annotations");
    }
  }
  return parsed;
}

const utf8 = new TextEncoder();
const annotationBytes = (a: Record<string, string>) => utf8.encode(JSON.stringify(a)).length;

/**
 * The annotations the referrers index stores for this manifest: a referrer's (it has a subject)
 * when within MAX_REFERRER_ANNOTATION_BYTES, else none. Nothing else is sent to the index.
 */
export function indexedAnnotations(m: ParsedManifest): Record<string, string> | null {
  if (!m.subject || !m.annotations) return null;
  return annotationBytes(m.annotations) <= MAX_REFERRER_ANNOTATION_BYTES ? m.annotations : null;
}

function uniqueByDigest(ds: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  const out: Descriptor[] = [];
  for (const d of ds) {
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    out.push(d);
  }
  return out;
}

/**
 * Descriptors whose blobs must exist in the repository before the manifest is accepted:
 * config + layers, excluding non-distributable/foreign layers that carry `urls`.
 * Deduplicated by digest, in manifest order (config first).
 */
export function requiredBlobs(m: ParsedManifest): Descriptor[] {
  if (m.kind !== "image") return [];
  const out: Descriptor[] = m.config ? [m.config] : [];
  for (const l of m.layers) {
    if (l.urls && l.urls.length > 0) continue;
    out.push(l);
  }
  return uniqueByDigest(out);
}

/** Child manifests that must exist (index/list), deduplicated by digest, in order. */
export function requiredManifests(m: ParsedManifest): Descriptor[] {
  return m.kind === "index" ? uniqueByDigest(m.manifests) : [];
}

/**
 * Does an Accept header admit this media type? Serve the stored media type as Content-Type.
 * Absent/empty Accept and `*\/*` admit everything; `type/*` admits its type; entries with q=0 are refused.
 * Docker clients send many Accept headers, which arrive joined with ", ".
 */
export function acceptable(accept: string | null | undefined, mediaType: string): boolean {
  if (!accept || accept.trim() === "") return true;
  const want = mediaType.toLowerCase();
  const slash = want.indexOf("/");
  const wantType = slash < 0 ? want : want.slice(0, slash);
  for (const entry of accept.split(",")) {
    const [range, ...params] = entry.split(";");
    const r = range.trim().toLowerCase();
    if (r === "") continue;
    const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith("q="));
    if (q !== undefined && Number(q.slice(2)) === 0) continue;
    if (r === "*/*" || r === "*" || r === want) return true;
    if (r.endsWith("/*") && r.slice(0, -2) === wantType) return true;
  }
  return false;
}
