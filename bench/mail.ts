// `npm run bench:mail`: what the mail pipeline costs and what the worker pool buys, in one run.
//   1. ceilings: N emails from a pooled nodemailer transporter on the main thread, and the same
//      through a bare Piscina pool (one email per task, no database);
//   2. the pipeline: N pending outbox rows delivered by the real app (sweeper, dispatcher, pool,
//      SMTP, outbox updates);
//   3. with DKIM on: signups/s, signup p99 and the API thread's event-loop delay p99 while the
//      signups' emails are composed and sent, through the pool vs. on the API thread.
// The SMTP sink and the load generator run in their own processes. Every figure is the median
// of BENCH_RUNS runs. MAIL_* variables tune the app as they do the service.
import { fork } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { availableParallelism, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Piscina } from 'piscina';
import pino from 'pino';
import { buildApp } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import type { MailResult, MailTask, WelcomeJob, WorkerSettings } from '../src/mail/contract.js';
import { createDatabase, databaseServer } from '../test/support/database.js';
import { FAST_ARGON2, NO_RATE_LIMITS } from '../test/support/env.js';
import { insertPendingEmails, numberedUsers } from '../test/support/pending.js';
import { cleanUpOnInterrupt, CleanupStack } from '../test/support/scope.js';
import { startSmtpSinkProcess } from '../test/support/smtp-sink-process.js';
import { waitUntil } from '../test/support/wait.js';
import { createBatchSender } from '../workers/send-batch.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const workerFile = path.resolve(here, '../workers/mail-worker.js');
const N = Number(process.env.BENCH_N ?? 3000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SIGNUPS = Number(process.env.BENCH_SIGNUPS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
/** Emails sent before anything counts: JIT, connections, the pg pool. */
const WARMUP = 500;
/** Which parts to run (default all): BENCH_PARTS=3 runs part 3 alone, while tuning. */
const PARTS = process.env.BENCH_PARTS ?? '123';
const FROM = 'Bench <no-reply@bench.test>';
const log = createLogger(process.env.LOG_LEVEL ?? 'warn', pino.destination(2));

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

function jobs(count: number, offset = 0): WelcomeJob[] {
  return Array.from({ length: count }, (_, i) => ({
    outboxId: offset + i + 1,
    userId: offset + i + 1,
    name: `Bench User ${offset + i}`,
    email: `bench-${offset + i}@example.com`,
    token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
  }));
}

/** CPU of this process (every thread) since `since`, per email. */
function cpuMsPerEmail(since: NodeJS.CpuUsage, emails: number): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000 / emails;
}

function assertSent(results: MailResult[]): void {
  const failed = results.find((r) => r.status === 'failed');
  if (failed) throw new Error(`a benchmark email failed: ${JSON.stringify(failed)}`);
}

// ---------------------------------------------------------------------------------------
// Child processes

interface LoadResult {
  durationMs: number;
  p50Ms: number;
  p99Ms: number;
  statuses: Record<string, number>;
}

async function runLoad(url: string, prefix: string, count = SIGNUPS): Promise<LoadResult> {
  const child = fork(path.join(here, 'signup-client.js'), {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, TARGET_URL: url, COUNT: String(count), CONCURRENCY: String(CONCURRENCY), PREFIX: prefix },
  });
  const [result] = (await once(child, 'message')) as [LoadResult];
  await once(child, 'exit');
  if (result.statuses['202'] !== count) throw new Error(`signups failed: ${JSON.stringify(result.statuses)}`);
  return result;
}

type App = Awaited<ReturnType<typeof buildApp>>;

function appConfig(env: Record<string, string>): Config {
  // The environment's MAIL_* settings apply, as they would to the service; cheap password
  // hashing keeps part 3 about mail rather than argon2 (override with ARGON2_*).
  // The signup rate limits would turn part 3's load into 429s: off here.
  return loadConfig({
    ...FAST_ARGON2,
    ...process.env,
    ...NO_RATE_LIMITS,
    LOG_LEVEL: 'warn',
    PORT: '0',
    MAIL_FROM: FROM,
    ...env,
  });
}

/**
 * Resolves when every outbox row is sent. The database is asked only when the dispatcher holds
 * nothing (results are written before a job leaves it): polling a count every few ms would
 * spend the very CPU being measured.
 */
async function waitUntilAllSent(app: App, timeoutMs = 120_000): Promise<void> {
  let unsent: number | undefined;
  await waitUntil(
    async () => {
      if (app.mailer.inFlight !== 0) {
        unsent = undefined;
        return false;
      }
      const { rows } = await app.db.query<{ n: number }>("SELECT count(*)::int AS n FROM email_outbox WHERE status <> 'sent'");
      unsent = rows[0]!.n;
      return unsent === 0;
    },
    timeoutMs,
    () => (unsent === undefined ? 'emails still in flight' : `${unsent} outbox rows still unsent`),
    5,
  );
}

