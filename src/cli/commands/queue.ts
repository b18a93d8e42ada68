import path from 'node:path';
import { loadConfig } from '../../core/config/load.ts';
import { controlRequest } from '../../core/control.ts';
import { openState } from '../../state/index.ts';

function age(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

/** `makewaves queue`: lists queued messages from state (works whether or not a server runs). */
export function queueList(configDir: string, out: NodeJS.WritableStream = process.stdout): number {
  const config = loadConfig(configDir);
  const state = openState(config.main.dataDir);
  try {
    const now = Date.now();
    const rows = state.mailQueue.list();
    for (const m of rows) {
      const rcpts = state.mailQueue.recipients(m.id).filter((r) => r.status === 'pending');
      out.write(
        `${m.id}  age ${age(now - m.createdAt)}  ${m.size} bytes  from <${m.returnPath}>  attempts ${m.attempts}` +
          `  next in ${age(m.nextAttempt - now)}\n    to ${rcpts.map((r) => `<${r.rcpt}>`).join(', ')}\n` +
          (m.lastReply ? `    last reply: ${m.lastReply}\n` : ''),
      );
    }
    out.write(`${rows.length} message${rows.length === 1 ? '' : 's'} queued\n`);
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
