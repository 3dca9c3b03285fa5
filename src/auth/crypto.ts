// Password hashing (PBKDF2-SHA256 via WebCrypto), secret hashing and constant-time comparison.
// Nothing here logs or returns a secret.

/**
 * Cloudflare's production runtime refuses PBKDF2 with more than 100,000 iterations
 * (NotSupportedError); local workerd does not enforce it. 100,000 iterations cost ~11 ms of CPU
 * in workerd on the development machine. The count is stored with each hash, so it can change.
 */
export const PBKDF2_ITERATIONS = 100_000;
const SALT_BYTES = 16;
const HASH_BITS = 256;

import { base64urlToBytes, bytesToBase64url, timingSafeEqual, toHex } from "../util/encoding";

const enc = new TextEncoder();

export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

export function randomId(bytes = 16): string {
  return bytesToBase64url(randomBytes(bytes));
}

export async function sha256(data: string | Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", typeof data === "string" ? enc.encode(data) : data));
}

export async function sha256Hex(data: string | Uint8Array): Promise<string> {
  return toHex(await sha256(data));
}

/** Constant-time string equality: compares SHA-256 digests so lengths do not leak either. */
export async function stringsEqual(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([sha256(a), sha256(b)]);
  return timingSafeEqual(x, y);
}

async function pbkdf2(password: string, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", enc.encode(password), "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt, iterations }, key, HASH_BITS);
  return new Uint8Array(bits);
}

/** "pbkdf2-sha256$<iterations>$<salt b64url>$<hash b64url>" */
export async function hashPassword(password: string, iterations = PBKDF2_ITERATIONS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await pbkdf2(password, salt, iterations);
  return `pbkdf2-sha256$${iterations}$${bytesToBase64url(salt)}$${bytesToBase64url(hash)}`;
}

/** A fixed hash used to spend the same work when the account does not exist. */
const DUMMY_HASH = `pbkdf2-sha256$${PBKDF2_ITERATIONS}$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA`;

/** Verifies a password against a stored hash; with `stored` null it does the same work and fails. */
export async function verifyPassword(password: string, stored: string | null): Promise<boolean> {
  const parts = (stored ?? DUMMY_HASH).split("$");
  if (parts.length !== 4 || parts[0] !== "pbkdf2-sha256") return false;
  const iterations = Number(parts[1]);
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > PBKDF2_ITERATIONS) return false;
  let salt: Uint8Array, expected: Uint8Array;
  try {
    salt = base64urlToBytes(parts[2]);
    expected = base64urlToBytes(parts[3]);
  } catch {
    return false;
  }
  const actual = await pbkdf2(password, salt, iterations);
  const ok = timingSafeEqual(actual, expected.byteLength === actual.byteLength ? expected : new Uint8Array(actual.byteLength));
  return ok && stored !== null && expected.byteLength === actual.byteLength;
}
