// PostgreSQL: the embedded server when DATABASE_URL is unset, then the pg pool, then the
// migrations, all before the server listens. onClose runs in reverse: the pool ends first,
// the embedded server stops last of all.
import fp from 'fastify-plugin';
import type pg from 'pg';
import type { Config } from '../config.js';
import { startEmbeddedPostgres } from '../db/embedded-postgres.js';
import { runMigrations } from '../db/migrations.js';
import { createPool } from '../db/pool.js';
import { settleBy } from '../deadline.js';

/** How long past the shutdown deadline closing the pool may take. */
const CLOSE_GRACE_MS = 1000;
import { Retention } from '../mail/retention.js';

declare module 'fastify' {
  interface FastifyInstance {
    db: pg.Pool;
  }
}

export default fp<{ config: Config }>(
  async (app, { config }) => {
    const log = app.log.child({ component: 'database' });
    let databaseUrl = config.databaseUrl;
    if (databaseUrl === undefined) {
      const embedded = await startEmbeddedPostgres(config.dataDir, log);
      // Registered first, so it runs after every other onClose hook of this app.
      app.addHook('onClose', () => embedded.stop());
      databaseUrl = embedded.url;
      // A boot that fails from here on never reaches onClose: stop the server we started
      // rather than leave it running in its own process group.
      await runMigrations(databaseUrl, log).catch(async (error: unknown) => {
        await embedded.stop();
        throw error;
      });
    } else {
      await runMigrations(databaseUrl, log);
    }
    const pool = createPool(databaseUrl, log, config.databaseQueryTimeoutMs, config.databasePoolMax);
    let ended = false;
    app.addHook('onClose', async () => {
      if (ended) return;
      ended = true;
      // pool.end() waits for every checked-out client; with a hung database those wait for their
      // query timeout. A second past the shutdown deadline, stop waiting: the process exits anyway.
      const deadlineAt = (app.lifecycle.drainingSince || Date.now()) + config.shutdownTimeoutMs + CLOSE_GRACE_MS;
      if ((await settleBy(pool.end(), deadlineAt)).timedOut) log.warn('database pool did not close by the shutdown deadline');
    });
    app.decorate('db', pool);
    // Retention of old sent emails and expired tokens uses this pool; registered after the
    // pool's hook, so its onClose runs first (hooks run in reverse) and it stops before the
    // pool ends. A pass stuck on a hung database is not waited for past the deadline.
    const retention = new Retention(pool, app.log.child({ component: 'retention' }), { retainSentDays: config.mail.retainSentDays });
    retention.start();
    app.addHook('onClose', async () => {
      await settleBy(retention.stop(), (app.lifecycle.drainingSince || Date.now()) + config.shutdownTimeoutMs);
    });
  },
  { name: 'database', dependencies: ['lifecycle'] },
);
