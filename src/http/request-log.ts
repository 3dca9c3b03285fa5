// X-Request-Id and the structured request log: one JSON line per request (console.log, which
// Workers Logs and Logpush index as fields), written when the response body's LAST byte has
// been handed to the runtime, not when its headers were ready.
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

    const declaredOut = c.res.headers.get("Content-Length");
    const body = c.res.body;
    if (!body || c.req.method === "HEAD") {
      emit(info, c.res.status, declaredOut && c.req.method !== "HEAD" ? Number(declaredOut) : 0);
      return;
    }
    // Known length: a native identity stream (no JS per chunk; blob GETs stay fast) and the
    // declared length once the pipe completes. Unknown length (JSON lists, streams): count.
    let counted = 0;
    const pass =
      declaredOut !== null
        ? new IdentityTransformStream()
        : new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, ctl) {
              counted += chunk.byteLength;
              ctl.enqueue(chunk);
            },
          });
    const done = body
      .pipeTo(pass.writable as WritableStream<Uint8Array>)
      .then(
        () => emit(info, c.res.status, declaredOut !== null ? Number(declaredOut) : counted),
        () => emit(info, c.res.status, declaredOut !== null ? null : counted, "client went away before the last byte"),
      );
    // Not waitUntil: the request lives while its body streams, and a body nobody reads (a test
    // that ignores it) must not hold the request open; an aborted client ends the pipe too.
    void done;
    c.res = new Response(pass.readable, c.res);
  };
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
