import { chownSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { init } from '../../../src/cli/commands/init.ts';
import { writeConfig } from '../../helpers/suite.ts';
import { tempDirs } from '../../helpers/tmp.ts';

const tmp = tempDirs('makewaves-init-scratch-');
const NOBODY = 65534;
const TENANT_UID = 245_000;
const root = process.getuid?.() === 0;

// `makewaves init` is safe to run again: after servers have run, <data>/cgi is root's (the handler launcher keeps it)
// and each tenant's scratch folder belongs to that tenant's uid.
describe.skipIf(!root)(root ? 'makewaves init run again (as root)' : 'makewaves init run again (skipped: needs root)', () => {
  it("leaves <data>/cgi root's and each tenant's scratch folder its uid's, giving the rest of <data> to the service user", () => {
    const dir = tmp();
    const { configDir, dataDir } = writeConfig(dir, { main: { user: 'nobody', group: 'nogroup' }, tenants: { 'a.test': { domains: ['a.test'] } } });
    const scratch = path.join(dataDir, 'cgi', 'a.test');
    mkdirSync(scratch, { recursive: true, mode: 0o700 });
    chownSync(scratch, TENANT_UID, TENANT_UID);
    mkdirSync(path.join(dataDir, 'spool'));
    const out = new Writable({ write: (_c, _e, cb) => cb() });
    expect(init(configDir, out)).toBe(0);
    expect(statSync(path.join(dataDir, 'spool')).uid).toBe(NOBODY);
    expect(statSync(path.join(dataDir, 'cgi')).uid).toBe(0);
    expect(statSync(scratch).uid).toBe(TENANT_UID);
  });
});
