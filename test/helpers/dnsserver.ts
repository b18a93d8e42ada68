import dgram from 'node:dgram';

/** What a name has, for {@link startDnsServer}: MX (preference, host) and TXT (each record its strings). */
export interface ZoneEntry {
  mx?: Array<[number, string]>;
  txt?: string[][];
  /** IPv4 addresses (A records). */
  a?: string[];
  /** Never answered: the asker times out (a DNS server that is down or a lost packet). */
  silent?: boolean;
}

export interface DnsServer {
  port: number;
  /** Lower-case name without the final dot → its records; anything else is NXDOMAIN. Change it at will. */
  zone: Map<string, ZoneEntry>;
  /** Every question asked, in order: `TYPE name` (type as a number: 16 TXT, 15 MX, 1 A). */
  asked: string[];
  close(): Promise<void>;
}

function encodeName(name: string): Buffer {
  const parts = name.replace(/\.$/, '').split('.').filter(Boolean);
  return Buffer.concat([...parts.map((p) => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')])), Buffer.from([0])]);
}

/** One answer record for the question's own name (a pointer to it), TTL 60: `type` and its `rdata`. */
export function rr(type: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
  head.writeUInt16BE(type, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt32BE(60, 6);
  head.writeUInt16BE(rdata.length, 10);
  return Buffer.concat([head, rdata]);
}

/** A reply of {@link serveDns}: its rcode (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN), its answers ({@link rr}), whether authoritative. */
export interface DnsReply {
  rcode: number;
  answers: Buffer[];
  authoritative: boolean;
}

/**
 * A DNS server on loopback UDP (a real socket: node:dns asks it as it would
 * any server) that asks `reply` for each question: `name` lower-case
 * without the final dot ('' for the root), `type` as a number (16 TXT, 15 MX,
 * 1 A, 2 NS); undefined leaves the question unanswered (the asker times out).
 */
export async function serveDns(reply: (name: string, type: number) => DnsReply | undefined): Promise<{ port: number; close(): Promise<void> }> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (q, from) => {
    let i = 12;
    const labels: string[] = [];
    while (q[i] !== 0) {
      labels.push(q.subarray(i + 1, i + 1 + q[i]!).toString('latin1').toLowerCase());
      i += q[i]! + 1;
    }
    const r = reply(labels.join('.'), q.readUInt16BE(i + 1));
    if (!r) return;
    const head = Buffer.alloc(12);
    q.copy(head, 0, 0, 2);
    head[2] = (r.authoritative ? 0x84 : 0x80) | (q[2]! & 1); // a response (authoritative or not), recursion desired as asked
    head[3] = 0x80 | r.rcode;
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(r.answers.length, 6);
    sock.send(Buffer.concat([head, q.subarray(12, i + 5), ...r.answers]), from.port, from.address);
  });
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()));
  return { port: sock.address().port, close: () => new Promise((resolve) => sock.close(() => resolve())) };
}

/** A DNS server answering A, MX and TXT questions from `zone` ({@link serveDns}). */
export async function startDnsServer(): Promise<DnsServer> {
  const zone = new Map<string, ZoneEntry>();
  const asked: string[] = [];
  const dns = await serveDns((name, type) => {
    asked.push(`${type} ${name}`);
    const entry = zone.get(name);
    if (entry?.silent) return undefined;
    const answers: Buffer[] = [];
    if (entry && type === 15) {
      for (const [pref, host] of entry.mx ?? []) answers.push(rr(15, Buffer.concat([Buffer.from([pref >> 8, pref & 255]), encodeName(host)])));
    }
    if (entry && type === 1) {
      for (const ip of entry.a ?? []) answers.push(rr(1, Buffer.from(ip.split('.').map(Number))));
    }
    if (entry && type === 16) {
      for (const strings of entry.txt ?? []) answers.push(rr(16, Buffer.concat(strings.map((s) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)])))));
    }
    return { rcode: entry ? 0 : 3, answers, authoritative: true }; // NOERROR, or NXDOMAIN
  });
  return { port: dns.port, zone, asked, close: dns.close };
}

/** The records of zone-file text as `makewaves dns` prints it, loaded into a zone: MX and TXT lines (split TXT strings kept split). */
export function loadZone(zone: Map<string, ZoneEntry>, text: string): void {
  for (const line of text.split('\n')) {
    const m = /^(\S+)\.\s+IN\s+(MX|TXT)\s+(.*)$/.exec(line);
    if (!m) continue;
    const name = m[1]!.toLowerCase();
    const entry = zone.get(name) ?? {};
    zone.set(name, entry);
    if (m[2] === 'MX') {
      const [pref, host] = m[3]!.split(/\s+/);
      (entry.mx ??= []).push([Number(pref), host!]);
    } else {
      (entry.txt ??= []).push([...m[3]!.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((s) => s[1]!.replace(/\\(.)/g, '$1')));
    }
  }
}
