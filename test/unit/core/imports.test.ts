import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The suite's import rules, checked over every source file:
 * - a service (acme, admin, cgi, ftp, http, jobs, lists, mail, panel) never imports
 *   another service; services meet through core/contracts.ts, wired in main.ts;
 * - lib/ imports nothing of the suite's;
 * - core/ and state/ import only lib/ (and themselves);
 * - cli/ reaches services only through core (contracts), never a service folder.
 * main.ts wires everything and may import anything.
 */
const SRC = path.resolve(import.meta.dirname, '../../../src');
const SERVICES = new Set(['acme', 'admin', 'cgi', 'ftp', 'http', 'jobs', 'lists', 'mail', 'panel']);

/** The folders each top-level folder of src/ may import from (besides itself and packages). */
function allowed(from: string): Set<string> {
  if (from === 'main.ts') return new Set(['*']);
  if (from === 'lib') return new Set();
  if (from === 'core') return new Set(['lib']);
  if (from === 'state') return new Set(['lib']);
  if (from === 'cli') return new Set(['core', 'lib', 'state', 'main.ts']);
  if (SERVICES.has(from)) return new Set(['core', 'lib', 'state']);
  throw new Error(`src/${from}: a folder the import rules do not know; add it to this test`);
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return /\.(ts|mjs|js)$/.test(e.name) ? [p] : [];
  });
}

/** Relative specifiers of static imports, re-exports and dynamic imports in a file's text. */
export function specifiers(text: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])(\.{1,2}\/[^'"]+)\1/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[2]!);
  return out;
}

/** The top-level part of src/ a path is in: a folder name, or a file name for files at the top. */
function area(file: string): string {
  return path.relative(SRC, file).split(path.sep)[0]!;
}

export function badEdges(files: Array<{ file: string; text: string }>): string[] {
  const bad: string[] = [];
  for (const { file, text } of files) {
    const from = area(file);
    const ok = allowed(from);
    for (const spec of specifiers(text)) {
      const target = path.resolve(path.dirname(file), spec);
      if (!target.startsWith(SRC + path.sep)) {
        bad.push(`${path.relative(SRC, file)} imports ${spec}, outside src/`);
        continue;
      }
      const to = area(target);
      if (to === from || ok.has('*') || ok.has(to)) continue;
      bad.push(`${path.relative(SRC, file)} imports ${spec} (${from} -> ${to})`);
    }
  }
  return bad;
}

describe('import rules', () => {
  it('hold for every file under src/', () => {
    const files = sources(SRC).map((file) => ({ file, text: readFileSync(file, 'utf8') }));
    expect(files.length).toBeGreaterThan(50);
    expect(badEdges(files)).toEqual([]);
  });

  it('catch each kind of bad edge (the check itself can fail)', () => {
    const f = (rel: string, text: string) => ({ file: path.join(SRC, rel), text });
    const cases: Array<[ReturnType<typeof f>, string]> = [
      [f('http/index.ts', "import { createMailService } from '../mail/index.ts';"), 'http -> mail'],
      [f('ftp/x.ts', "export { a } from '../http/route.ts';"), 'ftp -> http'],
      [f('cgi/x.ts', "const m = await import('../lists/index.ts');"), 'cgi -> lists'],
      [f('lib/x.ts', "import type { Logger } from '../core/log.ts';"), 'lib -> core'],
      [f('core/x.ts', "import { openState } from '../state/index.ts';"), 'core -> state'],
      [f('cli/commands/q.ts', "import { Spool } from '../../mail/spool.ts';"), 'cli -> mail'],
      [f('state/x.ts', "import { Registry } from '../core/registry.ts';"), 'state -> core'],
    ];
    for (const [file, edge] of cases) expect(badEdges([file]).join('\n')).toContain(edge);
    const good = [
      f('http/index.ts', "import type { HandlerGateway } from '../core/contracts.ts';\nimport { parseListen } from '../lib/listen.ts';"),
      f('cli/commands/q.ts', "import { openState } from '../../state/index.ts';"),
      f('main.ts', "import { createMailService } from './mail/index.ts';"),
    ];
    expect(badEdges(good)).toEqual([]);
  });
});
