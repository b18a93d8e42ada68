import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { keepTickShape } from '../../../src/lib/memory.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

// The process's own tick object, caught once (src/lib/memory.ts says why it is held).
describe('keepTickShape', () => {
  // What Node's process.nextTick queues: the fields of its object literal (lib/internal/process/task_queues.js).
  // Node 24 adds the async context frame. A Node that builds tick objects otherwise fails here: look again at
  // whether holding one still keeps the class every nextTick uses.
  it('holds one of Node’s own tick objects, the same one each time', () => {
    const kept = keepTickShape();
    expect(kept).toBeDefined();
    expect(Object.keys(kept!)).toEqual(['callback', 'args']);
    const symbols = Object.getOwnPropertySymbols(kept!).map((s) => s.description);
    expect(symbols.slice(0, 2)).toEqual(['async_id_symbol', 'trigger_async_id_symbol']);
    expect(symbols.slice(2).every((d) => d === 'kAsyncContextFrame')).toBe(true);
    expect(keepTickShape()).toBe(kept);
  });

  // In a process of its own (a full collection, natives syntax): the ticks queued after the start's compaction,
  // run while nothing else is alive, are still built with the class of the held one. Without the held object
  // that class is collected, and V8 then defines every tick's fields through the runtime.
  it('keeps the class of the ticks across a compaction while idle', () => {
    const script = `
      const { keepTickShape, compactHeap } = await import(${JSON.stringify(path.join(ROOT, 'src/lib/memory.ts'))});
      const { createHook } = await import('node:async_hooks');
      const same = new Function('a', 'b', 'return %HaveSameMap(a, b)');
      const first = new WeakRef(keepTickShape());
      await new Promise((r) => { let n = 0; const step = (a) => (++n < 50000 ? process.nextTick(step, a) : r()); step(1); });
      await new Promise((r) => setTimeout(r, 20));
      compactHeap();
      await new Promise((r) => setTimeout(r, 20));
      let fresh;
      const hook = createHook({ init(_i, type, _t, res) { if (type === 'TickObject') fresh ??= res; } }).enable();
      process.nextTick(() => undefined, 1);
      hook.disable();
      const kept = keepTickShape();
      console.log(JSON.stringify({ held: first.deref() === kept, sameClass: same(kept, fresh) }));
    `;
    const out = execFileSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({ held: true, sameClass: true });
  });
});
