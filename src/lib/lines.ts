/**
 * Splits text that comes in chunks into lines ('\n', not kept), each given
 * to `onLine`. A line longer than `max` characters is not kept: `onOver` is
 * called once as it grows past `max`, and the rest of it, up to its '\n',
 * is dropped. Returns the function to feed each chunk to.
 */
export function lineSplitter(max: number, onLine: (line: string) => void, onOver: () => void): (chunk: string) => void {
  let line = '';
  let over = false;
  return (chunk: string) => {
    for (;;) {
      const nl = chunk.indexOf('\n');
      if (!over) {
        line += nl === -1 ? chunk : chunk.slice(0, nl);
        if (line.length > max) {
          over = true;
          line = '';
          onOver();
        }
      }
      if (nl === -1) return;
      if (!over) onLine(line);
      line = '';
      over = false;
      chunk = chunk.slice(nl + 1);
    }
  };
}
