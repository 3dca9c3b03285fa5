import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// The OCI conformance suite again, with token auth on and every request carrying the admin's
// Basic credentials (see withCredentials in test/unit/helpers.ts).
export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        bindings: { REQUEST_LOG: "off",
          MAX_BODY_BYTES: "0",
          UPLOAD_PART_BYTES: "5242880",
          AUTH_MODE: "token",
          ADMIN_PASSWORD: "conformance-admin-password",
          TEST_CREDENTIALS: "admin:conformance-admin-password",
          REGISTRY_HOSTS: "registry.test",
        },
      },
    }),
  ],
  test: {
    include: ["test/conformance/**/*.test.ts", "test/auth-conformance/**/*.test.ts"],
    testTimeout: 60_000,
  },
});
