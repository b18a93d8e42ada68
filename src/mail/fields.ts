/**
 * `raw` without the header fields `drop` picks (given each field's name in
 * lower case and its value unfolded), a folded field with all its lines;
 * everything else is left byte for byte, the body untouched. The one place
 * fields are taken out of a received message: forged Authentication-Results
 * (inbound.ts) and a sender's own spam verdict (rspamd.ts).
 */
export function stripFields(raw: Buffer, drop: (name: string, value: string) => boolean, quick?: RegExp): { raw: Buffer; removed: number } {
  const end = raw.indexOf('\r\n\r\n');
  const headEnd = end === -1 ? raw.length : end + 2;
  const head = raw.subarray(0, headEnd).toString('latin1');
  // Most messages have none of the fields asked for: answered without splitting the header section.
  if (quick && !quick.test(head)) return { raw, removed: 0 };
  let removed = 0;
  const kept = head.split(/(?<=\r\n)(?![ \t])/).filter((field) => {
    const colon = field.indexOf(':');
    if (colon === -1) return true;
    const name = field.slice(0, colon).trim().toLowerCase();
    if (!drop(name, field.slice(colon + 1).replace(/\r\n(?=[ \t])/g, '').replace(/\r\n$/, ''))) return true;
    removed++;
    return false;
  });
  if (removed === 0) return { raw, removed };
  return { raw: Buffer.concat([Buffer.from(kept.join(''), 'latin1'), raw.subarray(headEnd)]), removed };
}
