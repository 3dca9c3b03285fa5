// X-Request-Id and the structured request log: one JSON line per request (console.log, which
// Workers Logs and Logpush index as fields), written when the response body has been sent.
import type { MiddlewareHandler } from "hono";
import { requestContext, type RequestInfo } from "./request-context";

/** A client-supplied request id is kept when it is short and plain; otherwise a new UUID. */
const CLIENT_ID_RE = /^[A-Za-z0-9._:-]{8,128}$/;
/** Path with query as logged: bounded so one line stays small. */
const MAX_LOGGED_PATH = 2048;
/**
 * Bodies timed to their last byte: a declared length of at least this (blobs, large manifests:
 * lengths from stored sizes), or an undeclared length on a streaming type (exports, live tails).
 * Smaller bodies are one write, so "ready" is their last byte; and some small answers declare a
 * Content-Length their body does not have (upload progress headers say 0 on a JSON error body),
 * which a fixed-length pipe would refuse.
 */
const TIMED_MIN_BYTES = 64 * 1024;
const STREAMING_TYPES = /^(text\/event-stream|application\/x-ndjson)/i;

export function requestLog(): MiddlewareHandler<any> {
  return async (c, next) => {
    const incoming = c.req.header("X-Request-Id");
    const info: RequestInfo = {
      requestId: incoming && CLIENT_ID_RE.test(incoming) ? incoming : crypto.randomUUID(),
      startedAt: Date.now(),
      c,
      note: {},
    };
    await requestContext.run(info, () => next());
    c.res.headers.set("X-Request-Id", info.requestId);

    // REQUEST_LOG=off (the workerd test suites) keeps the request id but writes no line.
    if (String((c.env as { REQUEST_LOG?: string } | undefined)?.REQUEST_LOG ?? "on").toLowerCase() === "off") return;
    const res = c.res;
    if (c.req.method === "HEAD" || !res.body) return emit(info, res.status, 0);
    const declared = res.headers.get("Content-Length");
    const length = declared && /^\d{1,15}$/.test(declared) ? Number(declared) : null;
    if (length === null ? !STREAMING_TYPES.test(res.headers.get("Content-Type") ?? "") : length < TIMED_MIN_BYTES) return emit(info, res.status, length);
    c.res = timedToLastByte(res, length, (bytesOut, error) => emit(info, res.status, bytesOut, error));
  };
}

/**
 * The same response, its body passed through a stream whose end writes the log line: duration
 * to the last byte sent (or to the client going away), and the bytes actually sent. A body of
 * declared length goes through a native FixedLengthStream (no JavaScript per chunk, the length
 * stays known so no chunked encoding); a body of unknown length (exports, live tails) is counted
 * by a small TransformStream. The pipe is not in waitUntil: it ends when the body is read or
 * cancelled, and a response nobody reads must not hold its request open.
 */
function timedToLastByte(res: Response, length: number | null, done: (bytesOut: number | null, error?: string) => void): Response {
  let counted = 0;
  let cancelled: unknown = null;
  const through: ReadableWritablePair<Uint8Array, Uint8Array> =
    length !== null
      ? new FixedLengthStream(length)
      : new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, ctl) {
            counted += chunk.byteLength;
            ctl.enqueue(chunk);
          },
          // The client went away: the pipe may still resolve, so remember it here.
          cancel(reason) {
            cancelled = reason ?? "cancelled";
          },
        } as Transformer<Uint8Array, Uint8Array>);
  const notSent = (e: unknown) => `body not sent to the end: ${String((e as Error)?.message ?? e).slice(0, 200)}`;
  res.body!.pipeTo(through.writable).then(
    () => (cancelled === null ? done(length ?? counted) : done(counted, notSent(cancelled))),
    (e: unknown) => done(length === null ? counted : null, notSent(e)),
  );
  return new Response(through.readable, { status: res.status, statusText: res.statusText, headers: res.headers });
}

function emit(info: RequestInfo, status: number, bytesOut: number | null, error?: string) {
  const c = info.c;
  const url = new URL(c.req.url);
  const route = (c.var as { route?: { name?: string; digest?: string; reference?: string } }).route;
  const declaredIn = c.req.header("Content-Length");
  const principal = (c.var as { principal?: { id: string } }).principal;
  const reference = route?.reference;
  const line = {
    type: "request",
    requestId: info.requestId,
    method: c.req.method,
    path: (url.pathname + url.search).slice(0, MAX_LOGGED_PATH),
    status,
    bytesIn: info.note.bytesIn ?? (declaredIn && /^\d+$/.test(declaredIn) ? Number(declaredIn) : 0),
    bytesOut,
    durationMs: Date.now() - info.startedAt,
    principal: principal?.id ?? null,
    repository: info.note.repository ?? route?.name ?? null,
    digest: info.note.digest ?? route?.digest ?? (reference && reference.includes(":") ? reference : null),
    ...(error ? { error } : {}),
  };
  console.log(JSON.stringify(line));
}
