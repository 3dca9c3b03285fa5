// `n`/`last` pagination shared by tags, catalog and referrers, and the RFC 5988 Link header.
import { oci } from "./errors";

export interface PageRequest {
  n: number | null;
  last: string | null;
}

/**
 * Longest `last` cursor accepted. Real cursors are a tag (≤ 128), a repository name (≤ 255) or a
 * digest (≤ 135); the cap keeps a client-sized string from reaching the store (SQLite refuses
 * strings over 2 MB with SQLITE_TOOBIG, which would be a 500).
 */
export const MAX_CURSOR_CHARS = 512;

export function parsePage(url: URL, max: number): PageRequest {
  const raw = url.searchParams.get("n");
  let n: number | null = null;
  if (raw !== null) {
    if (!/^\d+$/.test(raw)) throw oci("PAGINATION_INVALID", `n must be a non-negative integer, got "${raw.slice(0, 20)}"`);
    n = Math.min(Number(raw), max);
  }
  const last = url.searchParams.get("last");
  if (last !== null && last.length > MAX_CURSOR_CHARS) {
    throw oci("PAGINATION_INVALID", `last is ${last.length} characters; at most ${MAX_CURSOR_CHARS} are accepted (a tag, repository name or digest)`, { limit: MAX_CURSOR_CHARS });
  }
  return { n, last };
}

export function nextLink(path: string, params: Record<string, string | string[]>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const item of Array.isArray(v) ? v : [v]) q.append(k, item);
  return `<${path}?${q.toString()}>; rel="next"`;
}
