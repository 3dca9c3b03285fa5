#!/usr/bin/env node
// cloister-cache: the old name of `cloister cache` (build-cache/v1 push/fetch), kept as an alias.
import { runCache } from "./cli/transfer/cache.mjs";

runCache(process.argv.slice(2), "cloister-cache").then((code) => (process.exitCode = code));
