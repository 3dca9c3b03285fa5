// The TCP front of `npm start` (ADR 0006): listens on the public port and pipes every
// connection, byte for byte, to `wrangler dev` on an internal loopback port. It looks only at
// the first byte of a connection: 0x16 opens a TLS handshake (containers/image clients and
// docker probe HTTPS before falling back to HTTP), which workerd's plain-HTTP socket never
// answers, so the client would wait a 10 s timeout and workerd would log a Broken-pipe stack
// trace. The front answers that probe itself; everything else is raw piping, no HTTP parsing.
//
//   tls: "refuse"  answer a ClientHello with a fatal TLS alert and close: clients fall back to
//                  plain HTTP at once (the default; ADR 0006 says why not terminate TLS here)
//   tls: "pass"    pipe TLS too (wrangler itself serves HTTPS: --local-protocol https)
import { connect, createServer } from "node:net";

const TLS_HANDSHAKE = 0x16;
// A TLS 1.0-framed alert record: level 2 (fatal), description 70 (protocol_version). Go's
// crypto/tls reports it as "remote error: tls: protocol version not supported"; every client
// then tries plain HTTP where the user allowed it (--tls-verify=false, insecure registries).
const TLS_ALERT = Buffer.from([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46]);
// A client that connects and never sends a byte (e.g. a port scanner) is dropped after this.
const FIRST_BYTE_TIMEOUT_MS = 30_000;

/**
 * Starts the front. Resolves once listening; `close()` stops accepting and destroys open
 * connections. Connections are held (paused) until the promise `waitFor` resolves, so clients
 * that arrive while wrangler starts just wait.
 */
/** How long the rest of an answer to a vanished client is read and dropped before the upstream connection is closed. */
const UPSTREAM_DRAIN_MS = 30_000;

export function startFront({ host, port, upstreamHost = "127.0.0.1", upstreamPort, tls = "refuse", onTlsProbe, waitFor }) {
  const open = new Set();
  const track = (s) => {
    open.add(s);
    s.once("close", () => open.delete(s));
  };

  const pipeTo = async (client, first) => {
    await waitFor;
    if (client.destroyed) return;
    const upstream = connect({ host: upstreamHost, port: upstreamPort, noDelay: true, allowHalfOpen: true });
    track(upstream);
    upstream.write(first);
    // pipe() carries each direction's end (FIN) across after flushing what is buffered, so a
    // response is never cut short. An upstream error tears both down. A client that resets
    // mid-response must not become a reset towards workerd, which would log a Broken-pipe stack
    // trace: the upstream gets a FIN instead and its remaining answer is read and dropped
    // (bounded by UPSTREAM_DRAIN_MS).
    const abort = () => {
      client.destroy();
      upstream.destroy();
    };
    let draining = false;
    const drainUpstream = () => {
      if (draining) return;
      draining = true;
      client.destroy();
      upstream.unpipe(client);
      upstream.on("data", () => {});
      upstream.resume();
      if (!upstream.writableEnded) upstream.end();
      setTimeout(() => upstream.destroy(), UPSTREAM_DRAIN_MS).unref();
    };
    client.on("error", drainUpstream);
    upstream.on("error", abort);
    client.on("close", (hadError) => hadError && drainUpstream());
    upstream.on("close", (hadError) => hadError && abort());
    client.pipe(upstream);
    upstream.pipe(client);
  };

  const server = createServer({ noDelay: true, pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
    track(socket);
    socket.on("error", () => socket.destroy());
    socket.setTimeout(FIRST_BYTE_TIMEOUT_MS, () => socket.destroy());
    socket.once("data", (first) => {
      socket.pause();
      socket.setTimeout(0);
      if (first[0] !== TLS_HANDSHAKE || tls === "pass") return pipeTo(socket, first);
      onTlsProbe?.();
      socket.end(TLS_ALERT);
    });
    socket.resume();
  });

  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port }, () => {
      server.off("error", reject);
      resolve({
        server,
        close() {
          server.close();
          for (const s of open) s.destroy();
        },
      });
    });
  });
}
