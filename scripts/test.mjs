#!/usr/bin/env node
// `npm test`: the typecheck (`npm run typecheck`: Worker + workerd tests, vitest configs, e2e),
// unit/integration tests in workerd (vitest.config.ts), then end-to-end tests with real clients
// against `wrangler dev` (vitest.e2e.config.ts). Every step always runs; the exit code is non-zero
// if any fails, and under CI=true also if any test was skipped (a missing client must never turn
// into a green run).
//
//   npm test                      typecheck and both suites
//   npm test -- --unit            only the workerd suite       (--e2e: only the e2e suite)
//   npm test -- --no-typecheck    leave out the typecheck
//   npm test -- <vitest args>     extra args go to both vitest runs (e.g. -t "pattern", a file filter)
//   E2E_TARGET=distribution npm test -- --e2e   run the e2e suite against docker-registry
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const vitest = join(dirname(require.resolve("vitest/package.json")), "vitest.mjs");
const tsc = join(dirname(require.resolve("typescript/package.json")), "bin", "tsc");
/** The programs `npm run typecheck` checks (package.json), one tsconfig each. */
const TSCONFIGS = ["tsconfig.json", "tsconfig.node.json", "test/e2e/tsconfig.json"];

const env = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_HIDE_BANNER: "true",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};

let args = process.argv.slice(2);
const only = args.includes("--unit") ? "unit" : args.includes("--e2e") ? "e2e" : null;
const typecheck = !args.includes("--no-typecheck");
args = args.filter((a) => a !== "--unit" && a !== "--e2e" && a !== "--no-typecheck");

function runNode(script, argv, label) {
  return new Promise((resolve) => {
    const started = Date.now();
    console.log(`\n=== ${label} ===`);
    const child = spawn(process.execPath, [script, ...argv], { cwd: root, env, stdio: "inherit" });
    const forward = (sig) => child.kill(sig);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.on("exit", (code, signal) => {
      process.off("SIGINT", forward);
      process.off("SIGTERM", forward);
      resolve({ label, code: code ?? 1, signal, secs: ((Date.now() - started) / 1000).toFixed(1) });
    });
    child.on("error", (e) => {
      console.error(`${label}: ${e.message}`);
      resolve({ label, code: 1, signal: null, secs: "0" });
    });
  });
}

const extract = await runNode(join(root, "scripts/extract-wasm.mjs"), [], "extract-wasm");
if (extract.code !== 0) process.exit(extract.code);

const results = [];
if (typecheck) {
  for (const project of TSCONFIGS) results.push(await runNode(tsc, ["--noEmit", "-p", project], `typecheck (tsc -p ${project})`));
}

// Each run also writes a JSON report, so the summary can count tests across both suites.
const reportDir = mkdtempSync(join(tmpdir(), "cloister-test-"));
const reporters = (name) => ["--reporter=default", "--reporter=json", `--outputFile.json=${join(reportDir, name + ".json")}`];
if (only !== "e2e") results.push(await runNode(vitest, ["run", ...reporters("unit"), ...args], "unit + integration (workerd, vitest.config.ts)"));
if (only !== "e2e") results.push(await runNode(vitest, ["run", "--config", "vitest.auth.config.ts", ...reporters("auth"), ...args], "conformance with token auth (workerd, vitest.auth.config.ts)"));
if (only !== "unit") results.push(await runNode(vitest, ["run", "--config", "vitest.e2e.config.ts", ...reporters("e2e"), ...args], "end-to-end (real clients, vitest.e2e.config.ts)"));

let passed = 0, failed = 0, skipped = 0;
for (const name of ["unit", "auth", "e2e"]) {
  try {
    const j = JSON.parse(readFileSync(join(reportDir, name + ".json"), "utf8"));
    passed += j.numPassedTests ?? 0;
    failed += (j.numFailedTests ?? 0) + (j.numRuntimeErrorTestSuites ?? 0);
    skipped += (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0);
  } catch {
    // that suite did not run or crashed before reporting; its exit code says so
  }
}
rmSync(reportDir, { recursive: true, force: true });
const crashed = results.filter((r) => r.code !== 0 && !r.label.startsWith("typecheck")).length;
if (crashed && failed === 0) failed = crashed; // a suite failed without a countable test failure

console.log("\n=== summary ===");
for (const r of results) console.log(`${r.code === 0 ? "PASS" : "FAIL"}  ${r.label}  (${r.secs}s${r.signal ? `, ${r.signal}` : ""})`);
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
// A -t filter marks the tests it leaves out as skipped; only whole runs are held to the CI rule.
const filtered = args.some((a) => a === "-t" || a.startsWith("--testNamePattern"));
const ci = !!process.env.CI && !/^(0|false)$/i.test(process.env.CI) && !filtered;
if (ci && skipped > 0) console.log(`FAIL  CI=true and ${skipped} test(s) skipped: every test must run in CI (skips come from a missing client, test.skip or a failed beforeAll)`);
process.exit(results.some((r) => r.code !== 0) || (ci && skipped > 0) ? 1 : 0);
