// `npm run bench -- mail`: what the mail pipeline costs against what its parts can do alone,
// measured in the same run. Each run sends --emails emails three ways, in an order rotated
// from run to run so that none always runs on a fresher machine:
//   1a. ceiling: a pooled nodemailer transporter on this process's main thread;
//   1b. ceiling: a bare Piscina pool of the app's size, one email per task, no database;
//   2.  the pipeline: pending outbox rows delivered by the real app, in this process (sweeper,
//       dispatcher, pool, SMTP, coalesced outbox updates).
// CPU per email is this process's (every thread) and, for the pipeline, PostgreSQL's too, both
// from /proc. MAIL_* variables tune the app and the ceilings as they tune the service.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Piscina } from 'piscina';
import pino from 'pino';
import { buildApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import type { MailResult, MailTask, WelcomeJob, WorkerSettings } from '../../src/mail/contract.js';
import { createDatabase } from '../../test/support/database.js';
import { FAST_ARGON2, NO_RATE_LIMITS, projectRoot, TEST_MAIL_FROM } from '../../test/support/env.js';
import { insertPendingEmails, numberedUsers } from '../../test/support/pending.js';
import { closeAtEnd, type Scope } from '../../test/support/scope.js';
import { waitUntil } from '../../test/support/wait.js';
import { createBatchSender } from '../../workers/send-batch.js';
import { startCpuWindow } from '../proc-cpu.js';
import { rotate, startRig, type Rig } from '../rig.js';
import { intOption, medianOf, type Context, type Measure, type Outcome, type Scenario } from '../scenario.js';

/** Emails sent each way before anything counts: JIT, SMTP connections, the pg pool. */
const WARMUP = 500;

type App = Awaited<ReturnType<typeof buildApp>>;

/** One way of sending: `prepare` does what is not measured and returns what is. */
interface Lane {
  readonly name: string;
  prepare(count: number, tag: string): Promise<() => Promise<void>>;
}

interface Step {
  readonly emailsPerSecond: number;
  readonly cpuMs: number;
  readonly postgresCpuMs: number;
}

function appConfig(rig: Rig, env: Record<string, string>): Config {
  // The environment's MAIL_* settings apply, as they would to the service; no signups are
  // made here, so the hash cost and the rate limits only need to be valid.
  return loadConfig({ ...FAST_ARGON2, ...process.env, ...NO_RATE_LIMITS, LOG_LEVEL: 'warn', PORT: '0', MAIL_FROM: TEST_MAIL_FROM, SMTP_URL: rig.sink.url, ...env });
}

function jobs(count: number, tag: string): WelcomeJob[] {
  return Array.from({ length: count }, (_, i) => ({ outboxId: i + 1, userId: i + 1, name: `Bench User ${i}`, email: `${tag}-${i}@example.com`, token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' }));
}

function assertSent(results: MailResult[]): void {
  const failed = results.find((r) => r.status === 'failed');
  if (failed) throw new Error(`a benchmark email failed: ${JSON.stringify(failed)}`);
}

/** 1a and 1b: the same sender the workers wrap, on this thread and in a bare pool of the app's size. */
function ceilingLanes(scope: Scope, config: Config): Lane[] {
  const { workers, concurrencyPerWorker, smtpConnections, welcomeTemplates, workerNice } = config.mail;
  const settings: WorkerSettings = {
    handBack: new SharedArrayBuffer(4),
    smtpUrl: config.smtpUrl!,
    from: config.mailFrom,
    messageIdDomain: 'mailoffload.test',
    welcomeTemplates,
    smtpConnections,
    sendTimeoutMs: 30_000,
    tlsRejectUnauthorized: true,
    // The bare pool's threads run at the app's priority: the same pool, minus the pipeline.
    nice: workerNice,
  };
  const sender = createBatchSender(settings);
  closeAtEnd(scope, () => sender.close());
  const pool = new Piscina<MailTask, MailResult[]>({
    filename: path.join(projectRoot, 'dist/workers/mail-worker.js'),
    minThreads: workers,
    maxThreads: workers,
    idleTimeout: Number.POSITIVE_INFINITY,
    concurrentTasksPerWorker: concurrencyPerWorker,
    atomics: 'disabled',
    workerData: settings,
  });
  closeAtEnd(scope, () => pool.destroy());
  return [
    { name: 'main thread', prepare: async (count, tag) => async () => assertSent(await sender.send(jobs(count, tag))) },
    { name: 'bare pool', prepare: async (count, tag) => async () => assertSent((await Promise.all(jobs(count, tag).map((job) => pool.run([job])))).flat()) },
  ];
}

/**
 * Resolves when every outbox row is sent. The database is asked only when the dispatcher holds
 * nothing (results are written before a job leaves it): polling a count every few ms would
 * spend the very CPU being measured.
 */
async function waitUntilAllSent(app: App, timeoutMs = 120_000): Promise<void> {
  let unsent: number | undefined;
  const allSent = async () => {
    if (app.mailer.inFlight !== 0) {
      unsent = undefined;
      return false;
    }
    const { rows } = await app.db.query<{ n: number }>("SELECT count(*)::int AS n FROM email_outbox WHERE status <> 'sent'");
    unsent = rows[0]!.n;
    return unsent === 0;
  };
  await waitUntil(allSent, timeoutMs, () => (unsent === undefined ? 'emails still in flight' : `${unsent} outbox rows still unsent`), 5);
}

/** 2: rows written while the sweeper is stopped; the clock runs from its start, as at boot, to the last row sent. */
async function pipelineLane(scope: Scope, rig: Rig): Promise<Lane> {
  const database = await createDatabase(scope, rig.serverUrl, 'bench');
  const app = await buildApp(appConfig(rig, { DATABASE_URL: database.url }), createLogger(process.env.LOG_LEVEL ?? 'warn', pino.destination(2)));
  closeAtEnd(scope, () => app.close());
  await app.ready();
  const { sweeper } = app.mailer.internals;
  return {
    name: 'pipeline',
    async prepare(count, tag) {
      await sweeper.stop();
      await insertPendingEmails(app.db, numberedUsers(tag, count, 'Bench User'));
      return async () => {
        sweeper.start();
        await waitUntilAllSent(app);
      };
    },
  };
}

async function timed(rig: Rig, lane: Lane, count: number, tag: string): Promise<Step> {
  const send = await lane.prepare(count, tag);
  const window = startCpuWindow(process.pid, rig.postmasterPid);
  const started = performance.now();
  await send();
  const seconds = (performance.now() - started) / 1000;
  const cpu = window.stop();
  return { emailsPerSecond: count / seconds, cpuMs: cpu.serviceMs / count, postgresCpuMs: cpu.postgresMs / count };
}

function measuresOf(steps: Map<string, Step[]>): Measure[] {
  const of = (lane: string, pick: (s: Step) => number) => steps.get(lane)!.map(pick);
  const better = steps.get('main thread')!.map((s, i) => Math.max(s.emailsPerSecond, steps.get('bare pool')![i]!.emailsPerSecond));
  return [
    { name: '1a. ceiling: nodemailer pool on the main thread', unit: 'emails/s', values: of('main thread', (s) => s.emailsPerSecond) },
    { name: '1b. ceiling: bare Piscina pool, one email per task', unit: 'emails/s', values: of('bare pool', (s) => s.emailsPerSecond) },
    { name: '2. pipeline: outbox -> sweeper -> dispatcher -> pool -> SMTP -> outbox', unit: 'emails/s', values: of('pipeline', (s) => s.emailsPerSecond) },
    { name: '2. pipeline / the better ceiling', unit: '%', values: of('pipeline', (s) => s.emailsPerSecond).map((rate, i) => (100 * rate) / better[i]!), note: 'same run' },
    { name: '1a. CPU per email', unit: 'ms', values: of('main thread', (s) => s.cpuMs), note: 'this process, every thread' },
    { name: '1b. CPU per email', unit: 'ms', values: of('bare pool', (s) => s.cpuMs), note: 'this process, every thread' },
    { name: '2. CPU per email, the app', unit: 'ms', values: of('pipeline', (s) => s.cpuMs), note: 'this process, every thread' },
    { name: '2. CPU per email, PostgreSQL', unit: 'ms', values: of('pipeline', (s) => s.postgresCpuMs), note: 'postmaster + backends' },
  ];
}

export const mail: Scenario = {
  name: 'mail',
  summary: 'the mail pipeline (outbox rows through the real app) against nodemailer on the main thread and a bare Piscina pool: emails/s, CPU per email',
  options: {
    emails: { type: 'string', default: '3000' },
  },
  async run({ args, runs, cleanup, progress }: Context): Promise<Outcome> {
    const emails = intOption(args, 'emails');
    const rig = await startRig(cleanup);
    const config = appConfig(rig, {});
    const lanes = [...ceilingLanes(cleanup, config), await pipelineLane(cleanup, rig)];
    const session = randomBytes(3).toString('hex');
    for (const lane of lanes) await (await lane.prepare(WARMUP, `warm-${lane.name.replace(' ', '-')}-${session}`))();
    const steps = new Map<string, Step[]>(lanes.map((lane) => [lane.name, []]));
    for (let run = 0; run < runs; run++) {
      for (const lane of rotate(lanes, run)) {
        const step = await timed(rig, lane, emails, `mail-${run}-${lane.name.replace(' ', '-')}-${session}`);
        steps.get(lane.name)!.push(step);
        progress(`run ${run + 1}/${runs}, ${lane.name}: ${step.emailsPerSecond.toFixed(0)} emails/s, ${step.cpuMs.toFixed(2)} ms CPU per email`);
      }
    }
    const measures = measuresOf(steps);
    const share = medianOf(measures, '2. pipeline / the better ceiling');
    const m = config.mail;
    return {
      title: `${emails} emails each way per run; MAIL_WORKERS=${m.workers} MAIL_SMTP_CONNECTIONS=${m.smtpConnections} MAIL_CONCURRENCY_PER_WORKER=${m.concurrencyPerWorker} MAIL_BATCH_SIZE=${m.batchSize} MAIL_BATCH_WAIT_MS=${m.batchWaitMs} MAIL_MAX_IN_FLIGHT=${m.maxInFlight} MAIL_WORKER_NICE=${m.workerNice}`,
      measures,
      targets: [{ name: `pipeline >= 80 % of the better ceiling, same run (median ${share.toFixed(1)} %)`, met: share >= 80 }],
      lost: 0,
      details: { emails, mail: { workers: m.workers, smtpConnections: m.smtpConnections, concurrencyPerWorker: m.concurrencyPerWorker, batchSize: m.batchSize, maxInFlight: m.maxInFlight }, runs: Object.fromEntries(steps) },
    };
  },
};
