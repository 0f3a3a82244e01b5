// The mail pipeline: the worker pool, the task group, the dispatcher and the sweeper, built
// together and driven through a few calls. Routes use sendWelcome(); the mailer plugin calls
// start() at boot, stopClaiming() when shutdown begins and drain() after the HTTP server has
// closed (steps 3 and 4 of the shutdown sequence).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { Piscina } from 'piscina';
import type { Config } from '../config.js';
import type { SignupRecord } from '../db/signups.js';
import type { Log } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { TaskGroup } from '../task-group.js';
import type { MailResult, MailTask, WorkerSettings } from './contract.js';
import { Dispatcher } from './dispatcher.js';
import { newLeaseOwner, type Lease } from './leases.js';
import { Sweeper } from './sweeper.js';

export interface MailPipelineOptions {
  readonly config: Config;
  /** Where the workers send: SMTP_URL, or the built-in catcher's address. */
  readonly smtpUrl: string;
  readonly db: pg.Pool;
  readonly log: Log;
  readonly metrics: Metrics;
}

const workerFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../workers/mail-worker.js');
/** Rows per sweeper claim query. */
const CLAIM_LIMIT = 500;

export class MailPipeline {
  /** This instance's lease owner id, also its name in the healthcheck. */
  readonly owner = newLeaseOwner();
  readonly #lease: Lease;
  readonly #config: Config;
  readonly #log: Log;
  readonly #metrics: Metrics;
  readonly #pool: Piscina<MailTask, MailResult[]>;
  readonly #group: TaskGroup;
  readonly #dispatcher: Dispatcher;
  readonly #sweeper: Sweeper;

  constructor({ config, smtpUrl, db, log, metrics }: MailPipelineOptions) {
    this.#config = config;
    this.#log = log;
    this.#metrics = metrics;
    this.#lease = { owner: this.owner, ms: config.mail.leaseMs };
    this.#pool = createWorkerPool(config, smtpUrl, log);
    this.#group = new TaskGroup((err, context) => log.error({ err, ...context }, 'background task failed'));
    this.#dispatcher = new Dispatcher({
      pool: this.#pool,
      db,
      group: this.#group,
      log,
      metrics,
      owner: this.owner,
      maxInFlight: config.mail.maxInFlight,
      batchSize: config.mail.batchSize,
      messageIdDomain: config.mail.messageIdDomain,
      retry: { maxAttempts: config.mail.maxAttempts, retryBaseMs: config.mail.retryBaseMs, retryMaxMs: config.mail.retryMaxMs },
    });
    this.#sweeper = new Sweeper({ db, dispatcher: this.#dispatcher, group: this.#group, log, lease: this.#lease, intervalMs: config.mail.sweepIntervalMs, claimLimit: CLAIM_LIMIT });
    this.#registerGauges();
  }

  /** Emails held in memory (batched, queued in the pool or being sent). */
  get inFlight(): number {
    return this.#dispatcher.inFlight;
  }

  /** The parts, for tests and benchmarks that observe or stop them; the service uses the methods. */
  get internals(): { readonly pool: Piscina<MailTask, MailResult[]>; readonly dispatcher: Dispatcher; readonly sweeper: Sweeper } {
    return { pool: this.#pool, dispatcher: this.#dispatcher, sweeper: this.#sweeper };
  }

  /**
   * Writes a signup and sends its welcome email. `write` runs the signup statement; with room
   * in memory it gets a lease, so the row is born leased to this instance and is sent right
   * after COMMIT; without room (or if `write` throws) nothing is held and the row, born
   * `pending`, waits in the outbox for a sweeper.
   */
  async sendWelcome(token: string, write: (lease: Lease | undefined) => Promise<SignupRecord>): Promise<SignupRecord> {
    const dispatchNow = this.#dispatcher.tryReserve();
    let record: SignupRecord;
    try {
      record = await write(dispatchNow ? this.#lease : undefined);
    } catch (error) {
      if (dispatchNow) this.#dispatcher.cancel();
      throw error;
    }
    const { user, outboxId } = record;
    if (dispatchNow) this.#dispatcher.submit({ outboxId, userId: user.id, name: user.name, email: user.email, token });
    else this.#metrics.signupsDeferred.inc();
    return record;
  }

  /** At boot: the sweeper picks up what a previous instance released or left behind. */
  start(): void {
    this.#sweeper.start();
  }

  /** Shutdown step 1: claim nothing new. Resolves once a sweep under way has dispatched what it claimed. */
  stopClaiming(): Promise<void> {
    return this.#sweeper.stop();
  }

  /**
   * Shutdown steps 3 and 4: wait for the emails held in memory until `deadlineAt` (a
   * Date.now() value); past it, hand what is unfinished back to the outbox. Then the pool goes.
   */
  async drain(deadlineAt: number): Promise<void> {
    await this.#sweeper.stop();
    this.#dispatcher.flush();
    this.#group.close();
    const remainingMs = deadlineAt - Date.now();
    this.#log.info({ pending: this.#group.size, deadlineMs: Math.max(0, remainingMs) }, 'completing background tasks');
    const result = await this.#group.wait(remainingMs);
    if (!result.drained) {
      // The next instance sends these at once instead of waiting for the lease to expire.
      this.#dispatcher.abandon();
      const released = await this.#dispatcher.releaseAll().catch((err: unknown) => {
        this.#log.error({ err }, 'could not release unfinished emails; their leases will expire instead');
        return 0;
      });
      this.#log.warn({ pending: result.pending, released }, 'shutdown deadline reached: unfinished emails released to the outbox');
    }
    await this.#pool.destroy();
  }

  #registerGauges(): void {
    const metrics = this.#metrics;
    metrics.gauge('mailoffload_pool_queue_size', 'Tasks waiting in the worker pool queue', () => this.#pool.queueSize);
    metrics.gauge('mailoffload_pool_threads', 'Worker threads in the pool', () => this.#pool.threads.length);
    metrics.gauge('mailoffload_pool_utilization', "Share of the pool's capacity in use since start (0-1)", () => this.#pool.utilization);
    metrics.gauge('mailoffload_task_group_pending', 'Emails tracked in the task group', () => this.#group.size);
    metrics.gauge('mailoffload_emails_in_flight', 'Emails held in memory by the dispatcher', () => this.#dispatcher.inFlight);
  }
}

function createWorkerPool(config: Config, smtpUrl: string, log: Log): Piscina<MailTask, MailResult[]> {
  const settings: WorkerSettings = {
    smtpUrl,
    from: config.mailFrom,
    messageIdDomain: config.mail.messageIdDomain,
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
  return pool;
}
