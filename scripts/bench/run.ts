// `npm run bench`: every benchmark under scripts/bench/, one after the other
// (they would distort each other if run at once). A first argument naming
// benchmarks runs only those (`npm run bench http`, `npm run bench ftp,smtp`);
// other arguments are passed on.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT } from './lib.ts';

const all = ['http', 'ftp', 'sftp', 'smtp', 'forms', 'cgi', 'lists'];
let args = process.argv.slice(2);
let benches = all;
if (args[0] && !args[0].startsWith('-')) {
  benches = args[0].split(',');
  const unknown = benches.filter((b) => !all.includes(b));
  if (unknown.length > 0) {
    console.error(`no such benchmark: ${unknown.join(', ')} (there are ${all.join(', ')})`);
    process.exit(2);
  }
  args = args.slice(1);
}
console.log(`Node ${process.version}`);
let failed = 0;
for (const b of benches) {
  const file = path.join(ROOT, 'scripts/bench', `${b}.ts`);
  if (!existsSync(file)) continue;
  console.log(`\n# ${b}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file, ...args], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exitCode = failed ? 1 : 0;
