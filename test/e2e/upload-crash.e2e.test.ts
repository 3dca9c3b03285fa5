// Crash-safe upload leases (issue 9 defect 6): kill the registry mid-PATCH, restart it on the
// same state, and resume the upload from GET's Range. The dead request's write lease must
// lapse within UPLOAD_LEASE_SECONDS (default 20 s); until then a PATCH gets a retryable 503 with
// Retry-After, never 416, and the finished blob has the right digest.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { request, describe as show, type Resp } from "./helpers/http";
import { writeDeterministicFile, MiB, type DataFile } from "./helpers/data";
import { crashRegistry } from "./helpers/crash";

const REPO = "e2e/crash";
/** The default lease (wrangler.toml / src/env.ts): the bound this test holds the registry to. */
const LEASE_SECONDS = 20;

let dir: string;
let persist: string;
let file: DataFile;
const regs: RunningRegistry[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "cloister-e2e-crash-"));
  persist = join(dir, "state");
  file = await writeDeterministicFile(join(dir, "blob"), 24 * MiB + 123, "upload-crash");
});

afterAll(async () => {
  for (const r of regs) await r.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function expectStatus(r: Resp, status: number, what: string, reg: RunningRegistry) {
  const logs = r.status === status ? "" : `\n--- registry log tail ---\n${reg.logs().slice(-3000)}`;
  expect(r.status, `${what}: ${show(r)}${logs}`).toBe(status);
}

/** A body that trickles `data` in 64 KiB pieces every 50 ms (~1.3 MB/s) and never ends on its own. */
function trickle(data: Buffer): Readable {
  let off = 0;
  return new Readable({
    read() {
      if (off >= data.length) return; // stay open: the registry dies before the end
      const piece = data.subarray(off, off + 64 * 1024);
      off += piece.length;
      setTimeout(() => this.push(piece), 50);
    },
  });
}

describe("a registry killed mid-PATCH", () => {
  test("restarts on the same state; the upload resumes from GET's Range within the lease time and the blob is intact", async () => {
    const bytes = readFileSync(file.path);
    const first = 6 * MiB;

    const reg1 = await startRegistry({ persistDir: persist, https: false });
    regs.push(reg1);
    const post = await request(reg1, "POST", `/v2/${REPO}/blobs/uploads/`);
    expectStatus(post, 202, "POST upload", reg1);
    const path = new URL(post.headers.location!, reg1.url).pathname;

    const p1 = await request(reg1, "PATCH", path, {
      headers: { "Content-Type": "application/octet-stream", "Content-Range": `0-${first - 1}` },
      body: bytes.subarray(0, first),
    });
    expectStatus(p1, 202, "first PATCH", reg1);
    expect(p1.headers.range).toBe(`0-${first - 1}`);

    // A streamed PATCH (no length, as docker sends a layer) that is still running when the
    // registry dies: its lease is held, and nothing it sent is committed.
    const dying = request(reg1, "PATCH", path, { headers: { "Content-Type": "application/octet-stream" }, body: trickle(bytes.subarray(first)) })
      .then((r) => ({ status: r.status, error: null as string | null }), (e: Error) => ({ status: 0, error: e.message }));
    await new Promise((r) => setTimeout(r, 3000));
    const killedAt = Date.now();
    await crashRegistry(reg1);
    const outcome = await dying;
    expect(outcome.status, `the streaming PATCH must not have completed (${outcome.error})`).toBe(0);

    const reg2 = await startRegistry({ persistDir: persist, https: false });
    regs.push(reg2);
    const restartedAt = Date.now();

    const st = await request(reg2, "GET", path);
    expectStatus(st, 204, "GET upload after restart", reg2);
    expect(st.headers.range, "the killed PATCH committed nothing").toBe(`0-${first - 1}`);
    const offset = Number(String(st.headers.range).split("-")[1]) + 1;

    // Resume from GET's offset until accepted; everything before must be a retryable 503.
    const refusals: { status: number; retryAfter: number; message: string }[] = [];
    let accepted: Resp | null = null;
    while (Date.now() - killedAt < 60_000) {
      const r = await request(reg2, "PATCH", path, {
        headers: { "Content-Type": "application/octet-stream", "Content-Range": `${offset}-${bytes.length - 1}` },
        body: bytes.subarray(offset),
      });
      if (r.status === 202) {
        accepted = r;
        break;
      }
      expect(r.status, `a PATCH against a dead writer's lease: ${show(r)}`).toBe(503);
      const retryAfter = Number(r.headers["retry-after"]);
      expect(retryAfter, "Retry-After on 503").toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(LEASE_SECONDS);
      expect(r.headers.range, "Range on 503").toBe(`0-${offset - 1}`);
      refusals.push({ status: r.status, retryAfter, message: r.json().errors[0].message });
      await new Promise((res) => setTimeout(res, 500)); // poll finer than Retry-After, to measure the lapse
    }
    const acceptedAt = Date.now();
    expect(accepted, "the resumed PATCH was never accepted").not.toBeNull();
    expect(accepted!.headers.range).toBe(`0-${bytes.length - 1}`);
    const sinceKill = (acceptedAt - killedAt) / 1000;
    console.log(
      `[upload-crash] lease ${LEASE_SECONDS} s: restart took ${((restartedAt - killedAt) / 1000).toFixed(1)} s; ` +
        `resumed PATCH accepted ${sinceKill.toFixed(1)} s after the kill (${((acceptedAt - restartedAt) / 1000).toFixed(1)} s after restart); ` +
        `${refusals.length} refusals, first Retry-After ${refusals[0]?.retryAfter ?? "-"} s; message: ${refusals[0]?.message ?? "-"}`,
    );
    expect(sinceKill, "the dead writer's lease lapses within the lease time (plus polling)").toBeLessThan(LEASE_SECONDS + 5);
    expect(sinceKill).toBeLessThan(30);

    const put = await request(reg2, "PUT", `${path}?digest=${file.digest}`, { headers: { "Content-Type": "application/octet-stream" } });
    expectStatus(put, 201, "PUT close", reg2);
    const got = await request(reg2, "GET", `/v2/${REPO}/blobs/${file.digest}`, { discardBody: true });
    expectStatus(got, 200, "GET blob", reg2);
    expect(got.size).toBe(file.size);
    expect(`sha256:${got.sha256}`).toBe(file.digest);
  });
});
