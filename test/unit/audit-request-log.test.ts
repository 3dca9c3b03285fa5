// The request log times a response to its LAST byte (docs/audit.md "Request log"): the line is
// written when the body has been sent or the client went away, with the bytes actually sent. A
// small Hono app with the real middleware serves deliberately slow bodies; the real Worker app
// serves a multi-megabyte blob.
import { env } from "cloudflare:workers";
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Hono } from "hono";
import { requestLog } from "../../src/http/request-log";
import { buildApp } from "../../src/app";
import type { Env } from "../../src/env";
import { BASE, bytes, sha256 } from "./helpers";

const CHUNK = 64 * 1024;
const CHUNKS = 5;
const DELAY_MS = 60;

/** A body of CHUNKS chunks, each after DELAY_MS. */
function slowBody(): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (i === CHUNKS) return ctl.close();
      await new Promise((r) => setTimeout(r, DELAY_MS));
      ctl.enqueue(new Uint8Array(CHUNK).fill(i++));
    },
  });
}

const mini = new Hono<{ Bindings: { REQUEST_LOG: string } }>();
mini.use("*", requestLog());
mini.get("/slow", () => new Response(slowBody(), { headers: { "Content-Type": "application/x-ndjson" } }));
// Small answers are logged when ready, even when they declare a length their body does not have
// (upload progress headers say Content-Length: 0 on a JSON error body).
mini.get("/small-mislabelled", () => new Response('{"errors":[]}', { status: 416, headers: { "Content-Type": "application/json", "Content-Length": "0" } }));
mini.get("/slow-fixed", () => new Response(slowBody(), { headers: { "Content-Type": "application/octet-stream", "Content-Length": String(CHUNK * CHUNKS) } }));

let lines: Record<string, unknown>[] = [];
function capture() {
  lines = [];
  vi.spyOn(console, "log").mockImplementation((s: unknown) => {
    try {
      const l = JSON.parse(String(s)) as Record<string, unknown>;
      if (l.type === "request") lines.push(l);
    } catch {
      /* not ours */
    }
  });
}
afterEach(() => vi.restoreAllMocks());

const settle = () => new Promise((r) => setTimeout(r, 20));
async function until(ok: () => boolean) {
  for (let i = 0; i < 100 && !ok(); i++) await settle();
}

async function readAll(res: Response): Promise<number> {
  let n = 0;
  const reader = res.body!.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return n;
    n += value.byteLength;
  }
}

describe("request log to the last byte", () => {
  for (const path of ["/slow", "/slow-fixed"]) {
    it(`${path}: the line comes after the last byte, with its duration and the bytes sent`, async () => {
      capture();
      const res = await mini.fetch(new Request(`${BASE}${path}`, { headers: { "X-Request-Id": `last-byte-${path.slice(1)}` } }), { REQUEST_LOG: "on" });
      expect(res.status).toBe(200);
      if (path === "/slow-fixed") expect(res.headers.get("Content-Length")).toBe(String(CHUNK * CHUNKS));
      await settle();
      expect(lines, "no line before the body was sent").toHaveLength(0);
      expect(await readAll(res)).toBe(CHUNK * CHUNKS);
      await settle();
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatchObject({ requestId: `last-byte-${path.slice(1)}`, status: 200, bytesOut: CHUNK * CHUNKS });
      expect(lines[0].durationMs as number).toBeGreaterThanOrEqual(CHUNKS * DELAY_MS - 10);
      expect(lines[0].error).toBeUndefined();
    });
  }

  for (const path of ["/slow", "/slow-fixed"]) {
    it(`${path}: a client that goes away mid-body gets a line that says so`, async () => {
      capture();
      const res = await mini.fetch(new Request(`${BASE}${path}`), { REQUEST_LOG: "on" });
      const reader = res.body!.getReader();
      const first = await reader.read();
      expect(first.value!.byteLength).toBeGreaterThan(0);
      await reader.cancel("client gone");
      await until(() => lines.length > 0);
      expect(lines).toHaveLength(1);
      if (path === "/slow") expect(lines[0].bytesOut as number).toBeLessThan(CHUNK * CHUNKS);
      else expect(lines[0].bytesOut).toBeNull(); // a native fixed-length pipe does not count
      expect(lines[0].error).toMatch(/^body not sent to the end/);
    });
  }

  it("a small answer is logged when ready and passed on untouched, even with a wrong Content-Length", async () => {
    capture();
    const res = await mini.fetch(new Request(`${BASE}/small-mislabelled`, { headers: { "X-Request-Id": "small-mislabelled-1" } }), { REQUEST_LOG: "on" });
    await settle();
    expect(lines.find((l) => l.requestId === "small-mislabelled-1")).toMatchObject({ status: 416, bytesOut: 0 });
    expect(await res.text()).toBe('{"errors":[]}');
  });

  it("a large blob GET through the Worker: bytesOut is its length, Content-Length kept", async () => {
    const app = buildApp();
    const e = { ...(env as unknown as Env), REQUEST_LOG: "off" };
    const data = bytes(6 * 1024 * 1024, 77);
    const d = await sha256(data);
    const ctx0 = createExecutionContext();
    const put = await app.fetch(new Request(`${BASE}/v2/reqlog/big/blobs/uploads/?digest=${d}`, { method: "POST", body: data, headers: { "Content-Length": String(data.length) } }), e, ctx0);
    await waitOnExecutionContext(ctx0);
    expect(put.status).toBe(201);
    capture();
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`${BASE}/v2/reqlog/big/blobs/${d}`, { headers: { "X-Request-Id": "big-blob-get-1" } }), { ...e, REQUEST_LOG: "on" }, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.headers.get("Content-Length")).toBe(String(data.length));
    const got = new Uint8Array(await res.arrayBuffer());
    expect(await sha256(got)).toBe(d);
    await settle();
    expect(lines.find((l) => l.requestId === "big-blob-get-1")).toMatchObject({ method: "GET", status: 200, bytesOut: data.length, repository: "reqlog/big", digest: d });
  });

  it("a chunked PATCH (no Content-Length) logs the bytes it carried as bytesIn", async () => {
    const app = buildApp();
    const e = { ...(env as unknown as Env), REQUEST_LOG: "on" };
    const start = await app.fetch(new Request(`${BASE}/v2/reqlog/chunked/blobs/uploads/`, { method: "POST" }), e, createExecutionContext());
    expect(start.status).toBe(202);
    const data = bytes(300_000, 5);
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (sent) return ctl.close();
        sent = true;
        ctl.enqueue(data);
      },
    });
    capture();
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request(`${BASE}${start.headers.get("Location")}`, { method: "PATCH", body, headers: { "Content-Type": "application/octet-stream", "X-Request-Id": "chunked-patch-1" }, duplex: "half" } as RequestInit), e, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(202);
    await settle();
    expect(lines.find((l) => l.requestId === "chunked-patch-1")).toMatchObject({ method: "PATCH", status: 202, bytesIn: data.length });
  });
});
