// cosign simple-signing verification with WebCrypto (docs/signatures.md, cloister-spec/signatures/v1).
// A signature manifest's layer of media type application/vnd.dev.cosign.simplesigning.v1+json is
// the payload; its annotation dev.cosignproject.cosign/signature is the base64 signature over the
// payload's exact bytes. Valid = the layer digest matches the bytes, the payload names the subject
// in critical.image.docker-manifest-digest, and a registered key verifies the signature.
import { base64ToBytes, toHex } from "../util/encoding";

export const SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json";
export const COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";
/** Largest payload read for verification (cosign payloads are a few hundred bytes). */
export const MAX_PAYLOAD_BYTES = 64 * 1024;
/** Simple-signing layers checked per signature manifest (cosign writes one per signature). */
export const MAX_SIGNATURE_LAYERS = 16;

export type KeyAlgorithm = "ecdsa-p256" | "ed25519";
export interface VerificationKey {
  name: string;
  algorithm: KeyAlgorithm;
  key: CryptoKey;
  /** The registration's generation (attestation rows carry it; 0 when unknown). */
  gen?: number;
}

export interface SignatureCheck {
  /** The payload layer's digest. */
  payload: string;
  verified: boolean;
  /** The registered key that verified it; null when none did. */
  signer: string | null;
  /** Why it does not count, when not verified. */
  reason: string | null;
  /** The verifying key's generation, when verified. */
  signerGen?: number;
}

/** Imports a PEM "PUBLIC KEY" (SPKI) as cosign writes it: ECDSA P-256 or Ed25519. Throws on anything else. */
export async function importPublicKeyPem(pem: string): Promise<{ algorithm: KeyAlgorithm; key: CryptoKey }> {
  const m = /^-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----\s*$/.exec(pem.trim());
  if (!m) throw new Error('expected one PEM block "-----BEGIN PUBLIC KEY-----" (SPKI), as cosign generate-key-pair writes cosign.pub');
  const der = base64ToBytes(m[1].replace(/\s+/g, ""));
  try {
    return { algorithm: "ecdsa-p256", key: await crypto.subtle.importKey("spki", der, { name: "ECDSA", namedCurve: "P-256" }, true, ["verify"]) };
  } catch {
    /* not P-256; try Ed25519 */
  }
  try {
    return { algorithm: "ed25519", key: await crypto.subtle.importKey("spki", der, { name: "Ed25519" }, true, ["verify"]) };
  } catch {
    throw new Error("the key is neither an ECDSA P-256 nor an Ed25519 public key");
  }
}

/** ASN.1 DER ECDSA-Sig-Value (what cosign stores) → the fixed-width r||s WebCrypto verifies; null if malformed. */
export function derToP1363(der: Uint8Array, width = 32): Uint8Array | null {
  let i = 0;
  const len = (): number | null => {
    if (i >= der.length) return null;
    const b = der[i++];
    if (b < 0x80) return b;
    if (b !== 0x81 || i >= der.length) return null;
    return der[i++];
  };
  if (der[i++] !== 0x30) return null;
  const seq = len();
  if (seq === null || i + seq !== der.length) return null;
  const out = new Uint8Array(width * 2);
  for (let k = 0; k < 2; k++) {
    if (der[i++] !== 0x02) return null;
    const l = len();
    if (l === null || l === 0 || i + l > der.length) return null;
    let v = der.subarray(i, i + l);
    i += l;
    while (v.length > 1 && v[0] === 0) v = v.subarray(1);
    if (v.length > width) return null;
    out.set(v, k * width + width - v.length);
  }
  return i === der.length ? out : null;
}

async function verifyWith(k: VerificationKey, sig: Uint8Array, payload: Uint8Array): Promise<boolean> {
  try {
    if (k.algorithm === "ed25519") return await crypto.subtle.verify({ name: "Ed25519" }, k.key, sig, payload);
    const raw = derToP1363(sig);
    return raw !== null && (await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, k.key, raw, payload));
  } catch {
    return false;
  }
}

async function sha256(b: Uint8Array): Promise<string> {
  return "sha256:" + toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", b)));
}

/**
 * Checks every simple-signing layer of a signature manifest against `subject` and `keys`.
 * `readBlob` returns a payload's bytes (at most MAX_PAYLOAD_BYTES; null when absent or larger).
 * A manifest with no simple-signing layer yields no checks (present but not a cosign signature).
 */
export async function verifySimpleSigning(manifestBytes: Uint8Array, subject: string, keys: readonly VerificationKey[], readBlob: (digest: string) => Promise<Uint8Array | null>): Promise<SignatureCheck[]> {
  let manifest: { layers?: { mediaType?: unknown; digest?: unknown; annotations?: Record<string, unknown> }[] };
  try {
    manifest = JSON.parse(new TextDecoder().decode(manifestBytes));
  } catch {
    return [];
  }
  const layers = (Array.isArray(manifest?.layers) ? manifest.layers : []).filter((l) => l?.mediaType === SIMPLE_SIGNING_MEDIA_TYPE && typeof l.digest === "string").slice(0, MAX_SIGNATURE_LAYERS);
  const checks: SignatureCheck[] = [];
  for (const l of layers) {
    const digest = l.digest as string;
    const fail = (reason: string) => checks.push({ payload: digest, verified: false, signer: null, reason });
    const sigText = l.annotations?.[COSIGN_SIGNATURE_ANNOTATION];
    if (typeof sigText !== "string" || !/^[A-Za-z0-9+/]+={0,2}$/.test(sigText)) {
      fail(`no base64 ${COSIGN_SIGNATURE_ANNOTATION} annotation`);
      continue;
    }
    const payload = await readBlob(digest);
    if (payload === null) {
      fail(`payload ${digest} is missing or over ${MAX_PAYLOAD_BYTES} bytes`);
      continue;
    }
    if ((await sha256(payload)) !== digest) {
      fail("payload bytes do not match the layer digest");
      continue;
    }
    let named: unknown;
    try {
      named = (JSON.parse(new TextDecoder().decode(payload)) as { critical?: { image?: { "docker-manifest-digest"?: unknown } } })?.critical?.image?.["docker-manifest-digest"];
    } catch {
      fail("payload is not JSON");
      continue;
    }
    if (named !== subject) {
      fail(`payload signs ${typeof named === "string" ? named.slice(0, 80) : "no digest"}, not ${subject}`);
      continue;
    }
    let sig: Uint8Array;
    try {
      sig = base64ToBytes(sigText);
    } catch {
      fail(`${COSIGN_SIGNATURE_ANNOTATION} is not valid base64`);
      continue;
    }
    let signer: VerificationKey | null = null;
    for (const k of keys) {
      if (await verifyWith(k, sig, payload)) {
        signer = k;
        break;
      }
    }
    if (signer === null) fail("no registered key verifies the signature");
    else checks.push({ payload: digest, verified: true, signer: signer.name, reason: null, signerGen: signer.gen ?? 0 });
  }
  return checks;
}
