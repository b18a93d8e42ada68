import path from 'node:path';
import { loadConfig } from '../../core/config/load.ts';
import { controlRequest } from '../../core/control.ts';
import { openState } from '../../state/index.ts';
import { queueAge, queueOverview } from '../../state/queueview.ts';

/**
 * `makewaves queue`: lists queued messages from state (works whether or not
 * a server runs), then the oldest one's age and the deferred recipients per
 * domain: the same overview as the operator's panel (state/queueview.ts).
 */
export function queueList(configDir: string, out: NodeJS.WritableStream = process.stdout): number {
  const config = loadConfig(configDir);
  const state = openState(config.main.dataDir);
  try {
    const q = queueOverview(state);
    for (const m of q.rows) {
      out.write(
        `${m.id}  age ${queueAge(m.ageMs)}  ${m.size} bytes  from <${m.returnPath}>  attempts ${m.attempts}` +
          `  next in ${queueAge(m.nextInMs)}\n    to ${m.to.map((r) => `<${r}>`).join(', ')}\n` +
          (m.lastReply ? `    last reply: ${m.lastReply}\n` : ''),
      );
    }
    out.write(`${q.rows.length} message${q.rows.length === 1 ? '' : 's'} queued\n`);
    if (q.oldestMs !== undefined) out.write(`oldest ${queueAge(q.oldestMs)}, ${q.pending} recipient${q.pending === 1 ? '' : 's'} waiting\n`);
    for (const d of q.deferred) out.write(`deferred  ${d.domain}  ${d.recipients} recipient${d.recipients === 1 ? '' : 's'}  last reply: ${d.lastReply || '-'}\n`);
    return 0;
  } finally {
    state.close();
  }
}

/** `makewaves queue flush|delete ID`: asks the running server over `<data>/mail.sock`. */
export async function queueControl(configDir: string, cmd: 'flush' | 'delete', id?: string): Promise<number> {
  const config = loadConfig(configDir);
  const socket = path.join(config.main.dataDir, 'mail.sock');
  const res = await controlRequest(socket, cmd === 'flush' ? { cmd } : { cmd, id: id ?? '' });
  if (!res.ok) {
    process.stderr.write(`makewaves: ${res.error}\n`);
    return 1;
  }
  process.stdout.write(cmd === 'flush' ? `flushing ${res.queued ?? 0} queued message(s)\n` : `deleted ${id}\n`);
  return 0;
}
