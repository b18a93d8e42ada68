/**
 * The one rule for every Location header the HTTP service sends.
 *
 * A Location that starts with `//` or `/\` is protocol-relative to a
 * browser: `Location: //evil.test/` sends the visitor to another host. Every
 * redirect the service makes is to a path on the same host (or, for the
 * HTTPS redirect, to the same path on the host that was routed), so the path
 * is built here: exactly one `/` first, runs of `/` collapsed (the paths we
 * build from decoded segments never hold an empty segment, so a run is
 * always an artefact of joining), and a `\` percent-encoded (a browser reads
 * it as `/`).
 */
export function localPath(path: string): string {
  const p = path.replace(/\\/g, '%5C').replace(/\/{2,}/g, '/');
  return p.charCodeAt(0) === 47 /* / */ ? p : `/${p}`;
}

/** A local redirect target: {@link localPath} of `path`, with the raw query (no "?") kept as sent. */
export function localLocation(path: string, query = ''): string {
  return query ? `${localPath(path)}?${query}` : localPath(path);
}

/** The HTTPS form of a request, for the plain-HTTP redirect: the routed host, never a name taken from elsewhere. */
export function httpsLocation(host: string, port: number, path: string, query = ''): string {
  return `https://${host}${port === 443 ? '' : `:${port}`}${localLocation(path, query)}`;
}

