import { describe, expect, it } from "vitest";
import { OciError } from "../../src/oci/errors";
import {
  acceptable,
  MANIFEST_MEDIA_TYPES,
  MediaType,
  indexedAnnotations,
  parseManifest,
  requiredBlobs,
  requiredManifests,
  type ParsedManifest,
} from "../../src/oci/manifest";

const enc = new TextEncoder();
const bytes = (v: unknown): Uint8Array => enc.encode(typeof v === "string" ? v : JSON.stringify(v));
const dg = (n: number, alg: "sha256" | "sha512" = "sha256") => `${alg}:${n.toString(16).padStart(alg === "sha256" ? 64 : 128, "0")}`;

const desc = (n: number, mediaType: string = MediaType.OCI_LAYER_GZIP, extra: Record<string, unknown> = {}) => ({
  mediaType,
  digest: dg(n),
  size: 1000 + n,
  ...extra,
});

/** umoci / podman style: no top-level mediaType. */
const ociImage = (extra: Record<string, unknown> = {}) => ({
  schemaVersion: 2,
  config: desc(1, MediaType.OCI_CONFIG),
  layers: [desc(2), desc(3)],
  ...extra,
});

const ociIndex = (extra: Record<string, unknown> = {}) => ({
  schemaVersion: 2,
  mediaType: MediaType.OCI_INDEX,
  manifests: [
    desc(10, MediaType.OCI_MANIFEST, { platform: { architecture: "amd64", os: "linux" } }),
    desc(11, MediaType.OCI_MANIFEST, { platform: { architecture: "arm64", os: "linux", variant: "v8" } }),
  ],
  ...extra,
});

function parse(v: unknown, ct?: string | null): ParsedManifest {
  return parseManifest(bytes(v), ct);
}

function invalid(v: unknown, ct: string | null | undefined, message: RegExp | string): OciError {
  let caught: unknown;
  try {
    parseManifest(v instanceof Uint8Array ? v : bytes(v), ct);
  } catch (e) {
    caught = e;
  }
  expect(caught, "expected parseManifest to throw").toBeInstanceOf(OciError);
  const err = caught as OciError;
  expect(err.code).toBe("MANIFEST_INVALID");
  expect(err.status).toBe(400);
  if (typeof message === "string") expect(err.message).toContain(message);
  else expect(err.message).toMatch(message);
  return err;
}

describe("MediaType constants", () => {
  it("accepts exactly the four manifest media types", () => {
    expect([...MANIFEST_MEDIA_TYPES].sort()).toEqual(
      [MediaType.OCI_MANIFEST, MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST, MediaType.DOCKER_LIST].sort(),
    );
    expect(MediaType.OCI_EMPTY).toBe("application/vnd.oci.empty.v1+json");
    expect(MediaType.DOCKER_SCHEMA1).toBe("application/vnd.docker.distribution.manifest.v1+json");
    expect(MediaType.DOCKER_SCHEMA1_SIGNED).toBe("application/vnd.docker.distribution.manifest.v1+prettyjws");
  });
});

describe("parseManifest: body", () => {
  it("rejects invalid UTF-8", () => {
    invalid(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), null, "not valid UTF-8");
  });
  it("rejects invalid JSON", () => {
    invalid("{ not json", null, "not valid JSON");
  });
  it.each([["[]"], ["null"], ["2"], ['"x"']])("rejects non-object JSON %s", (body) => {
    invalid(body, null, "must be a JSON object");
  });
  it("requires schemaVersion 2", () => {
    invalid({ ...ociImage(), schemaVersion: 3 }, null, "schemaVersion must be 2, got 3");
    invalid({ ...ociImage(), schemaVersion: "2" }, null, 'schemaVersion must be 2, got "2"');
    const { schemaVersion: _, ...noVersion } = ociImage();
    const err = invalid(noVersion, null, "schemaVersion must be 2, got nothing");
    expect(err.detail).toEqual({ field: "schemaVersion" });
  });
  it("tolerates unknown extra fields everywhere", () => {
    const m = parse(
      ociImage({
        futureField: { x: 1 },
        config: { ...desc(1, MediaType.OCI_CONFIG), futureDescriptorField: true },
        layers: [{ ...desc(2), whatever: [1, 2, 3] }],
      }),
      null,
    );
    expect(m.layers).toHaveLength(1);
  });
  it("accepts non-ASCII UTF-8 annotation values", () => {
    const m = parse(ociImage({ annotations: { "org.opencontainers.image.title": "café ☕" } }), null);
    expect(m.annotations).toEqual({ "org.opencontainers.image.title": "café ☕" });
  });
});

