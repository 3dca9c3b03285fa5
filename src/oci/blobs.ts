// GET/HEAD/DELETE /v2/<name>/blobs/<digest>. Reads are answered only for digests that are
// members of the repository; everything else gets the same 404 as a digest stored nowhere.
import type { Ctx } from "../app";
import { config } from "../env";
import { oci } from "./errors";
import { parseDigest } from "./grammar";
import { memberBlob } from "../storage/backfill";
import { unlinkBlob } from "../storage/holders";
import { proxyBlob } from "../proxy/pull";

export async function get(c: Ctx, name: string, digestParam: string, head: boolean): Promise<Response> {
  const { digest } = parseDigest(digestParam);
  const etag = `"${digest}"`;
  const base: Record<string, string> = {
    "Docker-Content-Digest": digest,
    ETag: etag,
    "Accept-Ranges": "bytes",
    // Without a Content-Type, local workerd gzips responses for Go clients (see PLATFORM-NOTES).
    "Content-Type": "application/octet-stream",
    "Cache-Control": "max-age=31536000, immutable",
  };
  // A proxy namespace fetches a miss from its upstream first; a plain GET gets the bytes while
  // they land in R2 (HEAD and ranges wait for the fill; docs/proxy.md).
  const plain = !head && !c.req.header("Range") && !c.req.header("If-None-Match");
  const proxied = await proxyBlob(c.env, name, digest, { stream: plain, waitUntil: (p) => c.executionCtx.waitUntil(p) });
  if (proxied && "streamed" in proxied) {
    const { body, size } = proxied.streamed;
    return new Response(body, { status: 200, headers: size === null ? base : { ...base, "Content-Length": String(size) } });
  }
  const member = proxied?.member ?? (await memberBlob(c.env, name, digest));
  if (!member) throw blobUnknown(digest);
  if (ifNoneMatch(c.req.header("If-None-Match"), etag)) return new Response(null, { status: 304, headers: base });

  const range = parseRange(c.req.header("Range"), member.size);
  if (range === "unsatisfiable") {
    throw oci("RANGE_INVALID", `range "${c.req.header("Range")!.slice(0, 60)}" is not satisfiable for a blob of ${member.size} bytes`, { size: member.size }, 416, { "Content-Range": `bytes */${member.size}` });
  }
  if (head) {
    return new Response(null, { status: 200, headers: { ...base, "Content-Length": String(member.size) } });
  }
  if (range) {
    const length = range.end - range.start + 1;
    const obj = await c.env.BUCKET.get(member.r2Key, { range: { offset: range.start, length } });
    if (!obj) throw lostBytes(digest, member.r2Key);
    return new Response(obj.body, {
      status: 206,
      headers: { ...base, "Content-Length": String(length), "Content-Range": `bytes ${range.start}-${range.end}/${member.size}` },
    });
  }
  const obj = await c.env.BUCKET.get(member.r2Key);
  if (!obj) throw lostBytes(digest, member.r2Key);
  return new Response(obj.body, { status: 200, headers: { ...base, "Content-Length": String(member.size) } });
}

/** Unlink the blob from this repository only; bytes stay for garbage collection. */
export async function remove(c: Ctx, name: string, digestParam: string): Promise<Response> {
  if (!config(c.env).deleteEnabled) throw deletesDisabled();
  const { digest } = parseDigest(digestParam);
  const removed = await unlinkBlob(c.env, name, digest);
  if (!removed) throw blobUnknown(digest);
  return new Response(null, { status: 202, headers: { "Content-Length": "0", "Docker-Content-Digest": digest } });
}

export function blobUnknown(digest: string) {
  return oci("BLOB_UNKNOWN", `blob ${digest} is not known to this repository`, { digest });
}

export function deletesDisabled() {
  return oci("UNSUPPORTED", "deletes are disabled on this registry (DELETE_ENABLED=false)", undefined, 405);
}

function lostBytes(digest: string, key: string) {
  console.error(`blob ${digest} is indexed but its object ${key} is missing`);
  return oci("INTERNAL", `blob ${digest} is indexed but its bytes are missing; contact the operator`);
}

function ifNoneMatch(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((t) => t.trim() === etag || t.trim() === "*" || t.trim() === `W/${etag}`);
}

/**
 * One byte range ("bytes=a-b", "bytes=a-", "bytes=-n"). Returns null to serve the whole blob
 * (no header, another unit, or several ranges, which RFC 9110 lets us ignore).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | "unsatisfiable" {
  if (!header) return null;
  const h = header.trim();
  if (!h.toLowerCase().startsWith("bytes=")) return null;
  const spec = h.slice(6).trim();
  if (spec.includes(",")) return null;
  const m = /^(\d*)-(\d*)$/.exec(spec);
  if (!m || (m[1] === "" && m[2] === "")) return "unsatisfiable";
  if (m[1] === "") {
    const n = Number(m[2]);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || (m[2] !== "" && Number(m[2]) < start)) return "unsatisfiable";
  return { start, end };
}
