import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

// House rule: no swallowed errors. An error may be discarded only with a
// comment saying why, on the line itself or just above; a catch that turns
// the error into an answer (throws, rejects, returns a refusal) is not
// discarding it.

const SRC = path.resolve(import.meta.dirname, '../../../src');
const commented = (s: string) => /\/\/|\/\*|^\s*\*/.test(s);
const DISCARD_HANDLER = /\.catch\(\(\) => (undefined|\{\})\)|\.on\('[a-z-]+', \(\) => (undefined|\{\})\)/;
const DISCARD_BODY = /^(return( undefined| null| false| true| \[\]| ''| 0)?;|continue;|break;|\}?)$/;

/** The lines of `text` that discard an error without saying why. */
export function silentCatches(text: string): number[] {
  const lines = text.split('\n');
  const found: number[] = [];
  lines.forEach((l, i) => {
    const above = [lines[i - 1] ?? '', lines[i - 2] ?? ''];
    if (DISCARD_HANDLER.test(l) && !commented(l) && !above.some(commented)) found.push(i + 1);
    if (/catch (\([^)]*\) )?\{\s*$/.test(l)) {
      const next = (lines[i + 1] ?? '').trim();
      if (DISCARD_BODY.test(next) && !commented(l) && !commented(lines[i - 1] ?? '')) found.push(i + 1);
    }
  });
  return found;
}

function* sources(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) yield* sources(full);
    else if (/\.(ts|mjs|js)$/.test(name)) yield full;
  }
}

describe('no swallowed errors', () => {
  it('every discarded error in src/ says why', () => {
    const silent: string[] = [];
    for (const f of sources(SRC)) for (const n of silentCatches(readFileSync(f, 'utf8'))) silent.push(`${path.relative(SRC, f)}:${n}`);
    expect(silent).toEqual([]);
  });

  it.each([
    ['an empty promise catch', 'await fh.close().catch(() => undefined);', [1]],
    ['an ignored error event', "sock.on('error', () => {});", [1]],
    ['a catch that returns nothing', 'try {\n  x();\n} catch {\n  return undefined;\n}', [3]],
    ['an empty catch block', 'try {\n  x();\n} catch {\n}', [3]],
    ['a catch that skips on', 'for (;;) {\n  try { a(); } catch (err) {\n    continue;\n  }\n}', [2]],
    ['an explained discard', '// closing a file only read\nawait fh.close().catch(() => undefined);', []],
    ['an explained catch', 'try {\n  x();\n} catch {\n  // gone already: nothing to do\n  return;\n}', []],
    ['a catch that answers', 'try {\n  x();\n} catch {\n  throw new Error("no such tenant");\n}', []],
  ])('flags %s correctly', (_name, text, lines) => {
    expect(silentCatches(text)).toEqual(lines);
  });
});
