// cosign simple-signing verification (src/signatures/verify.ts) against the committed vectors of
// cloister-spec/signatures/v1 (generated with Node's crypto by gen-vectors.mjs), in workerd's WebCrypto.
import { describe, expect, it } from "vitest";
import raw from "../../cloister-spec/signatures/v1/vectors/vectors.json";

interface Vectors {
  subject: string;
  subjectManifest: string;
  keys: Record<string, { algorithm: string; registered: boolean; pem: string }>;
  cases: { name: string; description: string; manifest: string; manifestDigest: string; blobs: Record<string, string>; expect: { verified: boolean; signer: string | null; reason?: string } }[];
}
const vectors = raw as unknown as Vectors;
import { derToP1363, importPublicKeyPem, verifySimpleSigning, type VerificationKey } from "../../src/signatures/verify";
import { base64ToBytes } from "../../src/util/encoding";

const enc = new TextEncoder();

async function registered(): Promise<VerificationKey[]> {
  const out: VerificationKey[] = [];
  for (const [name, k] of Object.entries(vectors.keys)) {
    if (!k.registered) continue;
    const imported = await importPublicKeyPem(k.pem);
    expect(imported.algorithm).toBe(k.algorithm);
    out.push({ name, ...imported });
  }
  return out;
}

describe("cosign simple-signing vectors", () => {
  for (const v of vectors.cases) {
    it(`${v.name}: ${v.description}`, async () => {
      const blobs = v.blobs;
      const checks = await verifySimpleSigning(enc.encode(v.manifest), vectors.subject, await registered(), async (d) => (blobs[d] ? base64ToBytes(blobs[d]) : null));
      expect(checks).toHaveLength(1);
      expect(checks[0].verified).toBe(v.expect.verified);
      expect(checks[0].signer).toBe(v.expect.signer);
      if (v.expect.reason !== undefined) expect(checks[0].reason).toContain(v.expect.reason);
    });
  }

  it("a valid signature counts only for the registered key that made it", async () => {
    const alice = vectors.cases.find((c) => c.name === "alice-ecdsa-p256")!;
    const keys = (await registered()).filter((k) => k.name === "bob");
    const blobs = alice.blobs;
    const checks = await verifySimpleSigning(enc.encode(alice.manifest), vectors.subject, keys, async (d) => base64ToBytes(blobs[d]));
    expect(checks[0]).toMatchObject({ verified: false, signer: null });
  });

  it("a signature annotation that is not valid base64 is recorded unverified, never an exception", async () => {
    const v = vectors.cases[0];
    const m = JSON.parse(v.manifest) as { layers: { annotations: Record<string, string> }[] };
    m.layers[0].annotations["dev.cosignproject.cosign/signature"] = "A";
    const checks = await verifySimpleSigning(enc.encode(JSON.stringify(m)), vectors.subject, await registered(), async (d) => base64ToBytes(v.blobs[d]));
    expect(checks[0]).toMatchObject({ verified: false, signer: null });
    expect(checks[0].reason).toContain("base64");
  });

  it("a manifest without a simple-signing layer, or not JSON, yields no checks", async () => {
    const keys = await registered();
    expect(await verifySimpleSigning(enc.encode(JSON.stringify({ schemaVersion: 2, layers: [{ mediaType: "application/octet-stream", digest: vectors.subject }] })), vectors.subject, keys, async () => null)).toEqual([]);
    expect(await verifySimpleSigning(enc.encode("{"), vectors.subject, keys, async () => null)).toEqual([]);
  });
});

describe("keys and DER", () => {
  it("refuses PEM that is not an ECDSA P-256 or Ed25519 public key", async () => {
    await expect(importPublicKeyPem("not a key")).rejects.toThrow(/PUBLIC KEY/);
    await expect(importPublicKeyPem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")).rejects.toThrow(/neither/);
  });
  it("converts DER ECDSA signatures to r||s and rejects malformed ones", () => {
    const der = new Uint8Array([0x30, 0x08, 0x02, 0x02, 0x00, 0x81, 0x02, 0x02, 0x01, 0x02]);
    const raw = derToP1363(der, 4)!;
    expect([...raw]).toEqual([0, 0, 0, 0x81, 0, 0, 1, 2]);
    expect(derToP1363(der.subarray(0, 9), 4)).toBeNull();
    expect(derToP1363(new Uint8Array([0x31, 0]), 4)).toBeNull();
  });
});
