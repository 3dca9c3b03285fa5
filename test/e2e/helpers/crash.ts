// Crash a registry started by helpers/registry.ts: SIGKILL its whole process tree at once, as a
// machine or isolate failure would, with no chance to finish requests or release anything.
import type { RunningRegistry } from "./registry";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGKILL the registry's process group and its workerd processes; resolves once all are gone. */
export async function crashRegistry(reg: RunningRegistry, timeoutMs = 10_000): Promise<void> {
  const pids = [reg.pid, ...reg.workerPids()];
  try {
    process.kill(-reg.pid, "SIGKILL");
  } catch {}
  for (const p of pids) {
    try {
      process.kill(p, "SIGKILL");
    } catch {}
  }
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive)) {
    if (Date.now() > deadline) throw new Error(`processes ${pids.filter(alive).join(", ")} survived SIGKILL`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
