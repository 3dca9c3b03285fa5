// cloister in token mode for client tests: AUTH_MODE=token, an ADMIN_PASSWORD, and users created
// through the admin API (docs/auth.md). Each user may push and pull in its own namespace only.
import { request, describe as show } from "./http";
import { startRegistry, type RunningRegistry } from "./registry";

export const ADMIN_PASSWORD = "e2e-admin-password";

export function basic(user: string, password: string): Record<string, string> {
  return { Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` };
}

export const adminAuth = () => basic("admin", ADMIN_PASSWORD);

/** Starts a token-mode registry and creates `users` (name → password). */
export async function startTokenRegistry(users: Record<string, string>, vars: Record<string, string> = {}): Promise<RunningRegistry> {
  const reg = await startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD, ...vars } });
  try {
    for (const [name, password] of Object.entries(users)) {
      const r = await request(reg, "POST", "/admin/users", { headers: { ...adminAuth(), "Content-Type": "application/json" }, body: JSON.stringify({ name, password }) });
      if (r.status !== 201) throw new Error(`creating user ${name}: ${show(r)}`);
    }
  } catch (e) {
    await reg.stop();
    throw e;
  }
  return reg;
}
