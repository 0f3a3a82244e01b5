// `npm test`: runs every test file with node:test against a real PostgreSQL. With
// TEST_DATABASE_URL unset it starts the embedded PostgreSQL in a temporary folder (readable
// by the `postgres` user when we are root) and stops it afterwards. Each test file creates
// its own database from that server, so files cannot see each other's data.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { createLogger } from '../src/logger.js';
import { databaseServer } from '../test/support/database.js';
import { projectRoot } from '../test/support/env.js';
import { cleanUpOnInterrupt, CleanupStack } from '../test/support/scope.js';

const testDir = path.join(projectRoot, 'dist/test');
const only = process.argv.slice(2);
const files = readdirSync(testDir)
  .filter((name) => name.endsWith('.test.js'))
  .filter((name) => only.length === 0 || only.some((filter) => name.includes(filter)))
  .sort()
  .map((name) => path.join(testDir, name));

// Every test file ends with the kit's leak check, which it loads through the kit's index or
// directly: a file that loads neither would go unchecked.
const unchecked = files.filter((file) => !/from '\.\/support\/index\.js'|import '\.\/support\/leak-check\.js'/.test(readFileSync(file, 'utf8')));
if (unchecked.length > 0) {
  process.stderr.write(`npm test: these test files do not load test/support (index.js or leak-check.js): ${unchecked.map((file) => path.basename(file)).join(', ')}\n`);
  process.exit(1);
}

const cleanup = new CleanupStack();
cleanUpOnInterrupt(cleanup);
const log = createLogger(process.env.LOG_LEVEL ?? 'warn');
const databaseUrl = await databaseServer(cleanup, process.env.TEST_DATABASE_URL, log, 'test');

const code = await new Promise<number>((resolve) => {
  const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...files], {
    stdio: 'inherit',
    env: { ...process.env, TEST_DATABASE_URL: databaseUrl },
  });
  child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
});
await cleanup.run();
process.exit(code);
