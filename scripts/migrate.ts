// `npm run migrate`: apply the migrations and exit (the service also applies them at boot).
import { loadConfig, ConfigError } from '../src/config.js';
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.js';
import { runMigrations } from '../src/db/migrations.js';
import { createLogger } from '../src/logger.js';

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
