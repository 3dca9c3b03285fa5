// `n`/`last` pagination shared by tags, catalog and referrers, and the RFC 5988 Link header.
import { oci } from "./errors";

export interface PageRequest {
  n: number | null;
  last: string | null;
}

export function parsePage(url: URL, max: number): PageRequest {
  const raw = url.searchParams.get("n");
  let n: number | null = null;
  if (raw !== null) {
    if (!/^\d+$/.test(raw)) throw oci("PAGINATION_NUMBER_INVALID", `n must be a non-negative integer, got "${raw.slice(0, 20)}"`);
    n = Math.min(Number(raw), max);
  }
  return { n, last: url.searchParams.get("last") };
}

export function nextLink(path: string, params: Record<string, string | string[]>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) for (const item of Array.isArray(v) ? v : [v]) q.append(k, item);
  return `<${path}?${q.toString()}>; rel="next"`;
}
