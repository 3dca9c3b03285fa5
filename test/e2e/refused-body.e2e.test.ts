// A request refused part-way through its body must not hurt the next one. Under `wrangler dev`,
// a chunked PATCH refused mid-body (413 past MAX_BODY_BYTES, or 400 for a body longer than its
// Content-Range) left the rest of its body unread, and the next request on the server stalled
// until yet another request arrived (seen as `GET /v2/ 200 OK (30014ms)`). The Worker now drains
// a refused request's half-read body before answering (src/storage/ingest.ts drainRefusedBody).
// curl sends the body chunked, as docker does.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { needClients, run } from "./helpers/exec";

const CAP = 2_000_000;
/** Generous: a healthy answer takes milliseconds; the stall lasted 30 s and more. */
const PROMPT_MS = 5000;
let reg: RunningRegistry;
let dir: string;
let big: string;
const clients = needClients("refused-body.e2e", ["curl"]);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  dir = mkdtempSync(join(tmpdir(), "cloister-e2e-refused-"));
  big = join(dir, "3mb.bin");
  writeFileSync(big, randomBytes(3_000_000));
  // Plain HTTP, as `npm start` serves it behind its front.
  reg = await startRegistry({ https: false, vars: { MAX_BODY_BYTES: String(CAP) } });
});

afterAll(async () => {
  await reg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Curl {
  status: number;
  ms: number;
  body: string;
}

/** curl with a hard timeout well past PROMPT_MS, so a stall shows as a slow answer, not a hang. */
async function curl(args: string[]): Promise<Curl> {
  const out = join(dir, "body.out");
  const r = await run("curl", ["-s", "-o", out, "-w", "%{http_code} %{time_total}", "--max-time", "40", "-H", "Expect:", ...args], { allowFail: true, timeoutMs: 60_000 });
  const [code, secs] = r.stdout.trim().split(" ");
  let body = "";
  try {
    body = readFileSync(out, "utf8");
    rmSync(out);
  } catch {}
  return { status: Number(code), ms: Math.round(Number(secs) * 1000), body };
}

async function startUpload(): Promise<string> {
  const res = await run("curl", ["-s", "-D", "-", "-o", "/dev/null", "-X", "POST", `${reg.url}/v2/e2e/refused/blobs/uploads/`]);
  const loc = /^location:\s*(\S+)/im.exec(res.stdout)?.[1];
  expect(res.stdout, "POST …/uploads/").toMatch(/^HTTP\/1\.1 202/);
  expect(loc, res.stdout).toBeTruthy();
  return `${reg.url}${loc}`;
}

function chunkedPatch(location: string, extra: string[] = []): Promise<Curl> {
  return curl(["-X", "PATCH", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream", ...extra, "--data-binary", `@${big}`, location]);
}

async function expectPrompt(what: string) {
  const next = await curl([`${reg.url}/v2/`]);
  const logs = next.ms < PROMPT_MS ? "" : `\n--- registry log tail ---\n${reg.logs().slice(-3000)}`;
  expect(next.status, `${what}: GET /v2/${logs}`).toBe(200);
  expect(next.ms, `${what}: GET /v2/ took ${next.ms} ms${logs}`).toBeLessThan(PROMPT_MS);
}

describe.skipIf(clients.skip)("a refused chunked PATCH leaves the server answering promptly", () => {
  test("413 past MAX_BODY_BYTES, three times in a row; each next request answers at once", async () => {
    for (let i = 1; i <= 3; i++) {
      const loc = await startUpload();
      const r = await chunkedPatch(loc);
      expect(r.status, r.body).toBe(413);
      expect(JSON.parse(r.body).errors[0].code).toBe("SIZE_INVALID");
      await expectPrompt(`after refused PATCH #${i}`);
      // the upload is still usable at offset 0
      const st = await run("curl", ["-s", "-D", "-", "-o", "/dev/null", loc]);
      expect(st.stdout).toMatch(/^range:\s*0-0\s*$/im);
    }
  });

  test("400 for a chunked body longer than its Content-Range; the next request answers at once", async () => {
    const loc = await startUpload();
    const r = await chunkedPatch(loc, ["-H", "Content-Range: 0-999"]);
    expect(r.status, r.body).toBe(400);
    expect(JSON.parse(r.body).errors[0].message).toMatch(/Content-Range/);
    await expectPrompt("after the refused Content-Range PATCH");
  });
});
