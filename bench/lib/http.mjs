// Minimal node:http client: streams request bodies, counts/hashes response bodies, keep-alive agents.
import http from "node:http";
import { createHash } from "node:crypto";
import { pipeline } from "node:stream";

export const MB = 1e6;
export const MiB = 1024 * 1024;

/**
 * A fresh connection per request, for large transfers. Twice, under heavy machine load, a large GET
 * sent on a keep-alive connection right after a large PUT got no answer from local wrangler.
 */
export function bulkAgent() {
  return new http.Agent({ keepAlive: false });
}

/** A keep-alive agent; maxSockets 1 keeps a sequential run on one connection. */
export function keepAliveAgent(maxSockets = 1) {
  return new http.Agent({ keepAlive: true, maxSockets, keepAliveMsecs: 10_000 });
}

/**
 * One HTTP request.
 *  body: undefined | Buffer | string | Readable (set Content-Length yourself for streams, or it goes chunked)
 *  sink: "text" (default, first 1 MiB kept) | "sha256" (count + hash) | "discard" (count only)
 *  idleMs: fail with StallError when the connection sees no traffic either way for this long
 * Resolves {status, headers, bytes, sha256?, text?, reused, ms}. Rejects only on transport errors.
 */
export function request(url, { method = "GET", headers = {}, body, agent, sink = "text", idleMs = 90_000 } = {}) {
  const u = typeof url === "string" ? new URL(url) : url;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    let responded = false;
    let settled = false;
    const fail = (err) => {
      if (!settled) {
        settled = true;
        reject(err);
      }
    };
    const req = http.request(
      { hostname: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent },
      (res) => {
        responded = true;
        const hash = sink === "sha256" ? createHash("sha256") : null;
        const chunks = [];
        let kept = 0;
        let bytes = 0;
        res.on("data", (c) => {
          bytes += c.length;
          if (hash) hash.update(c);
          else if (sink === "text" && kept < MiB) {
            chunks.push(c);
            kept += c.length;
          }
        });
        res.on("end", () => {
          if (settled) return;
          settled = true;
          resolve({
            status: res.statusCode,
            headers: res.headers,
            bytes,
            sha256: hash ? hash.digest("hex") : undefined,
            text: sink === "text" ? Buffer.concat(chunks).toString("utf8") : undefined,
            reused: req.reusedSocket,
            ms: performance.now() - t0,
          });
        });
        res.on("error", fail);
        res.on("aborted", () => fail(new BenchError(`${method} ${u.pathname.slice(0, 80)}: response aborted after ${bytes} bytes`)));
      },
    );
    req.setTimeout(idleMs, () =>
      req.destroy(new StallError(`${method} ${u.pathname.slice(0, 80)} stalled: no traffic for ${idleMs / 1000} s ${responded ? "mid-response" : "before any response"}`)),
    );
    req.on("error", (err) => {
      // A server may answer (e.g. 4xx) before reading the whole body; the pipe then breaks. Keep the answer.
      if (!responded || err instanceof StallError) fail(err);
    });
    if (body == null) req.end();
    else if (typeof body === "string" || Buffer.isBuffer(body) || body instanceof Uint8Array) req.end(body);
    else
      pipeline(body, req, (err) => {
        if (err && !responded) fail(err);
      });
  });
}

/** Short description of a failed response for error messages. */
export function describe(res) {
  const t = (res.text ?? "").replace(/\s+/g, " ").trim().slice(0, 300);
  return `HTTP ${res.status}${t ? `: ${t}` : ""}`;
}

export class BenchError extends Error {}

/** Things that went wrong but were recovered from (e.g. a stalled GET retried); printed in the report. */
export const incidents = [];

export class StallError extends BenchError {}

export function expectStatus(res, want, what) {
  const ok = Array.isArray(want) ? want.includes(res.status) : res.status === want;
  if (!ok) throw new BenchError(`${what}: expected ${[want].flat().join("/")}, got ${describe(res)}`);
  return res;
}
