// The bundle's entry (scripts/build.mjs): the CLI run with the process's arguments.
import { main } from './index.ts';

process.exitCode = await main(process.argv.slice(2));
