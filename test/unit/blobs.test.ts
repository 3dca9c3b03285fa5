import { describe, expect, it } from "vitest";
import { bytes, expectError, pushBlob, req, reqWith } from "./helpers";

describe("GET/HEAD /v2/<name>/blobs/<digest>", () => {
  it("GET /v2/ answers 200 with the API version header", async () => {
    const res = await req("/v2/");
    expect(res.status).toBe(200);
    expect(res.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
  });

  it("HEAD and GET carry length, digest, ranges, ETag and an octet-stream type", async () => {
    const data = bytes(1000, 1);
    const digest = await pushBlob("bl/a", data);
    for (const method of ["HEAD", "GET"]) {
      const res = await req(`/v2/bl/a/blobs/${digest}`, { method });
      expect(res.status).toBe(200);
      expect(res.headers.get("Content-Length")).toBe("1000");
      expect(res.headers.get("Docker-Content-Digest")).toBe(digest);
      expect(res.headers.get("Accept-Ranges")).toBe("bytes");
      expect(res.headers.get("ETag")).toBe(`"${digest}"`);
      expect(res.headers.get("Content-Type")).toBe("application/octet-stream");
      if (method === "GET") expect(new Uint8Array(await res.arrayBuffer())).toEqual(data);
    }
  });

  it("serves single byte ranges with 206 and Content-Range", async () => {
    const data = bytes(1000, 2);
    const digest = await pushBlob("bl/range", data);
    const cases: [string, number, number][] = [["bytes=0-9", 0, 9], ["bytes=990-", 990, 999], ["bytes=-5", 995, 999], ["bytes=500-5000", 500, 999]];
    for (const [range, start, end] of cases) {
      const res = await req(`/v2/bl/range/blobs/${digest}`, { headers: { Range: range } });
      expect(res.status).toBe(206);
      expect(res.headers.get("Content-Range")).toBe(`bytes ${start}-${end}/1000`);
      expect(res.headers.get("Content-Length")).toBe(String(end - start + 1));
      expect(new Uint8Array(await res.arrayBuffer())).toEqual(data.subarray(start, end + 1));
    }
  });

  it("answers unsatisfiable or malformed ranges with 416 and Content-Range */size", async () => {
    const digest = await pushBlob("bl/range2", bytes(100, 3));
    for (const range of ["bytes=100-", "bytes=200-300", "bytes=50-10", "bytes=x-y", "bytes=-0"]) {
      const res = await req(`/v2/bl/range2/blobs/${digest}`, { headers: { Range: range } });
      expect(res.status, range).toBe(416);
      expect(res.headers.get("Content-Range")).toBe("bytes */100");
      expect((await res.json() as { errors: unknown[] }).errors.length).toBe(1);
    }
  });

  it("ignores multiple ranges and serves the whole blob", async () => {
    const digest = await pushBlob("bl/range3", bytes(100, 4));
    const res = await req(`/v2/bl/range3/blobs/${digest}`, { headers: { Range: "bytes=0-1,5-6" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Length")).toBe("100");
  });

  it("answers If-None-Match with 304", async () => {
    const digest = await pushBlob("bl/etag", bytes(10, 5));
    const res = await req(`/v2/bl/etag/blobs/${digest}`, { headers: { "If-None-Match": `"${digest}"` } });
    expect(res.status).toBe(304);
  });

  it("404 BLOB_UNKNOWN for unknown blobs, 400 for invalid digests and names", async () => {
    const unknown = "sha256:" + "0".repeat(64);
    await expectError(req(`/v2/bl/a/blobs/${unknown}`), 404, "BLOB_UNKNOWN");
    expect((await req(`/v2/bl/a/blobs/${unknown}`, { method: "HEAD" })).status).toBe(404);
    await expectError(req(`/v2/bl/a/blobs/sha256:xyz`), 400, "DIGEST_INVALID");
    await expectError(req(`/v2/bl/a/blobs/md5:${"0".repeat(32)}`), 400, "DIGEST_INVALID");
    await expectError(req(`/v2/BL/a/blobs/${unknown}`), 400, "NAME_INVALID");
  });

  it("405 with Allow for unsupported methods", async () => {
    const res = await req(`/v2/bl/a/blobs/sha256:${"0".repeat(64)}`, { method: "POST" });
    expect(res.status).toBe(405);
    expect(res.headers.get("Allow")).toContain("GET");
  });
});

describe("DELETE /v2/<name>/blobs/<digest>", () => {
  it("unlinks the blob from one repository only", async () => {
    const data = bytes(300, 6);
    const digest = await pushBlob("bl/del1", data);
    await pushBlob("bl/del2", data);
    const res = await req(`/v2/bl/del1/blobs/${digest}`, { method: "DELETE" });
    expect(res.status).toBe(202);
    await expectError(req(`/v2/bl/del1/blobs/${digest}`), 404, "BLOB_UNKNOWN");
    const other = await req(`/v2/bl/del2/blobs/${digest}`);
    expect(other.status).toBe(200);
    expect(new Uint8Array(await other.arrayBuffer())).toEqual(data);
    await expectError(req(`/v2/bl/del1/blobs/${digest}`, { method: "DELETE" }), 404, "BLOB_UNKNOWN");
  });

  it("is refused with 405 UNSUPPORTED when deletes are disabled", async () => {
    const digest = await pushBlob("bl/nodel", bytes(30, 7));
    const res = await reqWith({ DELETE_ENABLED: "false" }, `/v2/bl/nodel/blobs/${digest}`, { method: "DELETE" });
    expect(res.status).toBe(405);
    expect((await res.json() as { errors: { code: string }[] }).errors[0].code).toBe("UNSUPPORTED");
    expect((await req(`/v2/bl/nodel/blobs/${digest}`)).status).toBe(200);
  });
});
