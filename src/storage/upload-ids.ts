// Upload ids (docs/adr/0013). Two kinds:
//   <uuid v4>                   a session object was created at POST (the client declared an extra
//                               digest algorithm, which a session must remember)
//   <uuid v4>.<expiry>.<mac>    signed and stateless: no object exists until the first PATCH.
//                               expiry: Unix seconds, 8 hex digits; mac: the first 128 bits of
//                               HMAC-SHA256 over the repository, the principal, the uuid and the
//                               expiry. The session object (if a PATCH creates one) and its R2
//                               prefix data/<uuid>/ are named by the uuid alone, so garbage
//                               collection's reconcile treats both kinds alike.
// The key: UPLOAD_SIGNING_KEY if set, else derived from ADMIN_PASSWORD, else a built-in one. The
// binding does not rest on the key being secret: every piece of state is named by the whole id
// (ended ids) or checks the repository and principal itself (sessions), and the MAC makes the id a
// function of both, so an id can never name another repository's or principal's upload. A known
// key only lets a caller mint ids for itself, which is what POST does for it anyway; the expiry is
// clamped to UPLOAD_TTL_SECONDS, so a minted id cannot outlive that either.
import type { Env } from "../env";
import { config } from "../env";
import { oci } from "../oci/errors";
import { timingSafeEqual, toHex } from "../util/encoding";

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const SIGNED_RE = /^([0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})\.([0-9a-f]{8})\.([0-9a-f]{32})$/;
/** Shortest UPLOAD_SIGNING_KEY used; a shorter one is ignored (as for TOKEN_SIGNING_KEYS). */
export const MIN_UPLOAD_KEY_LENGTH = 32;
/** Clock skew tolerated between the Worker that minted an id and the one reading it. */
const SKEW_SECONDS = 300;
const BUILT_IN = "cloister upload ids: no secret configured (docs/adr/0013)";

/** A verified upload id. */
export interface UploadId {
  /** The id as in the Location (answered back in headers). */
  id: string;
  /** Names the session object and the R2 prefix data/<session>/. */
  session: string;
  /** A signed id: its expiry (ms). Its session object exists only once a PATCH created it. */
  signed: { expiresAt: number } | null;
}

// A memo of a pure derivation (same secret, same key in every isolate), not request state.
const keys = new Map<string, Promise<CryptoKey>>();

function keyMaterial(env: Env): string {
  const own = typeof env.UPLOAD_SIGNING_KEY === "string" ? env.UPLOAD_SIGNING_KEY : "";
  if (own.length >= MIN_UPLOAD_KEY_LENGTH) return "own\n" + own;
  const admin = typeof env.ADMIN_PASSWORD === "string" ? env.ADMIN_PASSWORD : "";
  if (admin !== "") return "admin\n" + admin;
  return "built-in\n" + BUILT_IN;
}

/** The HMAC key: SHA-256 of a label and the secret, so the secret itself never keys this MAC. */
function signingKey(env: Env): Promise<CryptoKey> {
  const material = keyMaterial(env);
  let k = keys.get(material);
  if (!k) {
    k = crypto.subtle.digest("SHA-256", new TextEncoder().encode("cloister-upload-id-key-v1\n" + material))
      .then((raw) => crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]));
    keys.set(material, k);
  }
  return k;
}

async function mac(env: Env, repo: string, principal: string, uuid: string, expiry: string): Promise<Uint8Array> {
  // Newline-separated: neither a repository name nor a principal id contains one.
  const msg = new TextEncoder().encode(`cloister-upload-v1\n${repo}\n${principal}\n${uuid}\n${expiry}`);
  return new Uint8Array(await crypto.subtle.sign("HMAC", await signingKey(env), msg)).slice(0, 16);
}

/** A signed, stateless upload id for `repo`/`principal`, valid for UPLOAD_TTL_SECONDS. */
export async function mintUploadId(env: Env, repo: string, principal: string, ttlSeconds = config(env).uploadTtlSeconds): Promise<string> {
  const uuid = crypto.randomUUID();
  const expiry = Math.max(0, Math.min(0xffffffff, Math.floor(Date.now() / 1000) + ttlSeconds)).toString(16).padStart(8, "0");
  return `${uuid}.${expiry}.${toHex(await mac(env, repo, principal, uuid, expiry))}`;
}

/**
 * The upload `id` names for `repo`/`principal`, or null when it is malformed, forged, expired,
 * valid further ahead than UPLOAD_TTL_SECONDS, or signed for another repository or principal —
 * all answered as an unknown upload, before any object is asked.
 */
export async function parseUploadId(env: Env, repo: string, principal: string, id: string): Promise<UploadId | null> {
  if (UUID_RE.test(id)) return { id, session: id, signed: null };
  const m = SIGNED_RE.exec(id);
  if (!m) return null;
  const [, uuid, expiry, sig] = m;
  const expiresAt = parseInt(expiry, 16) * 1000;
  const now = Date.now();
  if (expiresAt <= now || expiresAt > now + (config(env).uploadTtlSeconds + SKEW_SECONDS) * 1000) return null;
  const want = await mac(env, repo, principal, uuid, expiry);
  const got = new Uint8Array(sig.match(/../g)!.map((h) => parseInt(h, 16)));
  if (!timingSafeEqual(want, got)) return null;
  return { id, session: uuid, signed: { expiresAt } };
}

export function unknownUploadError() {
  return oci("BLOB_UPLOAD_UNKNOWN", "upload session not found: it expired, was completed or cancelled, or belongs to another repository");
}
