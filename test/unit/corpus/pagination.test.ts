// `last` is bounded (issue 9): a client-sized cursor used to reach SQLite and come back as a 500
// (SQLITE_TOOBIG over 2 MB). Found by the bad-input corpus.
import { describe, expect, it } from "vitest";
import { expectError, makeImage, putManifest, req } from "../helpers";
import { MAX_CURSOR_CHARS } from "../../../src/oci/pagination";

describe("pagination cursor limit", () => {
  it("refuses a `last` over MAX_CURSOR_CHARS with 400 naming the limit, on tags, catalog and referrers", async () => {
    const img = await makeImage("pg/app", { seed: 31 });
    expect((await putManifest("pg/app", "v1", img.manifest)).status).toBe(201);
    const routes = ["/v2/pg/app/tags/list", "/v2/_catalog", `/v2/pg/app/referrers/${img.digest}`];
    for (const route of routes) {
      for (const len of [MAX_CURSOR_CHARS + 1, 3 * 1024 * 1024]) {
        const msg = await expectError(req(`${route}?last=${"l".repeat(len)}`), 400, "UNSUPPORTED");
        expect(msg).toContain(String(MAX_CURSOR_CHARS));
        expect(msg.length).toBeLessThan(300);
      }
      const ok = await req(`${route}?last=${"l".repeat(MAX_CURSOR_CHARS)}`);
      expect(ok.status, route).toBe(200);
    }
  });

  it("still refuses a malformed n with 400", async () => {
    await expectError(req("/v2/_catalog?n=-1"), 400, "UNSUPPORTED");
  });
});
