// `npm run bench`: every benchmark under scripts/bench/, one after the other
// (they would distort each other if run at once). Extra arguments are passed on.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { ROOT } from './lib.ts';

const benches = ['http.ts', 'ftp.ts', 'sftp.ts', 'smtp.ts', 'forms.ts', 'lists.ts'];
let failed = 0;
for (const b of benches) {
  const file = path.join(ROOT, 'scripts/bench', b);
  if (!existsSync(file)) continue;
  console.log(`\n# ${b}`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file, ...process.argv.slice(2)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exitCode = failed ? 1 : 0;
