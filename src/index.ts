// Worker entry: the Hono app plus the Durable Object classes wrangler binds.
import { buildApp } from "./app";
import type { Env } from "./env";
import { gcCoordinator } from "./stores";

export { BlobStore } from "./stores/blob-store";
export { UploadSession } from "./stores/upload-session";
export { TrustStore } from "./stores/trust-store";
export { AccountStore } from "./stores/account-store";
export { AuditLog } from "./stores/audit-log";
export { Catalog } from "./stores/catalog";
export { GcCoordinator } from "./gc/coordinator";
export { Webhooks } from "./webhooks/store";

const app = buildApp();

export default {
  fetch: app.fetch,
  // Cron Trigger (wrangler.toml [triggers]): garbage collection with reconcile (docs/adr/0011).
  async scheduled(_controller, env, ctx) {
    ctx.waitUntil(gcCoordinator(env).start({ dryRun: false, reconcile: true, trigger: "cron" }).then((r) => {
      if (!r.ok) console.log(`scheduled gc not started: ${r.message}`);
    }));
  },
} satisfies ExportedHandler<Env>;
