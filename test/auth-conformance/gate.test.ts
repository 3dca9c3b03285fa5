// Runs only under vitest.auth.config.ts: proves the conformance run goes through the auth gate.
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

describe("conformance with credentials: the gate is on", () => {
  it("refuses anonymous requests and admits the suite's credentials", async () => {
    const anon = await exports.default.fetch(new Request("http://registry.test/v2/"));
    expect(anon.status).toBe(401);
    expect(anon.headers.get("WWW-Authenticate")).toMatch(/^Bearer realm=/);
    const creds = (env as unknown as { TEST_CREDENTIALS: string }).TEST_CREDENTIALS;
    const ok = await exports.default.fetch(new Request("http://registry.test/v2/", { headers: { Authorization: "Basic " + btoa(creds) } }));
    expect(ok.status).toBe(200);
    const wrong = await exports.default.fetch(new Request("http://registry.test/v2/any/repo/tags/list", { headers: { Authorization: "Basic " + btoa("admin:wrong") } }));
    expect(wrong.status).toBe(401);
  });
});
