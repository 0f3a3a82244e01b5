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
import { settleBy } from '../deadline.js';
import type { Log } from '../logger.js';
import type { Metrics } from '../metrics.js';
import { TaskGroup } from '../task-group.js';
import type { MailResult, MailTask, WorkerSettings } from './contract.js';
import { Dispatcher } from './dispatcher.js';
import { newLeaseOwner, type Lease } from './leases.js';
import { SendQuota } from './send-quota.js';
import { Sweeper } from './sweeper.js';
import { watchThreadLoading, type ThreadLoading } from '../thread-loading.js';

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
/** Emails in the worker pool per SMTP connection (the rest wait in the dispatcher's queue). */
const POOL_MESSAGES_PER_CONNECTION = 2;
/** How long past the deadline the release of unfinished emails may take before the process gives up on it. */
const RELEASE_GRACE_MS = 1000;

export class MailPipeline {
  /** This instance's lease owner id, also its name in the healthcheck. */
  readonly owner = newLeaseOwner();
  readonly #lease: Lease;
  readonly #log: Log;
  readonly #metrics: Metrics;
  readonly #pool: Piscina<MailTask, MailResult[]>;
  readonly #threadLoading: ThreadLoading;
  readonly #group: TaskGroup;
  readonly #dispatcher: Dispatcher;
  readonly #sweeper: Sweeper;
  readonly #quota: SendQuota;

  constructor({ config, smtpUrl, db, log, metrics }: MailPipelineOptions) {
    this.#log = log;
    this.#metrics = metrics;
    this.#lease = { owner: this.owner, ms: config.mail.leaseMs };
    const handBack = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    this.#pool = createWorkerPool(config, smtpUrl, handBack, log);
    this.#threadLoading = watchThreadLoading(this.#pool);
    this.#group = new TaskGroup((err, context) => log.error({ err, ...context }, 'background task failed'));
    const { mail } = config;
    this.#quota = new SendQuota({ db, log, metrics, ratePerSecond: mail.ratePerSecond });
    this.#dispatcher = new Dispatcher({
      pool: this.#pool,
      db,
      group: this.#group,
      log,
      metrics,
      lease: this.#lease,
      quota: this.#quota,
      handBack: new Int32Array(handBack),
      maxInFlight: mail.maxInFlight,
      // Two messages per SMTP connection: one being sent, one ready for the moment it is done.
      poolWindow: POOL_MESSAGES_PER_CONNECTION * mail.workers * mail.smtpConnections,
      // A task runs on one worker: no larger than that worker's share of the window, or one batch
      // fills the whole window and the other workers' connections sit idle.
      batchSize: Math.min(mail.batchSize, POOL_MESSAGES_PER_CONNECTION * mail.smtpConnections),
      batchWaitMs: mail.batchWaitMs,
      messageIdDomain: mail.messageIdDomain,
      retry: { maxAttempts: mail.maxAttempts, giveUpAfterMs: mail.giveUpAfterMs, retryBaseMs: mail.retryBaseMs, retryMaxMs: mail.retryMaxMs },
      breaker: { threshold: mail.breakerThreshold, probeMs: mail.breakerProbeMs },
    });
    this.#sweeper = new Sweeper({ db, dispatcher: this.#dispatcher, log, lease: this.#lease, intervalMs: mail.sweepIntervalMs, claimLimit: CLAIM_LIMIT });
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
    // The lease runs from the statement's start (the database's now() can only be later).
    const leaseFrom = Date.now();
    let record: SignupRecord;
    try {
      record = await write(dispatchNow ? this.#lease : undefined);
    } catch (error) {
      if (dispatchNow) this.#dispatcher.cancel();
      throw error;
    }
    const { user, outboxId, generation } = record;
    if (dispatchNow) this.#dispatcher.submit({ outboxId, userId: user.id, name: user.name, email: user.email, token }, generation, leaseFrom + this.#lease.ms);
    else this.#metrics.signupsDeferred.inc();
    return record;
  }

  /**
   * At boot: the send quota takes the configured rate, the lease heartbeat starts, and the
   * sweeper picks up what a previous instance released or left behind.
   */
  async start(): Promise<void> {
    await this.#quota.start();
    this.#dispatcher.start();
    this.#sweeper.start();
  }

  /**
   * Shutdown step 1: claim nothing new. Resolves once a sweep under way has dispatched what it
   * claimed, or at `deadlineAt` if the database hangs.
   */
  async stopClaiming(deadlineAt: number): Promise<void> {
    await settleBy(this.#sweeper.stop(), deadlineAt);
  }

  /**
   * Shutdown steps 3 and 4. Emails not yet on an SMTP connection go back to the outbox at once,
   * due now for another instance; the task group then holds only messages being transmitted
   * (and their result writes), and is waited for until `deadlineAt` (a Date.now() value). Past
   * it, the pool is destroyed first, so no worker can still send, and only then is every email
   * without a recorded result released. Each database step is bounded, so a database that hangs
   * cannot hold the exit.
   */
  async drain(deadlineAt: number): Promise<void> {
    await settleBy(this.#sweeper.stop(), deadlineAt);
    this.#group.close();
    const handedBack = await settleBy(this.#dispatcher.handBack(), deadlineAt);
    this.#log.info(
      { pending: this.#group.size, handedBack: handedBack.timedOut ? null : handedBack.value, deadlineMs: Math.max(0, deadlineAt - Date.now()) },
      'completing background tasks',
    );
    const result = await this.#group.wait(deadlineAt - Date.now());
    if (!result.drained) {
      // Destroy first: a worker must not send an email after it was released to another instance.
      this.#dispatcher.abandon();
      // A thread still loading its modules (a shutdown right after boot) is waited for first.
      await this.#threadLoading.destroyPool(deadlineAt + RELEASE_GRACE_MS);
      const released = await settleBy(this.#dispatcher.releaseUnfinished(), deadlineAt + RELEASE_GRACE_MS);
      if (released.timedOut) this.#log.error({ pending: result.pending }, 'could not release unfinished emails in time; their leases will expire instead');
      else this.#log.warn({ pending: result.pending, released: released.value }, 'shutdown deadline reached: unfinished emails released to the outbox');
    } else {
      await this.#threadLoading.destroyPool(deadlineAt);
    }
    this.#dispatcher.stop();
    this.#quota.stop();
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

/** The mail worker pool exactly as the service runs it (also started on its own by a test fixture). */
export function createWorkerPool(config: Config, smtpUrl: string, handBack: SharedArrayBuffer, log: Log): Piscina<MailTask, MailResult[]> {
  const settings: WorkerSettings = {
    smtpUrl,
    handBack,
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
    // The dispatcher hands the pool a small window of emails at a time, so this bound is a backstop.
    maxQueue: config.mail.maxInFlight,
    workerData: settings,
  });
  // Without a listener, a worker that dies outside a task takes the process down.
  pool.on('error', (err: Error) => log.error({ err }, 'mail worker thread failed; the pool replaces it'));
  return pool;
}
