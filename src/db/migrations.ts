// Migrations: numbered, forward-only SQL files in migrations/, applied by node-pg-migrate.
// It records them in the pgmigrations table and holds an advisory lock while it runs, so
// instances booting together apply each file once; with advisoryLockMode 'wait' the second
// instance waits for the first instead of failing its boot.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import type { Log } from '../logger.js';

export const migrationsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../migrations');

export async function runMigrations(databaseUrl: string, log: Log): Promise<string[]> {
  const applied = await runner({
    databaseUrl,
    dir: migrationsDir,
    direction: 'up',
    migrationsTable: 'pgmigrations',
    count: Number.POSITIVE_INFINITY,
    advisoryLockMode: 'wait',
    checkOrder: true,
    log: () => undefined,
    logger: { debug: () => undefined, info: () => undefined, warn: (m: string) => log.warn(m), error: (m: string) => log.error(m) },
  });
  const names = applied.map((migration) => migration.name);
  if (names.length > 0) log.info({ migrations: names }, 'migrations applied');
  return names;
}
