// A Durable Object call that fails in the platform (reset, overload) answers 503 + Retry-After,
// never a 500 (docs/limits.md). The reset error here is a real one: the object aborts itself.
import { env, runInDurableObject } from "cloudflare:test";
import { describe, it, expect } from "vitest";
import { trustStoreFor } from "../../src/stores";
import { storeUnavailable } from "../../src/oci/errors";
import type { Env } from "../../src/env";

describe("index objects that fail in the platform", () => {
  it("a reset object's error becomes 503 with Retry-After and an OCI body", async () => {
    const trust = trustStoreFor(env as unknown as Env, `unavailable/${crypto.randomUUID()}`);
    const err = await runInDurableObject(trust, (_i: unknown, s: DurableObjectState) => { s.abort("simulated reset"); }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    const mapped = storeUnavailable(err);
    expect(mapped).not.toBeNull();
    const res = mapped!.toResponse();
    expect(res.status).toBe(503);
    expect(res.headers.get("Retry-After")).toBe("1");
    const body = (await res.json()) as { errors: { code: string; message: string }[] };
    expect(body.errors[0].code).toBe("UNKNOWN");
    expect(body.errors[0].message).toContain("was reset");
  });

  it("an overloaded object asks for a longer back-off; an ordinary error is not mapped", () => {
    const overloaded = Object.assign(new Error("Durable Object is overloaded. Too many requests queued."), { overloaded: true });
    expect(storeUnavailable(overloaded)!.toResponse().headers.get("Retry-After")).toBe("10");
    expect(storeUnavailable(new Error("a bug"))).toBeNull();
    expect(storeUnavailable("not an error")).toBeNull();
  });
});
