// Repository name, tag and digest grammar from the OCI Distribution Spec v1.1.
import { oci } from "./errors";

/** <name>: path components of [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* joined by "/". */
export const NAME_RE = /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$/;
export const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Generic digest grammar: algorithm ":" encoded. */
export const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export const MAX_NAME_LENGTH = 255;

/** Registered algorithms we accept, with their hex length. */
export const ALGORITHMS = {
  sha256: 64,
  sha512: 128,
  blake3: 64,
} as const;
export type Algorithm = keyof typeof ALGORITHMS;

export interface ParsedDigest {
  algorithm: Algorithm;
  hex: string;
  /** canonical "algorithm:hex" */
  digest: string;
}

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function isDigestLike(ref: string): boolean {
  return ref.includes(":");
}

/** Parse a digest, or null when it is malformed or uses an algorithm we do not support. */
export function tryParseDigest(value: string): ParsedDigest | null {
  if (!DIGEST_RE.test(value)) return null;
  const i = value.indexOf(":");
  const algorithm = value.slice(0, i) as Algorithm;
  const hex = value.slice(i + 1);
  const len = ALGORITHMS[algorithm];
  if (len === undefined || !Object.prototype.hasOwnProperty.call(ALGORITHMS, algorithm)) return null;
  if (hex.length !== len || !/^[a-f0-9]+$/.test(hex)) return null;
  return { algorithm, hex, digest: value };
}

/** Parse a digest or throw DIGEST_INVALID with a message that says what is wrong. */
export function parseDigest(value: string | undefined | null, what = "digest"): ParsedDigest {
  if (!value) throw oci("DIGEST_INVALID", `${what} is required`);
  const parsed = tryParseDigest(value);
  if (parsed) return parsed;
  if (!DIGEST_RE.test(value)) throw oci("DIGEST_INVALID", `${what} "${truncate(value)}" is not a valid digest (expected algorithm:hex)`);
  const algorithm = value.slice(0, value.indexOf(":"));
  if (!Object.prototype.hasOwnProperty.call(ALGORITHMS, algorithm)) {
    throw oci("DIGEST_INVALID", `${what} algorithm "${truncate(algorithm)}" is not supported (supported: ${Object.keys(ALGORITHMS).join(", ")})`);
  }
  const want = ALGORITHMS[algorithm as Algorithm];
  throw oci("DIGEST_INVALID", `${what} "${truncate(value)}" must be ${algorithm}: followed by ${want} lowercase hex characters`);
}

export function assertName(name: string): void {
  if (!isValidName(name)) {
    throw oci("NAME_INVALID", `invalid repository name "${truncate(name)}": components must match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)* separated by "/", at most ${MAX_NAME_LENGTH} characters`, { name: truncate(name) });
  }
}

export function truncate(s: string, n = 100): string {
  return s.length > n ? s.slice(0, n) + "…" : s;
}