// ---------------------------------------------------------------------------------------
// 1. Ceilings

async function ceilings(settings: WorkerSettings, workers: number, concurrency: number) {
  const sender = createBatchSender(settings);
  const pool = new Piscina<MailTask, MailResult[]>({
    filename: workerFile,
    minThreads: workers,
    maxThreads: workers,
    idleTimeout: Number.POSITIVE_INFINITY,
    concurrentTasksPerWorker: concurrency,
    atomics: 'disabled',
    workerData: settings,
  });
  const viaPool = (batch: WelcomeJob[]) => Promise.all(batch.map((job) => pool.run([job]))).then((r) => r.flat());
  try {
    assertSent(await sender.send(jobs(WARMUP)));
    assertSent(await viaPool(jobs(WARMUP)));
    const mainThread: number[] = [];
    const barePool: number[] = [];
    const cpu = { mainThread: [] as number[], barePool: [] as number[] };
    for (let run = 0; run < RUNS; run++) {
      let started = performance.now();
      let usage = process.cpuUsage();
      assertSent(await sender.send(jobs(N)));
      mainThread.push(N / ((performance.now() - started) / 1000));
      cpu.mainThread.push(cpuMsPerEmail(usage, N));
      started = performance.now();
      usage = process.cpuUsage();
      assertSent(await viaPool(jobs(N)));
      barePool.push(N / ((performance.now() - started) / 1000));
      cpu.barePool.push(cpuMsPerEmail(usage, N));
    }
    return { mainThread, barePool, cpu };
  } finally {
    sender.close();
    await pool.destroy();
  }
}

// ---------------------------------------------------------------------------------------
// 2. The pipeline

async function pipeline(serverUrl: string, smtpUrl: string) {
  const database = await createDatabase(cleanup, serverUrl, 'bench');
  const config = appConfig({ DATABASE_URL: database.url, SMTP_URL: smtpUrl });
  const app = await buildApp(config, log);
  await app.ready();
  const { sweeper } = app.mailer.internals;
  const rates: number[] = [];
  const cpuPerEmail: number[] = [];
  try {
    for (let run = -1; run < RUNS; run++) {
      const count = run < 0 ? WARMUP * 2 : N;
      // Rows are written while the sweeper is stopped, then it starts as at boot: the clock
      // runs from its first claim to the last row marked sent.
      await sweeper.stop();
      await insertPendingEmails(app.db, numberedUsers(`bench-${randomBytes(4).toString('hex')}`, count, 'Bench User'));
      const started = performance.now();
      const usage = process.cpuUsage();
      sweeper.start();
      await waitUntilAllSent(app);
      if (run < 0) continue;
      rates.push(count / ((performance.now() - started) / 1000));
      // CPU per email is steadier than a rate when other processes share the cores.
      cpuPerEmail.push(cpuMsPerEmail(usage, count));
    }
    return { rates, cpuPerEmail, config };
  } finally {
    await app.close();
  }
}

// ---------------------------------------------------------------------------------------
// 3. Signups while emails are signed and sent: pool vs. API thread

interface LoadFigures {
  signupsPerSecond: number;
  p99Ms: number;
  loopDelayP99Ms: number;
  emailsPerSecond: number;
}

