// Image references in skopeo's transport syntax, so people already know them:
//   docker://REGISTRY/NAME[:TAG|@DIGEST]   a registry (http:// or https:// may follow docker://)
//   oci:PATH[:REF]                          an OCI image layout directory; REF is its ref.name
//   docker-archive:PATH[:NAME:TAG]          a `docker save` tarball
//   docker-daemon:NAME[:TAG|@DIGEST]        the local docker Engine (DOCKER_HOST or /var/run/docker.sock)
// As in skopeo, PATH ends at the first ':'.
import { parseReference, RegistryError, EXIT } from "../../lib/registry-client.mjs";

export const TRANSPORTS = ["docker", "oci", "docker-archive", "docker-daemon"];

const usage = (msg) => new RegistryError(msg, { exitCode: EXIT.USAGE });

/** @returns {{transport: string, text: string} & Record<string, any>} */
export function parseTransport(text) {
  const colon = text.indexOf(":");
  const transport = colon > 0 ? text.slice(0, colon) : "";
  const rest = text.slice(colon + 1);
  switch (transport) {
    case "docker": {
      if (!rest.startsWith("//")) throw usage(`${text}: write docker://REGISTRY/NAME:TAG`);
      let ref;
      try {
        ref = parseReference(rest.slice(2));
      } catch (err) {
        throw usage(err.message);
      }
      return { transport, text, ...ref };
    }
    case "oci":
    case "docker-archive": {
      const i = rest.indexOf(":");
      const path = i < 0 ? rest : rest.slice(0, i);
      const ref = i < 0 ? null : rest.slice(i + 1);
      if (!path) throw usage(`${text}: the path is missing (${transport}:PATH[:REF])`);
      if (ref === "") throw usage(`${text}: empty reference after the path`);
      return { transport, text, path, ref };
    }
    case "docker-daemon": {
      if (!rest) throw usage(`${text}: write docker-daemon:NAME[:TAG]`);
      return { transport, text, name: rest };
    }
    default:
      throw usage(`${JSON.stringify(text)}: unknown transport; use one of ${TRANSPORTS.map((t) => (t === "docker" ? "docker://" : t + ":")).join(", ")}`);
  }
}

/** "reg/name:tag" → a docker:// reference; anything with a transport prefix is parsed as such. */
export function parseLoose(text, { preferRegistry }) {
  if (/^(docker|oci|docker-archive|docker-daemon):/.test(text)) return parseTransport(text);
  if (preferRegistry) return parseTransport(`docker://${text.replace(/^docker:\/\//, "")}`);
  return parseTransport(`docker-daemon:${text}`);
}
