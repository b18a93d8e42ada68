import { createRequire } from 'node:module';

/** The few Bluebird methods this service uses. */
export interface BluebirdPromise<T> extends Promise<T> {
  timeout(ms: number, message?: string): Promise<T>;
}
interface BluebirdStatic {
  resolve<T>(v: T | PromiseLike<T>): BluebirdPromise<T>;
  resolve(): BluebirdPromise<void>;
  reject(err: Error): Promise<never>;
}

/**
 * ftp-srv's own promise library, from its own dependency tree: its
 * command handlers chain Bluebird methods (`.tap`, typed `.catch`) on what
 * the connection's `reply()` and the connectors' `waitForConnection()`
 * return, so whatever this service puts in their place answers in kind.
 */
export const Bluebird = createRequire(createRequire(import.meta.url).resolve('ftp-srv'))('bluebird') as BluebirdStatic;
