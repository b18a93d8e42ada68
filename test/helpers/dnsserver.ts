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

function rr(type: number, rdata: Buffer): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
  head.writeUInt16BE(type, 2);
  head.writeUInt16BE(1, 4);
  head.writeUInt32BE(60, 6);
  head.writeUInt16BE(rdata.length, 10);
  return Buffer.concat([head, rdata]);
}

/** A DNS server on loopback UDP answering A, MX and TXT questions from `zone` (a real socket: node:dns asks it as it would any server). */
export async function startDnsServer(): Promise<DnsServer> {
  const sock = dgram.createSocket('udp4');
  const server: DnsServer = { port: 0, zone: new Map(), asked: [], close: () => new Promise((resolve) => sock.close(() => resolve())) };
  sock.on('message', (q, from) => {
    let i = 12;
    const labels: string[] = [];
    while (q[i] !== 0) {
      labels.push(q.subarray(i + 1, i + 1 + q[i]!).toString('latin1').toLowerCase());
      i += q[i]! + 1;
    }
    const type = q.readUInt16BE(i + 1);
    server.asked.push(`${type} ${labels.join('.')}`);
    const entry = server.zone.get(labels.join('.'));
    if (entry?.silent) return;
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
    const head = Buffer.alloc(12);
    q.copy(head, 0, 0, 2);
    head[2] = 0x84 | (q[2]! & 1); // a response, authoritative
    head[3] = 0x80 | (entry ? 0 : 3); // NOERROR, or NXDOMAIN
    head.writeUInt16BE(1, 4);
    head.writeUInt16BE(answers.length, 6);
    sock.send(Buffer.concat([head, q.subarray(12, i + 5), ...answers]), from.port, from.address);
  });
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()));
  server.port = sock.address().port;
  return server;
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
