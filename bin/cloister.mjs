#!/usr/bin/env node
// cloister: the registry's command-line tool. Image transfer (copy/push/pull, chunked for
// deployments behind Cloudflare's 100 MB request cap), build cache, and the operator commands.
// Each group lives in bin/cli/<group>.mjs and exports register(program); this file only wires them.
// Argument parsing: commander (well-kept, no dependencies, subcommands + help + completion hooks).
import { Command } from "commander";
import { register as registerImages } from "./cli/images.mjs";
import { register as registerOps } from "./cli/ops.mjs";

const program = new Command("cloister")
  .description("cloister registry CLI")
  .option("--server <url>", "registry URL (or CLOISTER_SERVER)", process.env.CLOISTER_SERVER)
  .option("--json", "stable machine-readable output on stdout")
  .showHelpAfterError();

registerImages(program);
registerOps(program);

program.parseAsync(process.argv).catch((err) => {
  process.stderr.write(`cloister: ${err?.message ?? err}\n`);
  process.exit(typeof err?.exitCode === "number" ? err.exitCode : 1);
});