describe("parseManifest: Docker schema 1 is refused", () => {
  const schema1 = {
    schemaVersion: 1,
    name: "library/hello",
    tag: "latest",
    architecture: "amd64",
    fsLayers: [{ blobSum: dg(1) }],
    history: [{ v1Compatibility: "{}" }],
    signatures: [{ header: {}, signature: "x", protected: "y" }],
  };
  const msg = "Docker schema 1 manifests are not supported; push a schema 2 or OCI manifest (e.g. skopeo copy --format v2s2 or --format oci)";
  it("by body shape", () => invalid(schema1, null, msg));
  it("by signed Content-Type", () => invalid(schema1, MediaType.DOCKER_SCHEMA1_SIGNED, msg));
  it("by unsigned Content-Type, even with a schema-2-looking body", () => invalid(ociImage(), MediaType.DOCKER_SCHEMA1, msg));
  it("by body mediaType", () => invalid(ociImage({ mediaType: MediaType.DOCKER_SCHEMA1 }), null, msg));
  it("by schemaVersion 1 alone", () => invalid(ociImage({ schemaVersion: 1 }), null, msg));
  it("by fsLayers alone", () => invalid(ociImage({ fsLayers: [] }), null, msg));
  it("by signatures alone", () => invalid(ociImage({ signatures: [] }), null, msg));
});

describe("parseManifest: media type resolution", () => {
  it("accepts an umoci/podman OCI manifest without mediaType and no Content-Type", () => {
    const m = parse(ociImage(), undefined);
    expect(m.mediaType).toBe(MediaType.OCI_MANIFEST);
    expect(m.kind).toBe("image");
    expect(m.config?.digest).toBe(dg(1));
    expect(m.layers.map((l) => l.digest)).toEqual([dg(2), dg(3)]);
    expect(m.manifests).toEqual([]);
    expect(m.artifactType).toBe(MediaType.OCI_CONFIG);
  });
  it("accepts an OCI manifest without mediaType under an OCI Content-Type", () => {
    expect(parse(ociImage(), MediaType.OCI_MANIFEST).mediaType).toBe(MediaType.OCI_MANIFEST);
  });
  it("infers an OCI index from manifests when mediaType is absent", () => {
    const { mediaType: _, ...idx } = ociIndex();
    const m = parse(idx, "application/json");
    expect(m.mediaType).toBe(MediaType.OCI_INDEX);
    expect(m.kind).toBe("index");
  });
  it("infers an image manifest from layers alone (then complains about config)", () => {
    invalid({ schemaVersion: 2, layers: [] }, null, `config is required in an image manifest (${MediaType.OCI_MANIFEST})`);
  });
  it("uses body mediaType when Content-Type is generic, ignoring parameters", () => {
    const body = { ...ociImage(), mediaType: MediaType.DOCKER_MANIFEST };
    for (const ct of ["application/json", "application/octet-stream", "application/json; charset=utf-8", "", null, undefined]) {
      expect(parse(body, ct).mediaType).toBe(MediaType.DOCKER_MANIFEST);
    }
  });
  it("accepts Docker v2s2 with its Content-Type (and parameters)", () => {
    const body = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: desc(1, MediaType.DOCKER_CONFIG),
      layers: [desc(2, MediaType.DOCKER_LAYER), desc(3, MediaType.DOCKER_LAYER)],
    };
    const m = parse(body, `${MediaType.DOCKER_MANIFEST}; charset=utf-8`);
    expect(m.mediaType).toBe(MediaType.DOCKER_MANIFEST);
    expect(m.kind).toBe("image");
    expect(m.artifactType).toBe(MediaType.DOCKER_CONFIG);
  });
  it("treats Content-Type case-insensitively", () => {
    expect(parse(ociImage(), "Application/VND.OCI.Image.Manifest.v1+JSON").mediaType).toBe(MediaType.OCI_MANIFEST);
  });
  it("rejects Content-Type / body mediaType mismatch, naming both", () => {
    const err = invalid(
      { ...ociImage(), mediaType: MediaType.OCI_MANIFEST },
      MediaType.DOCKER_MANIFEST,
      `Content-Type "${MediaType.DOCKER_MANIFEST}" does not match the manifest's mediaType "${MediaType.OCI_MANIFEST}"`,
    );
    expect(err.detail).toEqual({ field: "mediaType" });
  });
  it("rejects an image body under an index Content-Type", () => {
    invalid(ociImage(), MediaType.OCI_INDEX, 'must not have "config"');
  });
  it("rejects unknown manifest media types, listing the supported ones", () => {
    const err = invalid(ociImage({ mediaType: "application/vnd.example.thing+json" }), null, 'unsupported manifest media type "application/vnd.example.thing+json"');
    for (const t of MANIFEST_MEDIA_TYPES) expect(err.message).toContain(t);
    invalid(ociImage(), "text/plain", 'unsupported manifest media type "text/plain"');
  });
  it("rejects a non-string or malformed body mediaType", () => {
    invalid(ociImage({ mediaType: 7 }), null, "mediaType must be a media type string, got 7");
    invalid(ociImage({ mediaType: "not a media type" }), null, '"not a media type" is not a valid media type');
  });
  it("rejects a body whose type cannot be determined", () => {
    invalid({ schemaVersion: 2 }, null, "cannot tell the manifest type");
  });
});

