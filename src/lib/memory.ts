import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * When, after a start, its garbage is collected ({@link compactHeap}): V8
 * gives its spare pages back only once it has seen allocation calm down
 * between two collections, so once at 5 s and again at 15 s (the second is
 * the one that returns them where nothing else collected in between).
 */
export const COMPACT_AFTER_START_MS = [5_000, 15_000] as const;

/** Runs {@link compactHeap} at each of {@link COMPACT_AFTER_START_MS} (timers that keep no process alive); returns a cancel. */
export function compactAfterStart(done?: (before: number, after: number) => void): () => void {
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
