import { build, type Metafile } from 'esbuild';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.join(import.meta.dirname, '../../..');

/**
 * `makewaves serve` with HTTP alone must not load what only the optional
 * services use: with 10,000 tenants, loading those libraries was a third of
 * a start and ~16 MB of memory (ssh2's WebAssembly alone). They are reached
 * (and the reverse proxy's undici and http-proxy-3, loaded only for a
 * suite with proxy routes) only through dynamic import(); a static import anywhere on the way in
 * (the CLI entry, main.ts, core, the HTTP service) fails here.
 */
const OPTIONAL = ['smtp-server', 'mailauth', 'nodemailer', 'ftp-srv', 'ssh2', 'acme-client', 'selfsigned', 'busboy', 'yauzl', 'undici', 'http-proxy-3'];

describe('what serve loads before it knows the config', () => {
  it('the bundle (as scripts/build.mjs splits it) imports none of the optional services\' libraries statically', async () => {
    const r = await build({
      absWorkingDir: ROOT,
      bundle: true,
      packages: 'external',
      platform: 'node',
      format: 'esm',
      target: 'node20',
      entryPoints: { makewaves: 'src/cli/run.ts' },
      outdir: path.join(ROOT, 'dist-test-unused'),
      outExtension: { '.js': '.mjs' },
      splitting: true,
      chunkNames: 'chunks/[name]-[hash]',
      metafile: true,
      write: false,
      logLevel: 'silent',
    });
    const outputs: Metafile['outputs'] = r.metafile.outputs;
    const entry = Object.keys(outputs).find((k) => outputs[k]!.entryPoint === 'src/cli/run.ts')!;
    const mainChunk = Object.keys(outputs).find((k) => Object.keys(outputs[k]!.inputs).includes('src/main.ts'))!;
    expect(entry).toBeDefined();
    expect(mainChunk).toBeDefined();
    // Every package reached by static imports from the entry and from main.ts's chunk.
    const seen = new Set<string>();
    const packages = new Set<string>();
    const walk = (out: string) => {
      if (seen.has(out)) return;
      seen.add(out);
      for (const im of outputs[out]!.imports) {
        if (im.kind !== 'import-statement') continue;
        if (im.external) packages.add(im.path.startsWith('@') ? im.path.split('/').slice(0, 2).join('/') : im.path.split('/')[0]!);
        else walk(im.path);
      }
    };
    walk(entry);
    walk(mainChunk);
    expect(packages.has('pino')).toBe(true); // the walk does reach the libraries every start needs
    expect(OPTIONAL.filter((p) => packages.has(p))).toEqual([]);
  });
});