describe("parseManifest: image manifest structure", () => {
  it("requires config", () => {
    const { config: _, ...noConfig } = ociImage();
    const err = invalid(noConfig, MediaType.OCI_MANIFEST, "config is required");
    expect(err.detail).toEqual({ field: "config" });
  });
  it("requires layers, but allows them empty (OCI 1.1 artifacts)", () => {
    const { layers: _, ...noLayers } = ociImage();
    invalid(noLayers, null, "layers is required");
    expect(parse(ociImage({ layers: [] }), null).layers).toEqual([]);
  });
  it("reads layers: null (a Go nil slice) as empty", () => {
    expect(parse(ociImage({ layers: null }), null).layers).toEqual([]);
  });
  it("rejects layers that is not an array", () => {
    invalid(ociImage({ layers: {} }), null, "layers must be an array of descriptors, got an object");
  });
  it("rejects manifests in an image manifest", () => {
    invalid(ociImage({ manifests: [] }), MediaType.OCI_MANIFEST, 'must not have "manifests"');
    invalid(ociImage({ mediaType: MediaType.DOCKER_MANIFEST, manifests: [] }), null, 'must not have "manifests"');
  });
  it("accepts a referrer artifact with the empty config and artifactType", () => {
    const body = {
      schemaVersion: 2,
      mediaType: MediaType.OCI_MANIFEST,
      artifactType: "application/vnd.example.sbom.v1+json",
      config: { mediaType: MediaType.OCI_EMPTY, digest: dg(44), size: 2, data: "e30=" },
      layers: [desc(5, "application/spdx+json")],
      subject: desc(9, MediaType.OCI_MANIFEST),
      annotations: { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
    };
    const m = parse(body, MediaType.OCI_MANIFEST);
    expect(m.artifactType).toBe("application/vnd.example.sbom.v1+json");
    expect(m.subject?.digest).toBe(dg(9));
    expect(m.config?.mediaType).toBe(MediaType.OCI_EMPTY);
    expect(m.annotations).toEqual({ "org.opencontainers.image.created": "2024-01-01T00:00:00Z" });
  });
  it("falls back to config.mediaType for artifactType (referrers API), also when artifactType is empty", () => {
    const cfg = desc(1, "application/vnd.example.config+json");
    expect(parse(ociImage({ config: cfg }), null).artifactType).toBe("application/vnd.example.config+json");
    expect(parse(ociImage({ config: cfg, artifactType: "" }), null).artifactType).toBe("application/vnd.example.config+json");
  });
  it("rejects a malformed artifactType, annotations, or subject", () => {
    invalid(ociImage({ artifactType: "sbom" }), null, 'artifactType "sbom" is not a valid media type');
    invalid(ociImage({ artifactType: 3 }), null, "artifactType must be a media type string, got 3");
    invalid(ociImage({ annotations: [] }), null, "annotations must be an object mapping strings to strings, got an array");
    invalid(ociImage({ annotations: { a: "b", n: 1 } }), null, 'annotations["n"] must be a string, got 1');
    invalid(ociImage({ subject: { ...desc(1), digest: "nope" } }), null, 'subject.digest "nope" is not a valid digest');
    invalid(ociImage({ subject: "sha256:abc" }), null, "subject must be a descriptor object");
  });
});

describe("parseManifest: index and manifest list", () => {
  it("accepts an OCI index with artifactType, subject and annotations", () => {
    const m = parse(
      ociIndex({ artifactType: "application/vnd.example.bundle", subject: desc(20, MediaType.OCI_MANIFEST), annotations: { k: "v" } }),
      MediaType.OCI_INDEX,
    );
    expect(m.kind).toBe("index");
    expect(m.mediaType).toBe(MediaType.OCI_INDEX);
    expect(m.artifactType).toBe("application/vnd.example.bundle");
    expect(m.subject?.digest).toBe(dg(20));
    expect(m.manifests.map((d) => d.platform?.architecture)).toEqual(["amd64", "arm64"]);
    expect(m.layers).toEqual([]);
    expect(m.config).toBeUndefined();
    expect(m.annotations).toEqual({ k: "v" });
  });
  it("has no artifactType for an index without one", () => {
    expect(parse(ociIndex(), null).artifactType).toBeUndefined();
    expect("artifactType" in parse(ociIndex(), null)).toBe(false);
  });
  it("accepts a Docker manifest list with platform descriptors", () => {
    const body = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_LIST,
      manifests: [
        desc(30, MediaType.DOCKER_MANIFEST, { platform: { architecture: "amd64", os: "linux" } }),
        desc(31, MediaType.DOCKER_MANIFEST, { platform: { architecture: "amd64", os: "windows", "os.version": "10.0.17763.1234", "os.features": ["win32k"] } }),
        desc(32, MediaType.DOCKER_MANIFEST, { platform: { architecture: "arm", os: "linux", variant: "v7", features: ["sse4"] } }),
      ],
    };
    const m = parse(body, MediaType.DOCKER_LIST);
    expect(m.kind).toBe("index");
    expect(m.mediaType).toBe(MediaType.DOCKER_LIST);
    expect(requiredManifests(m).map((d) => d.digest)).toEqual([dg(30), dg(31), dg(32)]);
  });
  it("requires manifests", () => {
    invalid({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX }, null, "manifests is required");
    invalid({ schemaVersion: 2 }, MediaType.DOCKER_LIST, "manifests is required");
    invalid(ociIndex({ manifests: "x" }), null, 'manifests must be an array of descriptors, got "x"');
  });
  it("reads manifests: null (a Go nil slice) as empty", () => {
    expect(parse(ociIndex({ manifests: null }), null).manifests).toEqual([]);
  });
  it("accepts an empty index", () => {
    expect(parse(ociIndex({ manifests: [] }), null).manifests).toEqual([]);
  });
  it("rejects config or layers in an index", () => {
    invalid(ociIndex({ config: desc(1, MediaType.OCI_CONFIG) }), null, `an index (${MediaType.OCI_INDEX}) must not have "config"`);
    invalid(ociIndex({ layers: [] }), null, 'must not have "layers"');
  });
  it("tolerates unknown child media types", () => {
    const m = parse(ociIndex({ manifests: [desc(40, "application/vnd.example.future.manifest+json")] }), null);
    expect(m.manifests).toHaveLength(1);
  });
  it("validates platform", () => {
    const withPlatform = (platform: unknown) => ociIndex({ manifests: [desc(10, MediaType.OCI_MANIFEST, { platform })] });
    invalid(withPlatform("linux/amd64"), null, 'manifests[0].platform must be an object, got "linux/amd64"');
    invalid(withPlatform({ os: "linux" }), null, "manifests[0].platform.architecture is required and must be a string");
    invalid(withPlatform({ architecture: "amd64" }), null, "manifests[0].platform.os is required and must be a string");
    invalid(withPlatform({ architecture: "amd64", os: "linux", variant: 8 }), null, 'manifests[0].platform["variant"] must be a string, got 8');
    invalid(withPlatform({ architecture: "amd64", os: "windows", "os.features": "win32k" }), null, 'manifests[0].platform["os.features"] must be an array of strings');
  });
});

