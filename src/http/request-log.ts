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
    if ((c.res.headers.get("Content-Type") ?? "").startsWith("text/event-stream")) {
      // A live tail lasts minutes: logged when it starts, and not wrapped, so a client's
      // disconnect reaches the stream's own abort handling directly.
      emit(info, c.res.status, null, undefined, "stream started");
      return;
    }
    // A lazy pass-through: it reads the body only when the runtime pulls the next chunk, so a
    // body nobody reads leaves nothing pending (a background pipe kept such requests open), and
    // the line is written when the last chunk has been handed over, or when the client left.
    const reader = body.getReader();
    let sent = 0;
    const counted = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            ctl.close();
            emit(info, c.res.status, sent);
            return;
          }
          sent += value.byteLength;
          ctl.enqueue(value);
        } catch (e) {
          emit(info, c.res.status, sent, `body failed: ${String(e).slice(0, 200)}`);
          ctl.error(e);
        }
      },
      cancel(reason) {
        emit(info, c.res.status, sent, "client went away before the last byte");
        return reader.cancel(reason);
      },
    });
    c.res = new Response(counted, c.res);
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
