import { spawnSync } from 'node:child_process';

/**
 * DKIM verification by an implementation that is not ours: dkimpy (Debian
 * package python3-dkim), with a DNS function that answers from the records
 * the suite printed (`makewaves dns`), so no real DNS is asked.
 */
/** Both scripts' start: the message on stdin, and a DNS function answering from the records given as JSON. */
const PREAMBLE = `
import dkim, json, sys
msg = sys.stdin.buffer.read()
records = json.loads(sys.argv[1])
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    value = records.get(name.rstrip('.').lower())
    return value.encode() if value is not None else None
`;

const SCRIPT = `${PREAMBLE}headers, _ = dkim.rfc822_parse(msg)
out = []
for i, (k, v) in enumerate([h for h in headers if h[0].lower() == b'dkim-signature']):
    tags = dkim.util.parse_tag_value(b''.join(v.split()))
    try:
        ok = dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc)
    except Exception as e:
        ok = False
    out.append({'d': tags[b'd'].decode(), 's': tags[b's'].decode(), 'a': tags[b'a'].decode(), 'ok': bool(ok)})
print(json.dumps(out))
`;

/** The Python that has dkimpy: Debian's /usr/bin/python3 first (another python3 on PATH may not see Debian's packages). */
export const dkimPython: string | undefined = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import dkim'], { stdio: 'ignore' }).status === 0);

/** Why the independent check cannot run, for describe.skipIf's title. */
export const noDkimpy = 'python3-dkim (Debian package of dkimpy) is not installed: apt-get install python3-dkim';

export interface SignatureCheck {
  d: string;
  s: string;
  a: string;
  ok: boolean;
}

/** Verifies every DKIM-Signature of `raw` with dkimpy; `records` maps `<selector>._domainkey.<domain>` to its TXT text. */
export function verifyDkim(raw: Buffer, records: ReadonlyMap<string, string>): SignatureCheck[] {
  if (!dkimPython) throw new Error(noDkimpy);
  const r = spawnSync(dkimPython, ['-c', SCRIPT, JSON.stringify(Object.fromEntries(records))], { input: raw, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`dkimpy failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as SignatureCheck[];
}

/** The TXT records of zone-file text (`makewaves dns`): owner name without the final dot → the strings joined. */
export function zoneTxt(zone: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of zone.split('\n')) {
    const m = /^(\S+)\.\s+IN\s+TXT\s+(.*)$/.exec(line);
    if (!m) continue;
    const strings = [...m[2]!.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((s) => s[1]!.replace(/\\(.)/g, '$1'));
    out.set(m[1]!.toLowerCase(), strings.join(''));
  }
  return out;
}

const ARC_SCRIPT = `${PREAMBLE}cv, results, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc)
print(json.dumps({'cv': cv.decode(), 'reason': reason, 'instances': [r.get('instance') for r in results]}))
`;

/** Verifies the ARC chain of `raw` with dkimpy (`dkim.arc_verify`); `records` maps `<selector>._domainkey.<domain>` to its TXT text. */
export function verifyArc(raw: Buffer, records: ReadonlyMap<string, string>): { cv: string; reason: string; instances: number[] } {
  if (!dkimPython) throw new Error(noDkimpy);
  const r = spawnSync(dkimPython, ['-c', ARC_SCRIPT, JSON.stringify(Object.fromEntries(records))], { input: raw, encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`dkimpy failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { cv: string; reason: string; instances: number[] };
}
