// The mail pipeline as a plugin: the worker pool, the task group, the dispatcher and the
// sweeper (and, when SMTP_URL is unset, the mail catcher they send to). It opens them at
// boot and, on close, carries out steps 3 to 5 of the shutdown sequence for them.
import { hostname } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import fp from 'fastify-plugin';
import { Piscina } from 'piscina';
import type { Config } from '../config.js';
import type { MailResult, MailTask, WorkerSettings } from '../mail/contract.js';
import { startMailCatcher, type MailCatcher } from '../mail/catcher.js';
import { Dispatcher } from '../mail/dispatcher.js';
import { Sweeper } from '../mail/sweeper.js';
import type { Metrics } from '../metrics.js';
import { TaskGroup } from '../task-group.js';

export interface Mailer {
  /** The lease owner id of this instance: host, pid and a random suffix. */
  readonly owner: string;
  readonly pool: Piscina<MailTask, MailResult[]>;
  readonly group: TaskGroup;
  readonly dispatcher: Dispatcher;
  readonly sweeper: Sweeper;
  readonly catcher: MailCatcher | undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    mailer: Mailer;
  }
}

const workerFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../workers/mail-worker.js');
const CLAIM_LIMIT = 500;

export default fp<{ config: Config; metrics: Metrics }>(
  async (app, { config, metrics }) => {
    const log = app.log.child({ component: 'mailer' });
    const owner = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
    if (config.mail.leaseMs <= config.mail.sendTimeoutMs) {
      // Leases are not renewed while a send runs: a lease shorter than the send timeout lets
      // another instance take over a slow send and deliver the email twice.
      log.warn({ leaseMs: config.mail.leaseMs, sendTimeoutMs: config.mail.sendTimeoutMs }, 'MAIL_LEASE_MS is not above MAIL_SEND_TIMEOUT_MS: slow sends may be duplicated');
    }

    let catcher: MailCatcher | undefined;
    if (config.smtpUrl === undefined) {
      catcher = await startMailCatcher(path.join(config.dataDir, 'mailbox'), log);
      // Registered before the pool's hook, so it stops after the pool is destroyed.
      app.addHook('onClose', () => catcher!.stop());
    }

    const settings: WorkerSettings = {
      smtpUrl: config.smtpUrl ?? catcher!.url,
      from: config.mailFrom,
      messageIdDomain: config.mail.messageIdDomain,
      welcomeTemplates: config.mail.welcomeTemplates,
      smtpConnections: config.mail.smtpConnections,
      sendTimeoutMs: config.mail.sendTimeoutMs,
      nice: config.mail.workerNice,
      tlsRejectUnauthorized: true,
      requireTls: config.smtpRequireTls,
      ...(config.mail.dkim ? { dkim: config.mail.dkim } : {}),
    };
    const pool = new Piscina<MailTask, MailResult[]>({
      filename: workerFile,
      minThreads: config.mail.workers,
      maxThreads: config.mail.workers,
      idleTimeout: Number.POSITIVE_INFINITY,
      // A worker spends its time waiting on SMTP sockets: let it run many tasks at once.
      concurrentTasksPerWorker: config.mail.concurrencyPerWorker,
      // 'sync' (the default) blocks an idle worker's event loop in Atomics.wait, which stalls
      // the pooled SMTP connections it owns.
      atomics: 'disabled',
      // The dispatcher never holds more than maxInFlight jobs, so this bound is a backstop.
      maxQueue: config.mail.maxInFlight,
      workerData: settings,
    });
    // Without a listener, a worker that dies outside a task takes the process down.
    pool.on('error', (err: Error) => log.error({ err }, 'mail worker thread failed; the pool replaces it'));

    const group = new TaskGroup((err, context) => log.error({ err, ...context }, 'background task failed'));
    const dispatcher = new Dispatcher(pool, app.db, group, {
      owner,
      maxInFlight: config.mail.maxInFlight,
      batchSize: config.mail.batchSize,
      messageIdDomain: config.mail.messageIdDomain,
      maxAttempts: config.mail.maxAttempts,
      retryBaseMs: config.mail.retryBaseMs,
      retryMaxMs: config.mail.retryMaxMs,
    }, log, metrics);
    const sweeper = new Sweeper(app.db, dispatcher, group, {
      owner,
      intervalMs: config.mail.sweepIntervalMs,
      leaseMs: config.mail.leaseMs,
      claimLimit: CLAIM_LIMIT,
    }, log);

    metrics.gauge('mailoffload_pool_queue_size', 'Tasks waiting in the worker pool queue', () => pool.queueSize);
    metrics.gauge('mailoffload_pool_threads', 'Worker threads in the pool', () => pool.threads.length);
    metrics.gauge('mailoffload_pool_utilization', 'Share of the pool\'s capacity in use since start (0-1)', () => pool.utilization);
    metrics.gauge('mailoffload_task_group_pending', 'Emails tracked in the task group', () => group.size);
    metrics.gauge('mailoffload_emails_in_flight', 'Emails held in memory by the dispatcher', () => dispatcher.inFlight);

    app.decorate('mailer', { owner, pool, group, dispatcher, sweeper, catcher });

    // At boot the sweeper picks up what a previous instance released or left behind.
    app.addHook('onReady', async () => sweeper.start());

    // Step 1 of the shutdown: claim nothing new. (Readiness flips in the lifecycle plugin.)
    app.addHook('preClose', () => sweeper.stop());

    // Steps 3 to 5, after the HTTP server has closed and in-flight requests have finished.
    app.addHook('onClose', async () => {
      await sweeper.stop();
      dispatcher.flush();
      group.close();
      const started = app.lifecycle.drainingSince || Date.now();
      const remainingMs = config.shutdownTimeoutMs - (Date.now() - started);
      log.info({ pending: group.size, deadlineMs: Math.max(0, remainingMs) }, 'completing background tasks');
      const result = await group.wait(remainingMs);
      if (!result.drained) {
        // The next instance sends these at once instead of waiting for the lease to expire.
        dispatcher.abandon();
        const released = await dispatcher.releaseAll().catch((err: unknown) => {
          log.error({ err }, 'could not release unfinished emails; their leases will expire instead');
          return 0;
        });
        log.warn({ pending: result.pending, released }, 'shutdown deadline reached: unfinished emails released to the outbox');
      }
      await pool.destroy();
    });
  },
  { name: 'mailer', dependencies: ['database', 'lifecycle'] },
);
