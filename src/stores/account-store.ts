// Accounts, robots, policies and login throttling (owned by the auth module; see src/auth/).
import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";

export class AccountStore extends DurableObject<Env> {}
