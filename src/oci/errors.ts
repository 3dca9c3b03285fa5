// OCI Distribution error envelope and the spec's error codes.
// Every non-2xx /v2 response is built here so status, code and body shape stay consistent.
import { currentRequest } from "../http/request-context";

export const ErrorCodes = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 415,
  TOOMANYREQUESTS: 429,
  PAGINATION_INVALID: 400,
  RANGE_INVALID: 416,
  TOO_LARGE: 413,
  METHOD_UNKNOWN: 405,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** Wire code: a few internal codes map onto the spec's names. */
const wireCode: Partial<Record<ErrorCode, string>> = {
  RANGE_INVALID: "BLOB_UPLOAD_INVALID",
  PAGINATION_INVALID: "UNSUPPORTED",
  TOO_LARGE: "SIZE_INVALID",
  METHOD_UNKNOWN: "UNSUPPORTED",
  INTERNAL: "UNKNOWN",
};

export class OciError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    status?: number,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.status = status ?? ErrorCodes[code];
  }

  toResponse(extraHeaders: Record<string, string> = {}): Response {
    const body = JSON.stringify({
      errors: [{ code: wireCode[this.code] ?? this.code, message: this.message, detail: withRequestId(this.detail) }],
    });
    return new Response(body, {
      status: this.status,
      headers: {
        "Content-Type": "application/json; charset=utf-8",
        ...this.headers,
        ...extraHeaders,
      },
    });
  }
}

/**
 * The request id joins the detail so a user's pasted error finds its log line and audit event.
 * Array details (distribution's access records on 401) stay as they are; X-Request-Id has it.
 */
export function withRequestId(detail: unknown): unknown {
  const id = currentRequest()?.requestId;
  if (!id || Array.isArray(detail)) return detail ?? null;
  if (detail === undefined || detail === null) return { requestId: id };
  if (typeof detail === "object") return { ...(detail as object), requestId: id };
  return { value: detail, requestId: id };
}

export const oci = (code: ErrorCode, message: string, detail?: unknown, status?: number, headers?: Record<string, string>) =>
  new OciError(code, message, detail, status, headers);

/**
 * A Durable Object call that failed in the platform rather than in our code: the object was reset
 * (`durableObjectReset`, e.g. a blockConcurrencyWhile that waited too long under load; its
 * unconfirmed writes are rolled back), is overloaded, or the call is marked retryable. Every
 * registry write is idempotent to repeat, so the client is told to retry (503 with Retry-After)
 * instead of getting a 500.
 * https://developers.cloudflare.com/durable-objects/best-practices/error-handling/
 */
export function storeUnavailable(err: unknown): OciError | null {
  if (!(err instanceof Error)) return null;
  const e = err as Error & { overloaded?: boolean; retryable?: boolean; durableObjectReset?: boolean };
  if (!e.overloaded && !e.retryable && !e.durableObjectReset) return null;
  const why = e.overloaded ? "is overloaded" : e.durableObjectReset ? "was reset" : "failed transiently";
  // Overload: back off longer, retrying at once adds to the load.
  const retryAfter = e.overloaded ? "10" : "1";
  return oci("INTERNAL", `an index object of this registry ${why} and the request did not complete; retry it`, { retryAfter: Number(retryAfter) }, 503, { "Retry-After": retryAfter });
}
