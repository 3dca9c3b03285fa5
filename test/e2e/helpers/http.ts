// Minimal HTTP(S) client for e2e tests: accepts the self-signed certificate of
// `wrangler dev --local-protocol https`, streams request bodies (files, file ranges) and can
// hash response bodies without buffering them.
import * as http from "node:http";
import * as https from "node:https";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import type { Readable } from "node:stream";
import type { RunningRegistry } from "./registry";

export interface Resp {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body (only its first 64 KiB with discardBody). */
  body: Buffer;
  /** sha256 hex and length of the body (always computed). */
  sha256: string;
  size: number;
  text(): string;
  json(): any;
}

export type Body = Buffer | string | { file: string; start?: number; end?: number /* inclusive */ } | Readable;

export interface ReqOptions {
  headers?: Record<string, string>;
  body?: Body;
  /** Hash the response body instead of keeping it in memory. */
  discardBody?: boolean;
  timeoutMs?: number;
}

const agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true, rejectUnauthorized: false }) };

export function request(base: string | RunningRegistry, method: string, pathOrUrl: string, o: ReqOptions = {}): Promise<Resp> {
  const baseUrl = typeof base === "string" ? base : base.url;
  const url = new URL(pathOrUrl, baseUrl);
  const mod = url.protocol === "https:" ? https : http;
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  let stream: Readable | undefined;
  let buf: Buffer | undefined;
  const b = o.body;
  if (typeof b === "string") buf = Buffer.from(b);
  else if (Buffer.isBuffer(b)) buf = b;
  else if (b && "file" in b) stream = createReadStream(b.file, { start: b.start, end: b.end, highWaterMark: 1 << 20 });
  else if (b) stream = b as Readable;
  if (buf && !hasHeader(headers, "content-length")) headers["Content-Length"] = String(buf.length);
  if (!b && ["PUT", "POST", "PATCH"].includes(method) && !hasHeader(headers, "content-length") && !hasHeader(headers, "transfer-encoding")) headers["Content-Length"] = "0";
  return new Promise((resolve, reject) => {
    const req = mod.request(url, { method, headers, agent: url.protocol === "https:" ? agents.https : agents.http, timeout: o.timeoutMs ?? 10 * 60_000 }, (res) => {
      const hash = createHash("sha256");
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (d: Buffer) => {
        hash.update(d);
        size += d.length;
        // With discardBody keep only the first 64 KiB, for error messages.
        if (!o.discardBody) chunks.push(d);
        else if (size - d.length < 65536) chunks.push(d.subarray(0, 65536 - (size - d.length)));
      });
      res.on("error", reject);
      res.on("end", () => {
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          sha256: hash.digest("hex"),
          size,
          text: () => body.toString("utf8"),
          json: () => JSON.parse(body.toString("utf8")),
        });
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on("error", reject);
    if (stream) {
      stream.on("error", (e) => req.destroy(e));
      stream.pipe(req);
    } else req.end(buf);
  });
}

function hasHeader(h: Record<string, string>, name: string) {
  return Object.keys(h).some((k) => k.toLowerCase() === name);
}

/** Short description of a response for assertion messages. */
export function describe(r: Resp): string {
  const hdrs = Object.entries(r.headers)
    .filter(([k]) => /^(location|range|content-range|content-length|content-type|docker-content-digest|docker-upload-uuid|oci-)/i.test(k))
    .map(([k, v]) => `${k}: ${v}`)
    .join("; ");
  return `HTTP ${r.status} [${hdrs}] ${r.body.length ? r.body.toString("utf8").slice(0, 500) : ""}`;
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}
