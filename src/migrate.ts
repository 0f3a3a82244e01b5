// `npm run migrate`: apply the migrations and exit (the service also applies them at boot).
import { loadConfig, ConfigError } from './config.js';
import { startEmbeddedPostgres } from './db/embedded-postgres.js';
import { runMigrations } from './db/migrate.js';
import { createLogger } from './logger.js';

try {
  const config = loadConfig(process.env, { sendsMail: false });
  const log = createLogger(config.logLevel);
  const embedded = config.databaseUrl === undefined ? await startEmbeddedPostgres(config.dataDir, log) : undefined;
  try {
    const applied = await runMigrations(config.databaseUrl ?? embedded!.url, log);
    log.info({ applied: applied.length }, applied.length > 0 ? 'migrations applied' : 'database is up to date');
  } finally {
    await embedded?.stop();
  }
} catch (error) {
  process.stderr.write(`mailoffload migrate: ${error instanceof ConfigError ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
