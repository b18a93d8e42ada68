// Sums up V8 CPU profiles (from `--cpu-prof`, e.g. `scripts/bench/http.ts
// --profile DIR`): the functions with the most self time, as a Markdown table.
//
//   node --import tsx scripts/bench/profile-top.ts [--top 15] [--skip-ms 1500] [--mark smtp-server] FILE.cpuprofile...
//
// Counting starts at the first sample under a file whose URL holds the mark
// (`_http_server` by default: node:http's request handling; `smtp-server` for
// the SMTP bench's servers).
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const top = topAt === -1 ? 15 : Number(args[topAt + 1]);
const skipAt = args.indexOf('--skip-ms');
const skipMs = skipAt === -1 ? 1500 : Number(args[skipAt + 1]);
const markAt = args.indexOf('--mark');
const mark = markAt === -1 ? '_http_server' : args[markAt + 1]!;
const files = args.filter((a, i) => !a.startsWith('--') && i !== topAt + 1 && i !== skipAt + 1 && i !== markAt + 1);

const self = new Map<string, number>();
let total = 0;
for (const file of files) {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  // Start-up (module loading, reading 1,000 tenant files) is not the request path:
  // counting starts at the first sample inside the mark (node:http's request handling by default).
  const parent = new Map<number, number>();
  for (const n of p.nodes as (Node & { children?: number[] })[]) for (const c of n.children ?? []) parent.set(c, n.id);
  const inHttp = (id: number | undefined): boolean => {
    for (; id !== undefined; id = parent.get(id)) if (byId.get(id)!.callFrame.url.includes(mark)) return true;
    return false;
  };
  let first = p.samples.findIndex((id) => inHttp(id));
  if (first === -1) first = p.samples.length;
  // ... and one second and a half after it (the rest of start-up, the warm-up's first JIT work).
  for (let t = 0; first < p.samples.length && t < skipMs * 1000; first++) t += p.timeDeltas[first] ?? 0;
  for (let i = first; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!)!;
    const dt = p.timeDeltas[i] ?? 0;
    const f = n.callFrame;
    // Idle time is not work: left out of the total as well.
    if (f.functionName === '(idle)' || f.functionName === '(program)') continue;
    const where = f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
}
console.log(`| self % | function (file:line) |\n|---:|---|`);
for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(`| ${((us / total) * 100).toFixed(1)} | ${key.replaceAll('|', '\\|')} |`);
}
