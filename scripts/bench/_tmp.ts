import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os'; import path from 'node:path';
import { Spool } from '../../src/mail/spool.ts';
const dir = mkdtempSync(path.join(os.tmpdir(), 'sp-'));
const sp = new Spool(dir); sp.init();
const body = Buffer.alloc(1024, 'x');
let n = 0; const N = 2000; const t0 = performance.now();
await Promise.all(Array.from({ length: 20 }, async (_, w) => {
  while (n < N) { const i = n++; await sp.write({ v: 1, id: `M${w}X${i}`, createdAt: 0, sender: '', returnPath: '', recipients: [] }, Buffer.alloc(0), body); }
}));
console.log('UV', process.env.UV_THREADPOOL_SIZE ?? 4, 'msg/s', (N / (performance.now() - t0) * 1000).toFixed(0));
rmSync(dir, { recursive: true });
