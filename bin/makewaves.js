#!/usr/bin/env node
// The operator CLI. The suite is written in TypeScript and run through tsx's
// loader, so there is no build step between a clone and a running server.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/index.ts');
process.exitCode = await main(process.argv.slice(2));