async function signupsUnderMail(serverUrl: string, smtpUrl: string) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const database = await createDatabase(cleanup, serverUrl, 'bench');
  const config = appConfig({ DATABASE_URL: database.url, SMTP_URL: smtpUrl, DKIM_DOMAIN: 'bench.test', DKIM_SELECTOR: 'bench', DKIM_PRIVATE_KEY: privateKey });
  const app = await buildApp(config, log);
  const address = await app.listen({ port: 0, host: '127.0.0.1' });
  const { pool } = app.mailer.internals;

  // The on-thread variant, for this benchmark only: the dispatcher's pool.run() is pointed at
  // the same batch sender the workers use, running on the API thread.
  const onThread = createBatchSender({
    smtpUrl,
    from: config.mailFrom,
    messageIdDomain: config.mail.messageIdDomain,
    welcomeTemplates: config.mail.welcomeTemplates,
    smtpConnections: config.mail.smtpConnections * config.mail.workers,
    sendTimeoutMs: config.mail.sendTimeoutMs,
    tlsRejectUnauthorized: true,
    dkim: config.mail.dkim!,
    handBack: new SharedArrayBuffer(4),
  });
  // And a reference with no mail work at all: every job "sent" at once, nothing composed.
  const runOnPool = pool.run;
  const noMail = async (task: MailTask): Promise<MailResult[]> => task.map((job) => ({ outboxId: job.outboxId, status: 'sent' }));
  type Variant = 'pool' | 'thread' | 'none';
  const use = (variant: Variant) => {
    (pool as { run: unknown }).run = variant === 'pool' ? runOnPool : variant === 'thread' ? (task: MailTask) => onThread.send(task) : noMail;
  };
  const variants: Variant[] = ['pool', 'thread', 'none'];

  const figures = { pool: [] as LoadFigures[], thread: [] as LoadFigures[], none: [] as LoadFigures[] };
  try {
    // Warm every path up (JIT, keep-alive sockets, pg connections) before anything counts.
    for (const variant of variants) {
      use(variant);
      await runLoad(address, `warmup-${variant}-${randomBytes(3).toString('hex')}`, WARMUP);
      await waitUntilAllSent(app);
    }
    for (let run = 0; run < RUNS; run++) {
      // Rotate which variant goes first, so none always runs on a fresher machine.
      const order = [...variants.slice(run % 3), ...variants.slice(0, run % 3)];
      for (const variant of order) {
        use(variant);
        const loop = monitorEventLoopDelay({ resolution: 1 });
        loop.enable();
        const started = performance.now();
        const load = await runLoad(address, `${variant}-${run}-${randomBytes(3).toString('hex')}`);
        await waitUntilAllSent(app);
        const allSentMs = performance.now() - started;
        loop.disable();
        const result = {
          signupsPerSecond: SIGNUPS / (load.durationMs / 1000),
          p99Ms: load.p99Ms,
          loopDelayP99Ms: loop.percentile(99) / 1e6,
          emailsPerSecond: SIGNUPS / (allSentMs / 1000),
        };
        figures[variant].push(result);
        console.error(`     ${variant.padEnd(6)} ${Object.entries(result).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);
      }
    }
  } finally {
    use('pool');
    await app.close();
    onThread.close();
  }
  const summary = (list: LoadFigures[]): LoadFigures => ({
    signupsPerSecond: median(list.map((f) => f.signupsPerSecond)),
    p99Ms: median(list.map((f) => f.p99Ms)),
    loopDelayP99Ms: median(list.map((f) => f.loopDelayP99Ms)),
    emailsPerSecond: median(list.map((f) => f.emailsPerSecond)),
  });
  return { pool: summary(figures.pool), thread: summary(figures.thread), none: summary(figures.none) };
}

// ---------------------------------------------------------------------------------------

const cleanup = new CleanupStack();
cleanUpOnInterrupt(cleanup);
const sink = await startSmtpSinkProcess(cleanup);
const serverUrl = await databaseServer(cleanup, process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL, log, 'bench');
const benchStarted = performance.now();
try {
  const probeConfig = appConfig({ SMTP_URL: sink.url });
  const { workers, concurrencyPerWorker, smtpConnections } = probeConfig.mail;
  const loadBefore = loadavg()[0]!;
  const settings: WorkerSettings = {
    handBack: new SharedArrayBuffer(4),
    smtpUrl: sink.url,
    from: FROM,
    messageIdDomain: 'bench.test',
    welcomeTemplates: probeConfig.mail.welcomeTemplates,
    smtpConnections,
    sendTimeoutMs: 30_000,
    tlsRejectUnauthorized: true,
    // The bare pool's threads run at the app's priority: the same pool, minus the pipeline.
    nice: probeConfig.mail.workerNice,
  };
  console.error(`bench:mail: N=${N}, runs=${RUNS}, ${workers} workers x ${smtpConnections} SMTP connections x ${concurrencyPerWorker} tasks`);
  const skipped = { signupsPerSecond: NaN, p99Ms: NaN, loopDelayP99Ms: NaN, emailsPerSecond: NaN };
  const ceiling = PARTS.includes('1') ? await ceilings(settings, workers, concurrencyPerWorker) : { mainThread: [NaN], barePool: [NaN], cpu: { mainThread: [NaN], barePool: [NaN] } };
  console.error('  1. ceilings done');
  const piped = PARTS.includes('2') ? await pipeline(serverUrl, sink.url) : { rates: [NaN], cpuPerEmail: [NaN], config: probeConfig };
  console.error('  2. pipeline done');
  const load = PARTS.includes('3') ? await signupsUnderMail(serverUrl, sink.url) : { pool: skipped, thread: skipped, none: skipped };
  console.error('  3. signups under mail done');

  const mainThread = median(ceiling.mainThread);
  const barePool = median(ceiling.barePool);
  const best = Math.max(mainThread, barePool);
  const pipelineRate = median(piped.rates);
  const m = piped.config.mail;
  const fmt = (value: number, digits = 0) => value.toFixed(digits);
  const pct = (value: number) => `${fmt(value * 100)} %`;
  const rows: string[][] = [
    ['1a. ceiling: nodemailer pool on the main thread', `${fmt(mainThread)} emails/s`, pct(mainThread / best)],
    ['1b. ceiling: bare Piscina pool, one email per task', `${fmt(barePool)} emails/s`, pct(barePool / best)],
    ['2. pipeline: outbox -> sweeper -> dispatcher -> pool -> SMTP -> outbox', `${fmt(pipelineRate)} emails/s`, `${pct(pipelineRate / best)} of the better ceiling (target >= 80 %)`],
    ['1a. CPU per email (this process, all threads)', `${fmt(median(ceiling.cpu.mainThread), 2)} ms`, ''],
    ['1b. CPU per email', `${fmt(median(ceiling.cpu.barePool), 2)} ms`, ''],
    ['2. CPU per email (PostgreSQL not included)', `${fmt(median(piped.cpuPerEmail), 2)} ms`, `${fmt(median(piped.cpuPerEmail) / median(ceiling.cpu.barePool), 2)}x the bare pool`],
    ['3. DKIM, pool: signups/s', fmt(load.pool.signupsPerSecond), `${fmt(load.pool.signupsPerSecond / load.thread.signupsPerSecond, 2)}x on-thread`],
    ['3. DKIM, on the API thread: signups/s', fmt(load.thread.signupsPerSecond), ''],
    ['3. reference, no mail work at all: signups/s', fmt(load.none.signupsPerSecond), `p99 ${fmt(load.none.p99Ms, 1)} ms, loop delay p99 ${fmt(load.none.loopDelayP99Ms, 1)} ms`],
    ['3. DKIM, pool: signup p99', `${fmt(load.pool.p99Ms, 1)} ms`, `${fmt(load.pool.p99Ms / load.thread.p99Ms, 2)}x on-thread`],
    ['3. DKIM, on the API thread: signup p99', `${fmt(load.thread.p99Ms, 1)} ms`, ''],
    ['3. DKIM, pool: API event-loop delay p99', `${fmt(load.pool.loopDelayP99Ms, 1)} ms`, `target < 20 ms`],
    ['3. DKIM, on the API thread: API event-loop delay p99', `${fmt(load.thread.loopDelayP99Ms, 1)} ms`, ''],
    ['3. DKIM, pool: emails/s while signing up', fmt(load.pool.emailsPerSecond), `${fmt(load.pool.emailsPerSecond / load.thread.emailsPerSecond, 2)}x on-thread`],
    ['3. DKIM, on the API thread: emails/s while signing up', fmt(load.thread.emailsPerSecond), ''],
  ];
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c]!.length), 8));
  const line = (cells: string[]) => `| ${cells.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
  console.log(`\nbench:mail — medians of ${RUNS}; N=${N} emails for 1-2, ${SIGNUPS} signups at concurrency ${CONCURRENCY} for 3`);
  console.log(
    `app: MAIL_WORKERS=${m.workers} MAIL_SMTP_CONNECTIONS=${m.smtpConnections} MAIL_CONCURRENCY_PER_WORKER=${m.concurrencyPerWorker} ` +
      `MAIL_BATCH_SIZE=${m.batchSize} MAIL_MAX_IN_FLIGHT=${m.maxInFlight} MAIL_WORKER_NICE=${m.workerNice}; ${availableParallelism()} cores, ` +
      `1-min load average ${loadBefore.toFixed(1)} before, ${loadavg()[0]!.toFixed(1)} after (other processes skew every figure)\n`,
  );
  console.log(line(['measure', 'median', 'ratio']));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const row of rows) console.log(line(row));
  const verdicts = [
    [`2 >= 80 % of the better ceiling`, pipelineRate >= 0.8 * best],
    ['3 pool signups/s >= on-thread', load.pool.signupsPerSecond >= load.thread.signupsPerSecond],
    ['3 pool p99 <= on-thread', load.pool.p99Ms <= load.thread.p99Ms],
    ['3 pool event-loop delay p99 < 20 ms', load.pool.loopDelayP99Ms < 20],
  ] as const;
  console.log(`\n${verdicts.map(([name, ok]) => `${ok ? 'PASS' : 'FAIL'} ${name}`).join('\n')}`);
  console.log(`runs: 1a ${ceiling.mainThread.map((v) => fmt(v)).join(', ')}; 1b ${ceiling.barePool.map((v) => fmt(v)).join(', ')}; 2 ${piped.rates.map((v) => fmt(v)).join(', ')}`);
  console.log(`(${fmt((performance.now() - benchStarted) / 1000)} s)`);
} finally {
  await cleanup.run();
}
