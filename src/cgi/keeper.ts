/** What the server tells the launcher's keeper (keeper-main.ts): how to start the launcher. */
export interface KeeperSpec {
  /** The launcher's program, its arguments (the config folder, the suite's handler folder). */
  entry: string;
  args: string[];
  /** What starts it: setpriv (--pdeathsig, so it ends with the keeper) or node, and the arguments before the program. */
  execPath: string;
  execArgv: string[];
  /** How long a launcher started again has to say it is ready before it is ended and started once more. */
  readyMs: number;
  /** When it is started again ({@link KEEPER_RESTART_MS}; tests give shorter times). */
  restartMs: { first: number; most: number; calm: number };
}

/**
 * When the keeper starts an ended launcher again: after `first` ms, then
 * twice as long each time it ends again, up to `most`; a launcher that ran
 * `calm` ms after it said it was ready counts as a first end again; one
 * that never said so (a config folder broken since the last reload) does
 * not, so its tries back off to one every 30 s, not a loop.
 */
export const KEEPER_RESTART_MS = { first: 100, most: 30_000, calm: 60_000 } as const;
