// The current request, reachable from any code that runs for it (domain layer, error envelope)
// without threading a context argument through every call: AsyncLocalStorage (nodejs_als flag).
import { AsyncLocalStorage } from "node:async_hooks";
import type { Context } from "hono";

export interface RequestInfo {
  requestId: string;
  startedAt: number;
  /** The Hono context, for the principal and client address at the time of an event. */
  c: Context<any>;
  /** Facts the domain adds for the request log line (bytes received on chunked bodies, digest). */
  note: { bytesIn?: number; repository?: string; digest?: string };
}

export const requestContext = new AsyncLocalStorage<RequestInfo>();

export function currentRequest(): RequestInfo | undefined {
  return requestContext.getStore();
}

/** Add facts to this request's log line (no-op outside a request). */
export function annotateRequest(note: RequestInfo["note"]): void {
  const r = requestContext.getStore();
  if (r) Object.assign(r.note, note);
}