describe("parseManifest: descriptors", () => {
  const withLayer = (layer: unknown, i = 2) => {
    const layers: unknown[] = [desc(2), desc(3), desc(4)];
    layers[i] = layer;
    return ociImage({ layers });
  };

  it("requires mediaType, digest and size", () => {
    const { mediaType: _m, ...noMt } = desc(5);
    const { digest: _d, ...noDigest } = desc(5);
    const { size: _s, ...noSize } = desc(5);
    invalid(withLayer(noMt), null, "layers[2].mediaType is required");
    invalid(withLayer(noDigest), null, "layers[2].digest is required");
    const err = invalid(withLayer(noSize), null, "layers[2].size is required");
    expect(err.detail).toEqual({ field: "layers[2].size" });
  });
  it("rejects a non-object descriptor", () => {
    invalid(withLayer("sha256:abc", 0), null, 'layers[0] must be a descriptor object, got "sha256:abc"');
    invalid(withLayer(null, 1), null, "layers[1] must be a descriptor object, got null");
  });
  it("validates mediaType against RFC 6838", () => {
    invalid(withLayer(desc(5, "tar+gzip")), null, 'layers[2].mediaType "tar+gzip" is not a valid media type');
    invalid(withLayer(desc(5, "application/x y")), null, "is not a valid media type");
    invalid(withLayer(desc(5, "/json")), null, "is not a valid media type");
    invalid(withLayer(desc(5, "application/" + "a".repeat(128))), null, "is not a valid media type");
    invalid(withLayer({ ...desc(5), mediaType: ["a/b"] }), null, "layers[2].mediaType must be a media type string, got an array");
    expect(parse(withLayer(desc(5, "application/vnd.in-toto+json")), null).layers[2].mediaType).toBe("application/vnd.in-toto+json");
  });
  it("validates digest with the registry's digest grammar", () => {
    const err = invalid(withLayer({ ...desc(5), digest: "sha256:xyz" }), null, 'layers[2].digest "sha256:xyz" must be sha256: followed by 64 lowercase hex characters');
    expect(err.detail).toEqual({ field: "layers[2].digest" });
    invalid(withLayer({ ...desc(5), digest: "not-a-digest" }), null, 'layers[2].digest "not-a-digest" is not a valid digest');
    invalid(withLayer({ ...desc(5), digest: "md5:" + "0".repeat(32) }), null, 'layers[2].digest algorithm "md5" is not supported');
    invalid(withLayer({ ...desc(5), digest: "sha256:" + "AB".repeat(32) }), null, "layers[2].digest \"sha256:ABAB");
    invalid(withLayer({ ...desc(5), digest: 5 }), null, "layers[2].digest must be a digest string, got 5");
    invalid(ociImage({ config: { ...desc(1), digest: "" } }), null, "config.digest");
  });
  it("accepts sha512 and blake3 digests", () => {
    const m = parse(withLayer({ ...desc(5), digest: dg(5, "sha512") }), null);
    expect(m.layers[2].digest).toBe(dg(5, "sha512"));
    expect(parse(withLayer({ ...desc(6), digest: "blake3:" + "a".repeat(64) }), null).layers).toHaveLength(3);
  });
  it("validates size as a non-negative safe integer", () => {
    for (const size of [-1, 1.5, "10", null, 2 ** 53, Number.MAX_VALUE]) {
      invalid(withLayer({ ...desc(5), size }), null, "layers[2].size must be a non-negative integer");
    }
    invalid(withLayer({ ...desc(5), size: -1 }), null, "layers[2].size must be a non-negative integer, got -1");
    expect(parse(withLayer({ ...desc(5), size: 0 }), null).layers[2].size).toBe(0);
    expect(parse(withLayer({ ...desc(5), size: Number.MAX_SAFE_INTEGER }), null).layers[2].size).toBe(Number.MAX_SAFE_INTEGER);
  });
  it("validates urls", () => {
    invalid(withLayer({ ...desc(5), urls: "https://example.com/x" }), null, "layers[2].urls must be an array of strings");
    invalid(withLayer({ ...desc(5), urls: ["https://example.com/x", 3] }), null, "layers[2].urls[1] must be a string, got 3");
  });
  it("validates descriptor annotations and artifactType", () => {
    invalid(withLayer({ ...desc(5), annotations: { a: true } }), null, 'layers[2].annotations["a"] must be a string, got true');
    invalid(withLayer({ ...desc(5), annotations: "x" }), null, "layers[2].annotations must be an object");
    invalid(withLayer({ ...desc(5), artifactType: "nope" }), null, 'layers[2].artifactType "nope" is not a valid media type');
    const ok = parse(withLayer({ ...desc(5), annotations: { "org.opencontainers.image.title": "x.tar" }, artifactType: "application/vnd.x+json" }), null);
    expect(ok.layers[2].annotations).toEqual({ "org.opencontainers.image.title": "x.tar" });
  });
  it("validates embedded data: base64 whose decoded length equals size", () => {
    // "{}" is "e30=" (2 bytes); "abc" is "YWJj" (3 bytes); "a" is "YQ==" (1 byte)
    expect(parse(ociImage({ config: { mediaType: MediaType.OCI_EMPTY, digest: dg(1), size: 2, data: "e30=" } }), null).config?.data).toBe("e30=");
    expect(parse(withLayer({ ...desc(5), size: 3, data: "YWJj" }), null).layers).toHaveLength(3);
    expect(parse(withLayer({ ...desc(5), size: 1, data: "YQ==" }), null).layers).toHaveLength(3);
    expect(parse(withLayer({ ...desc(5), size: 0, data: "" }), null).layers).toHaveLength(3);
    invalid(withLayer({ ...desc(5), size: 3, data: "e30=" }), null, "layers[2].data decodes to 2 bytes but size is 3");
    invalid(withLayer({ ...desc(5), size: 2, data: "e30" }), null, "layers[2].data must be a base64 string");
    invalid(withLayer({ ...desc(5), size: 2, data: "e3@=" }), null, "layers[2].data must be a base64 string");
    invalid(withLayer({ ...desc(5), size: 2, data: 42 }), null, "layers[2].data must be a base64 string");
  });
  it("names config errors by path", () => {
    invalid(ociImage({ config: { ...desc(1), mediaType: "x" } }), null, 'config.mediaType "x" is not a valid media type');
    invalid(ociIndex({ manifests: [desc(1, MediaType.OCI_MANIFEST), { ...desc(2), size: -5 }] }), null, "manifests[1].size must be a non-negative integer, got -5");
  });
});

