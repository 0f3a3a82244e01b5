// `npm test`: runs every test file with node:test against a real PostgreSQL. With
// TEST_DATABASE_URL unset it starts the embedded PostgreSQL in a temporary folder and stops
// it afterwards. Each test file creates its own database from that server, so files cannot
// see each other's data.
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.js';
import { createLogger } from '../src/logger.js';

const testDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test');
const only = process.argv.slice(2);
const files = readdirSync(testDir)
  .filter((name) => name.endsWith('.test.js'))
  .filter((name) => only.length === 0 || only.some((filter) => name.includes(filter)))
  .sort()
  .map((name) => path.join(testDir, name));

const log = createLogger(process.env.LOG_LEVEL ?? 'warn');
let databaseUrl = process.env.TEST_DATABASE_URL;
let stopDatabase = async () => {};
if (!databaseUrl) {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'mailoffload-test-'));
  // mkdtemp makes the folder 0700; opened, the postgres user (when we are root) can keep the
  // cluster in it, rather than under /var/lib/mailoffload.
  chmodSync(dataDir, 0o755);
  const embedded = await startEmbeddedPostgres(dataDir, log);
  databaseUrl = embedded.url;
  stopDatabase = async () => {
    await embedded.stop();
    // The cluster too when it was placed outside (a TMPDIR the postgres user cannot enter).
    rmSync(realpathSync(path.join(dataDir, 'pg')), { recursive: true, force: true });
    rmSync(dataDir, { recursive: true, force: true });
  };
}

const code = await new Promise<number>((resolve) => {
  const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...files], {
    stdio: 'inherit',
    env: { ...process.env, TEST_DATABASE_URL: databaseUrl },
  });
  child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 1 : 0)));
});
await stopDatabase();
process.exit(code);
