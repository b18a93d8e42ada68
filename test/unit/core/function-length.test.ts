import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * House rule: no factory over ~250 lines. A function that builds a service or a
 * large closure-holding object is split by responsibility before it grows past
 * that (listeners, dispatch, per-operation handlers in their own modules with
 * explicit deps). Measured here on every top-level or exported function of
 * src/: declarations, and function expressions or arrow functions bound to a
 * top-level const/let/var or an export default; from the first line of the
 * node (its leading comment not counted) to its last, both included.
 */
const LIMIT = 260; // ~250 lines, house rule; the margin keeps a small edit from tripping it

const SRC = path.resolve(import.meta.dirname, '../../../src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

export interface Measured {
  name: string;
  lines: number;
}

/** A function expression or arrow function, seen through parentheses, `as`, `satisfies` and `!`. */
function functionIn(node: ts.Expression | undefined): ts.FunctionExpression | ts.ArrowFunction | undefined {
  let e = node;
  while (e && (ts.isParenthesizedExpression(e) || ts.isAsExpression(e) || ts.isSatisfiesExpression(e) || ts.isNonNullExpression(e))) e = e.expression;
  return e && (ts.isFunctionExpression(e) || ts.isArrowFunction(e)) ? e : undefined;
}

/** Every top-level or exported function of one file, with its length in lines. */
export function measure(fileName: string, text: string): Measured[] {
  const sf = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const lines = (node: ts.Node): number =>
    sf.getLineAndCharacterOfPosition(node.getEnd()).line - sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
  const out: Measured[] = [];
  for (const st of sf.statements) {
    if (ts.isFunctionDeclaration(st) && st.body) {
      out.push({ name: st.name?.text ?? 'default', lines: lines(st) });
    } else if (ts.isVariableStatement(st)) {
      for (const d of st.declarationList.declarations) {
        const fn = functionIn(d.initializer);
        if (fn) out.push({ name: d.name.getText(sf), lines: lines(fn) });
      }
    } else if (ts.isExportAssignment(st)) {
      const fn = functionIn(st.expression);
      if (fn) out.push({ name: 'default', lines: lines(fn) });
    }
  }
  return out;
}

describe('function length (no factory over ~250 lines)', () => {
  it('measures declarations, bound function expressions and arrows, and export default', () => {
    const body = (n: number) => Array.from({ length: n }, (_, i) => `  const v${i} = ${i};`).join('\n');
    const text = [
      `export function a() {\n${body(3)}\n}`,
      `const b = (x: number) => {\n${body(1)}\n};`,
      `export const c = function () {\n${body(2)}\n} as () => void;`,
      `export default () => {\n${body(4)}\n};`,
      `function d(): void;`,
    ].join('\n');
    expect(measure('x.ts', text)).toEqual([
      { name: 'a', lines: 5 },
      { name: 'b', lines: 3 },
      { name: 'c', lines: 4 },
      { name: 'default', lines: 6 },
    ]);
  });

  it(`every top-level or exported function in src/ is at most ${LIMIT} lines`, () => {
    const over: string[] = [];
    for (const file of sources(SRC)) {
      for (const m of measure(file, readFileSync(file, 'utf8'))) {
        if (m.lines > LIMIT) over.push(`src/${path.relative(SRC, file).split(path.sep).join('/')}:${m.name}:${m.lines}`);
      }
    }
    expect(over, `over ${LIMIT} lines (~250 lines, house rule): split by responsibility`).toEqual([]);
  });
});