describe("requiredBlobs / requiredManifests", () => {
  it("returns config then layers for an image manifest", () => {
    const m = parse(ociImage(), null);
    expect(requiredBlobs(m).map((d) => d.digest)).toEqual([dg(1), dg(2), dg(3)]);
    expect(requiredManifests(m)).toEqual([]);
  });
  it("skips foreign / non-distributable layers that carry urls", () => {
    const body = {
      schemaVersion: 2,
      mediaType: MediaType.DOCKER_MANIFEST,
      config: desc(1, MediaType.DOCKER_CONFIG),
      layers: [
        desc(2, MediaType.DOCKER_FOREIGN_LAYER, { urls: ["https://mcr.microsoft.com/v2/windows/servercore/blobs/" + dg(2)] }),
        desc(3, MediaType.DOCKER_LAYER),
        desc(4, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", { urls: ["https://example.com/layer"] }),
      ],
    };
    const m = parse(body, MediaType.DOCKER_MANIFEST);
    expect(requiredBlobs(m).map((d) => d.digest)).toEqual([dg(1), dg(3)]);
  });
  it("still requires a layer whose urls list is empty", () => {
    const m = parse(ociImage({ layers: [desc(2, MediaType.OCI_LAYER_GZIP, { urls: [] })] }), null);
    expect(requiredBlobs(m).map((d) => d.digest)).toEqual([dg(1), dg(2)]);
  });
  it("deduplicates by digest (an empty config reused as a layer, repeated layers)", () => {
    const empty = { mediaType: MediaType.OCI_EMPTY, digest: dg(44), size: 2 };
    const m = parse(ociImage({ config: empty, layers: [empty, desc(2), desc(2)] }), null);
    expect(requiredBlobs(m).map((d) => d.digest)).toEqual([dg(44), dg(2)]);
  });
  it("returns children for an index, no blobs", () => {
    const m = parse(ociIndex({ manifests: [desc(10, MediaType.OCI_MANIFEST), desc(11, MediaType.OCI_INDEX), desc(10, MediaType.OCI_MANIFEST)] }), null);
    expect(requiredManifests(m).map((d) => d.digest)).toEqual([dg(10), dg(11)]);
    expect(requiredBlobs(m)).toEqual([]);
  });
  it("does not require the subject (referrers may precede their subject)", () => {
    const m = parse(ociImage({ subject: desc(99, MediaType.OCI_MANIFEST) }), null);
    expect(requiredBlobs(m).map((d) => d.digest)).not.toContain(dg(99));
    expect(requiredManifests(m)).toEqual([]);
  });
});

describe("acceptable", () => {
  const dockerAccept = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
  ].join(", ");

  it("admits everything when Accept is absent or empty", () => {
    for (const a of [null, undefined, "", "   "]) expect(acceptable(a, MediaType.OCI_MANIFEST)).toBe(true);
  });
  it("admits everything for */*", () => {
    expect(acceptable("*/*", MediaType.DOCKER_LIST)).toBe(true);
    expect(acceptable("application/vnd.docker.distribution.manifest.v1+prettyjws, */*;q=0.1", MediaType.OCI_INDEX)).toBe(true);
  });
  it("matches within a Docker-style Accept list (joined multiple headers)", () => {
    for (const t of MANIFEST_MEDIA_TYPES) expect(acceptable(dockerAccept, t)).toBe(true);
  });
  it("refuses a type not in the list", () => {
    expect(acceptable("application/vnd.docker.distribution.manifest.v2+json", MediaType.OCI_INDEX)).toBe(false);
    expect(acceptable("application/vnd.docker.distribution.manifest.v1+prettyjws,application/json", MediaType.OCI_MANIFEST)).toBe(false);
  });
  it("ignores parameters and case, honours type/* and q=0", () => {
    expect(acceptable("Application/VND.OCI.Image.Manifest.v1+JSON; q=0.5", MediaType.OCI_MANIFEST)).toBe(true);
    expect(acceptable("application/*", MediaType.OCI_MANIFEST)).toBe(true);
    expect(acceptable("text/*", MediaType.OCI_MANIFEST)).toBe(false);
    expect(acceptable(`${MediaType.OCI_MANIFEST};q=0`, MediaType.OCI_MANIFEST)).toBe(false);
    expect(acceptable(`${MediaType.OCI_MANIFEST};q=0.0, ${MediaType.OCI_INDEX}`, MediaType.OCI_MANIFEST)).toBe(false);
  });
});

