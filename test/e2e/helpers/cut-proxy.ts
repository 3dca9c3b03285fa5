// A TCP proxy in front of a plain-HTTP registry that sabotages the first PATCH it sees: after
// `afterBytes` bytes of that request have passed, it either drops both connections ("drop", a
// connection cut mid-chunk) or drops the registry side and answers the client itself: 502
// ("502", what a front such as Cloudflare answers when its origin goes away) or an HTML 413
// ("413", Cloudflare's answer to a body over the zone's limit). Everything else passes through.
import { createServer, connect, type Server, type Socket } from "node:net";

export interface CutProxy {
  host: string;
  /** how many PATCH requests were sabotaged so far */
  cuts(): number;
  close(): Promise<void>;
}

export async function startCutProxy(upstream: { host: string; port: number }, o: { afterBytes: number; mode: "drop" | "502" | "413"; times?: number }): Promise<CutProxy> {
  let cuts = 0;
  const sockets = new Set<Socket>();
  const marker = Buffer.from("PATCH /v2/");
  const server: Server = createServer((client) => {
    const up = connect(upstream.port, upstream.host);
    sockets.add(client).add(up);
    const gone = () => {
      client.destroy();
      up.destroy();
      sockets.delete(client);
      sockets.delete(up);
    };
    let patchSeen = -1; // bytes of the current PATCH forwarded so far, -1 when none is on the way
    client.on("data", (d: Buffer) => {
      if (patchSeen < 0 && cuts < (o.times ?? 1)) {
        const at = d.indexOf(marker);
        if (at >= 0) {
          up.write(d.subarray(0, at));
          d = d.subarray(at);
          patchSeen = 0;
        }
      }
      if (patchSeen >= 0) {
        const room = o.afterBytes - patchSeen;
        if (d.length >= room) {
          up.write(d.subarray(0, room));
          cuts++;
          patchSeen = -1;
          if (o.mode === "drop") gone();
          else {
            up.destroy();
            sockets.delete(up);
            const [status, body] = o.mode === "502" ? ["502 Bad Gateway", "bad gateway"] : ["413 Payload Too Large", "<html><body>413 Request Entity Too Large</body></html>"];
            client.end(`HTTP/1.1 ${status}\r\nContent-Type: text/html\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
          }
          return;
        }
        patchSeen += d.length;
      }
      up.write(d);
    });
    up.on("data", (d) => client.write(d));
    client.on("error", gone);
    up.on("error", gone);
    client.on("close", gone);
    up.on("close", () => client.end());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  if (!addr || typeof addr === "string") throw new Error("no address");
  return {
    host: `127.0.0.1:${addr.port}`,
    cuts: () => cuts,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
