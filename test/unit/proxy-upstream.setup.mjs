// Global setup (runs in Node) for test/unit/proxy.test.ts: a minimal upstream registry on
// 127.0.0.1 that serves blobs the tests register, counts GETs per digest at the upstream, and
// can corrupt a blob or send it slowly. The Worker under test reaches it with a real fetch().
//   PUT /_blobs/<digest>?corrupt=1&sliceDelayMs=N   register bytes (body)
//   PUT /_blobs/<digest>?mediaType=T&sliceDelayMs=N register a manifest of media type T
//   GET /_blobs/<digest>                             {"gets": n}
//   GET|HEAD /v2/<name>/blobs/<digest>               the blob, 64 KiB per write, N ms apart
//   GET|HEAD /v2/<name>/manifests/<digest>           the manifest, after N ms
import * as http from "node:http";

const SLICE = 64 * 1024;

export default async function setup(project) {
  const blobs = new Map();
  const gets = new Map();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://upstream");
    try {
      if (url.pathname.startsWith("/_blobs/")) {
        const digest = url.pathname.slice("/_blobs/".length);
        if (req.method === "PUT") {
          const chunks = [];
          for await (const c of req) chunks.push(c);
          blobs.set(digest, { bytes: Buffer.concat(chunks), corrupt: url.searchParams.get("corrupt") === "1", sliceDelayMs: Number(url.searchParams.get("sliceDelayMs") ?? 0), mediaType: url.searchParams.get("mediaType") });
          return res.end();
        }
        res.writeHead(200, { "Content-Type": "application/json" });
        return res.end(JSON.stringify({ gets: gets.get(digest) ?? 0 }));
      }
      const mm = /^\/v2\/.+\/manifests\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
      const manifest = mm && blobs.get(mm[1]);
      if (mm) {
        if (!manifest?.mediaType) {
          res.writeHead(404, { "Content-Type": "application/json" });
          return res.end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
        }
        if (req.method === "GET") gets.set(mm[1], (gets.get(mm[1]) ?? 0) + 1);
        if (manifest.sliceDelayMs) await new Promise((r) => setTimeout(r, manifest.sliceDelayMs));
        res.writeHead(200, { "Content-Type": manifest.mediaType, "Content-Length": String(manifest.bytes.length), "Docker-Content-Digest": mm[1] });
        return res.end(req.method === "HEAD" ? undefined : manifest.bytes);
      }
      const m = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname);
      const blob = m && blobs.get(m[1]);
      if (!blob) {
        res.writeHead(404, { "Content-Type": "application/json" });
        return res.end('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}');
      }
      if (req.method === "GET") gets.set(m[1], (gets.get(m[1]) ?? 0) + 1);
      let bytes = blob.bytes;
      if (blob.corrupt) {
        bytes = Buffer.from(bytes);
        bytes[bytes.length - 1] ^= 0xff; // same length, last byte wrong
      }
      res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(bytes.length) });
      if (req.method === "HEAD") return res.end();
      for (let off = 0; off < bytes.length && !res.destroyed; off += SLICE) {
        if (!res.write(bytes.subarray(off, off + SLICE))) await new Promise((r) => { res.once("drain", r); res.once("close", r); });
        if (blob.sliceDelayMs) await new Promise((r) => setTimeout(r, blob.sliceDelayMs));
      }
      res.end();
    } catch {
      res.destroy();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  project.provide("proxyUpstream", `http://127.0.0.1:${server.address().port}`);
  return () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); });
}