describe("performance-sized manifest", () => {
  // Pushes are capped at MAX_MANIFEST_REFERENCES (10,000); stored content read back without the
  // push limits (backfill) must still parse fast and precisely at 100k layers.
  it("parses a ~16 MiB manifest with 100k layers when push limits are off", () => {
    const layers = [];
    for (let i = 0; i < 100_000; i++) {
      layers.push({
        mediaType: MediaType.OCI_LAYER_GZIP,
        digest: dg(i + 100),
        size: 1_000_000_000 + i,
      });
    }
    const body = bytes({ schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST, config: desc(1, MediaType.OCI_CONFIG), layers });
    expect(body.byteLength).toBeGreaterThan(15 * 1024 * 1024);
    expect(body.byteLength).toBeLessThanOrEqual(16 * 1024 * 1024);
    const m = parseManifest(body, MediaType.OCI_MANIFEST, { limits: false });
    expect(m.layers).toHaveLength(100_000);
    expect(requiredBlobs(m)).toHaveLength(100_001);
    expect(() => parseManifest(body, MediaType.OCI_MANIFEST)).toThrow(/at most 10000 per manifest/);
  });
  it("reports the exact index of a bad layer deep in a large manifest", () => {
    const layers = [];
    for (let i = 0; i < 9_000; i++) layers.push(desc(i + 100));
    layers[4_321] = { ...layers[4_321], digest: "sha256:xyz" };
    invalid({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers }, null, 'layers[4321].digest "sha256:xyz"');
  });
});

