import type { Stats } from 'node:fs';

/** Facts this server reports in MLSD/MLST (RFC 3659 §7.5), in FEAT order. */
export const MLST_FACTS = ['type', 'size', 'modify', 'perm', 'unix.mode'] as const;
export type Fact = (typeof MLST_FACTS)[number];

/** RFC 3659 §2.3: time-val is YYYYMMDDHHMMSS[.sss], always UTC. */
export function timeVal(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`;
}

/**
 * One MLSx fact line without the name: `type=file;size=12;modify=...;perm=adfrw;`.
 * `perm` (RFC 3659 §7.5.5) reflects what this server allows a tenant: no
 * recursive purge, no permission changes.
 */
export function factLine(st: Stats, selected: ReadonlySet<Fact>, type?: 'cdir' | 'pdir'): string {
  const dir = st.isDirectory();
  let out = '';
  if (selected.has('type')) out += `type=${type ?? (dir ? 'dir' : 'file')};`;
  if (selected.has('size') && !dir) out += `size=${st.size};`;
  if (selected.has('modify')) out += `modify=${timeVal(st.mtime)};`;
  if (selected.has('perm')) out += `perm=${dir ? 'cdeflm' : 'adfrw'};`;
  if (selected.has('unix.mode')) out += `UNIX.mode=0${(st.mode & 0o777).toString(8)};`;
  return out;
}

/** A LIST line in the usual `ls -l` shape; owner and group are not the host's. */
export function lsLine(st: Stats & { name: string }, now = Date.now()): string {
  const dir = st.isDirectory();
  const bits = 'rwxrwxrwx'.split('').map((c, i) => (st.mode & (1 << (8 - i)) ? c : '-')).join('');
  const d = st.mtime;
  const mon = d.toLocaleString('en-US', { month: 'short', timeZone: 'UTC' });
  const day = String(d.getUTCDate()).padStart(2, ' ');
  const recent = Math.abs(now - d.getTime()) < 180 * 86_400_000;
  const when = recent ? `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}` : ` ${d.getUTCFullYear()}`;
  return `${dir ? 'd' : '-'}${bits} 1 ftp ftp ${String(st.size).padStart(12)} ${mon} ${day} ${when} ${st.name}`;
}
