import { createHook } from 'node:async_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';

let keptTick: object | undefined;

/**
 * One of Node's own tick objects (what `process.nextTick` queues), held for
 * the life of the process, so that the hidden class its object literal
 * builds is never collected.
 *
 * Why: a full collection while the process is idle soon after its start
 * (the compaction below, on a server nobody is asking yet) frees that
 * class, as no tick object is alive then. The next tick built takes a new
 * one, V8 marks the literal's computed-key stores megamorphic, and from
 * then on every `process.nextTick` of the process (several per HTTP
 * answer: stream writes, ends, resumes) defines its fields through the
 * runtime: 4–5 µs more CPU per static answer, for the rest of the
 * process's life (docs/performance.md, "The tick object's hidden class").
 * An object of that class kept alive keeps the class, and every class it
 * was built through, alive.
 *
 * It is caught with an async hook's `init`, whose resource for a
 * `TickObject` is the tick object itself (node:async_hooks), enabled only
 * for the one `nextTick` below. Returns the object (undefined if this Node
 * no longer reports it: nothing else changes then).
 */
export function keepTickShape(): object | undefined {
  if (keptTick) return keptTick;
  const hook = createHook({
    init(_id, type, _trigger, resource) {
      if (type === 'TickObject') keptTick ??= resource as object;
    },
  });
  hook.enable();
  try {
    process.nextTick(() => undefined);
  } finally {
    hook.disable();
  }
  return keptTick;
}

/**
 * When, after a start, its garbage is collected ({@link compactHeap}): V8
 * gives its spare pages back only once it has seen allocation calm down
 * between two collections, so once at 5 s and again at 15 s (the second is
 * the one that returns them where nothing else collected in between).
 */
export const COMPACT_AFTER_START_MS = [5_000, 15_000] as const;

/** Runs {@link compactHeap} at each of {@link COMPACT_AFTER_START_MS} (timers that keep no process alive); returns a cancel. */
export function compactAfterStart(done?: (before: number, after: number) => void): () => void {
  keepTickShape();
  const timers = COMPACT_AFTER_START_MS.map((ms) => {
    const t = setTimeout(() => {
      const before = process.memoryUsage().rss;
      if (compactHeap()) done?.(before, process.memoryUsage().rss);
    }, ms);
    t.unref();
    return t;
  });
  return () => timers.forEach((t) => clearTimeout(t));
}

/**
 * One full, compacting garbage collection, run once the server has started:
 * a start leaves behind what it used only once (10,000 tenant files read,
 * parsed and checked: ~35 MB with that many), which V8 otherwise keeps
 * mapped for a long while; collected, the idle server holds only what it
 * serves with. Takes a few tens of milliseconds, once. Returns whether it
 * ran (V8 may refuse the flag; then nothing happens).
 */
export function compactHeap(): boolean {
  keepTickShape();
  let gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) {
    // The same function node --expose-gc gives, taken for this one call and the flag put back.
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as (() => void) | undefined;
    v8.setFlagsFromString('--no-expose-gc');
  }
  if (typeof gc !== 'function') return false;
  gc();
  return true;
}