describe("push limits", () => {
  it("caps distinct referenced digests (config + layers, or index children) at 10000; repeats count once", () => {
    const layers = Array.from({ length: 9_999 }, (_, i) => desc(i + 100));
    expect(parseManifest(bytes({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers }), null).layers).toHaveLength(9_999);
    const err = invalid({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: [...layers, desc(99)] }, null, "references 10001 distinct blobs and manifests");
    expect(err.message).toContain("at most 10000 per manifest (MAX_MANIFEST_REFERENCES)");
    expect(err.detail).toEqual({ field: "layers" });
    // build-cache/v1: one descriptor per file, chunk digests repeat freely
    const repeated = Array.from({ length: 30_000 }, (_, i) => desc(100 + (i % 50)));
    expect(parseManifest(bytes({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: repeated }), null).layers).toHaveLength(30_000);
    // foreign layers (with urls) are not fetched from this registry and do not count
    const foreign = Array.from({ length: 10_000 }, (_, i) => desc(i + 100, MediaType.DOCKER_FOREIGN_LAYER, { urls: ["https://example.com/l"] }));
    expect(parseManifest(bytes({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: foreign }), null).layers).toHaveLength(10_000);
    invalid({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: Array.from({ length: 10_001 }, (_, i) => desc(i + 100, MediaType.OCI_MANIFEST)) }, null, "at most 10000 per manifest");
    expect(parseManifest(bytes({ schemaVersion: 2, mediaType: MediaType.OCI_INDEX, manifests: Array.from({ length: 10_000 }, (_, i) => desc(i + 100, MediaType.OCI_MANIFEST)) }), null).manifests).toHaveLength(10_000);
    // the route passes the MAX_MANIFEST_REFERENCES variable
    const small = bytes({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: [desc(2), desc(3)] });
    expect(() => parseManifest(small, null, { maxReferences: 2 })).toThrow(/references 3 distinct .* at most 2 per manifest/);
    expect(parseManifest(small, null, { maxReferences: 3 }).layers).toHaveLength(2);
  });

  it("lets build-cache/v1 manifests reference up to 100000 distinct chunks whatever MAX_MANIFEST_REFERENCES says", () => {
    const bc = (n: number) => bytes({
      schemaVersion: 2, mediaType: MediaType.OCI_MANIFEST, artifactType: "application/vnd.cloister.build-cache.v1",
      config: desc(1, "application/vnd.cloister.build-cache.v1.config+json"),
      layers: Array.from({ length: n }, (_, i) => desc(i + 100, "application/vnd.cloister.build-cache.v1.chunk")),
    });
    // 20,000 distinct chunks: over the image default, inside the build-cache allowance
    expect(requiredBlobs(parseManifest(bc(19_999), MediaType.OCI_MANIFEST))).toHaveLength(20_000);
    expect(requiredBlobs(parseManifest(bc(19_999), MediaType.OCI_MANIFEST, { maxReferences: 5 }))).toHaveLength(20_000);
    // the same shape without the build-cache artifactType is an image, capped at the default
    const plain = bytes({ schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: Array.from({ length: 19_999 }, (_, i) => desc(i + 100)) });
    expect(() => parseManifest(plain, null)).toThrow(/at most 10000 per manifest/);
    // the ceiling still holds for build-cache manifests
    expect(() => parseManifest(bc(100_000), MediaType.OCI_MANIFEST)).toThrow(/references 100001 distinct .* at most 100000 for build-cache\/v1 manifests/);
  });

  it("caps the annotations of a manifest with a subject at 65536 bytes of JSON; without a subject they are not indexed", () => {
    const subject = desc(2, MediaType.OCI_MANIFEST);
    const fits = { k: "a".repeat(65536 - 8) }; // {"k":"…"}: 8 bytes of JSON around the value, 65536 in all
    const base = { schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: [] };
    const ok = parseManifest(bytes({ ...base, subject, annotations: fits }), null);
    expect(indexedAnnotations(ok)).toEqual(fits);
    const over = { k: "é".repeat(32_765) }; // 2 bytes each in UTF-8: the limit counts bytes, not characters
    invalid({ ...base, subject, annotations: over }, null, "at most 65536 bytes");
    const plain = parseManifest(bytes({ ...base, annotations: { k: "a".repeat(200_000) } }), null);
    expect(plain.annotations?.k.length).toBe(200_000);
    expect(indexedAnnotations(plain)).toBeNull();
    // limits off (stored content): parsed, but the index still gets nothing oversized
    const legacy = parseManifest(bytes({ ...base, subject, annotations: over }), null, { limits: false });
    expect(indexedAnnotations(legacy)).toBeNull();
  });
});

