#!/usr/bin/env node
// Extracts the compiled WebAssembly hashers that hash-wasm ships (base64 inside its ESM bundle)
// into src/digest/wasm/*.wasm. Workers forbid compiling WASM from bytes at run time, so the
// binaries must be imported as modules; hash-wasm's JS loader cannot be used there as-is.
// Runs on `npm install` (prepare) and before start/test/bench; idempotent.
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bundle = readFileSync(join(dirname(require.resolve("hash-wasm/package.json")), "dist/index.esm.js"), "utf8");
const outDir = join(root, "src/digest/wasm");
mkdirSync(outDir, { recursive: true });

for (const algo of ["sha256", "sha512", "blake3"]) {
  const m = new RegExp(`var name\\$(\\w*) = "${algo}";\\s*var data\\$\\1 = "([A-Za-z0-9+/=]+)";\\s*var hash\\$\\1 = "([0-9a-f]+)"`).exec(bundle);
  if (!m) throw new Error(`hash-wasm bundle has no ${algo} binary; was hash-wasm upgraded?`);
  const bytes = Buffer.from(m[2], "base64");
  const file = join(outDir, `${algo}.wasm`);
  if (existsSync(file) && Buffer.compare(readFileSync(file), bytes) === 0) continue;
  writeFileSync(file, bytes);
  console.log(`extract-wasm: wrote ${algo}.wasm (${bytes.length} bytes, hash-wasm id ${m[3]})`);
}
