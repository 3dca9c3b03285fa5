// X-Request-Id and the structured request log: one JSON line per request (console.log, which
// Workers Logs and Logpush index as fields), written when the response is ready.
import type { MiddlewareHandler } from "hono";
import { requestContext, type RequestInfo } from "./request-context";

/** A client-supplied request id is kept when it is short and plain; otherwise a new UUID. */
const CLIENT_ID_RE = /^[A-Za-z0-9._:-]{8,128}$/;
/** Path with query as logged: bounded so one line stays small. */
const MAX_LOGGED_PATH = 2048;

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

    // Logged when the response is ready: for uploads that is after the whole request body was
    // consumed and stored. Timing to the last byte of a response body needs a body wrapper; both
    // tried (a pipe, a lazy pull-through) left cancelled or unread responses pending in workerd
    // (test files never finished), so it is not done yet (docs/audit.md).
    // REQUEST_LOG=off (the workerd test suites) keeps the request id but writes no line.
    if (String((c.env as { REQUEST_LOG?: string } | undefined)?.REQUEST_LOG ?? "on").toLowerCase() === "off") return;
    const declaredOut = c.res.headers.get("Content-Length");
    const sse = (c.res.headers.get("Content-Type") ?? "").startsWith("text/event-stream");
    emit(info, c.res.status, c.req.method === "HEAD" || !c.res.body ? 0 : declaredOut && /^\d+$/.test(declaredOut) ? Number(declaredOut) : null, undefined, sse ? "stream started" : undefined);
  };
}

function emit(info: RequestInfo, status: number, bytesOut: number | null, error?: string, note?: string) {
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
    ...(note ? { note } : {}),
  };
  console.log(JSON.stringify(line));
}