describe("JSON shape limits (checked before JSON.parse)", () => {
  const base = { schemaVersion: 2, config: desc(1, MediaType.OCI_CONFIG), layers: [] };
  const withExtra = (extraJson: string) => enc.encode(JSON.stringify(base).slice(0, -1) + `,"x":${extraJson}}`);

  it("nesting: 64 levels parse, 65 are refused", () => {
    // the manifest object itself is level 1
    expect(parseManifest(withExtra("[".repeat(63) + "]".repeat(63)), null).kind).toBe("image");
    invalid(withExtra("[".repeat(64) + "]".repeat(64)), null, "deeper than 64 levels");
  });

  it("objects and arrays: at most 500000", () => {
    const n = 500_000 - 3; // + the manifest, config and layers
    expect(parseManifest(withExtra("[" + "[],".repeat(n - 2) + "[]]"), null).kind).toBe("image");
    invalid(withExtra("[" + "{},".repeat(n - 1) + "{}]"), null, "more than 500000 objects and arrays");
  });

  it("object members: at most 1000000", () => {
    const inBase = 2 + 3 + 1 + 1; // schemaVersion, config's 3, layers, and "x"
    const keys = (k: number) => "{" + Array.from({ length: k }, (_, i) => `"k${i}":0`).join(",") + "}";
    expect(parseManifest(withExtra(keys(1_000_000 - inBase)), null).kind).toBe("image");
    invalid(withExtra(keys(1_000_000 - inBase + 1)), null, "more than 1000000 object members");
  });

  it("brackets, braces, colons and escaped quotes inside strings are not structure", () => {
    const tricky = { "a\\": "[[[{{{:::\"]]]", b: "\\", c: "[".repeat(1000) + ":".repeat(1000) };
    const m = parseManifest(enc.encode(JSON.stringify({ ...base, annotations: tricky })), null);
    expect(m.annotations).toEqual(tricky);
    const deepInString = JSON.stringify({ ...base, annotations: { s: "\\\"" + "[".repeat(100) } });
    expect(parseManifest(enc.encode(deepInString), null).annotations?.s).toBe("\\\"" + "[".repeat(100));
  });

  it("stored content read back without limits (backfill) is not shape-checked", () => {
    expect(parseManifest(withExtra("[".repeat(100) + "]".repeat(100)), null, { limits: false }).kind).toBe("image");
  });
});
