// `npm run bench:offload`: what offloading the welcome email buys. One run, same workload,
// three signup handlers:
//   (a) this service: worker pool + outbox (dist/src/server.js)
//   (b) `await sendMail` on the API thread before replying
//   (c) sendMail on the API thread, fire and forget (no tracking)
// For each: requests/s, p99, API event-loop delay p99, and emails lost when SIGTERM arrives
// mid-run. Then the CPU the mail path costs the service per delivered email.
//
//   npm run bench:offload -- [--duration 10] [--sigterm-duration 4] [--connections 50]
//        [--argon2-memory-kib 64 --argon2-iterations 1] [--smtp-latency-ms 10] [--no-dkim]
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { runMigrations } from '../src/db/migrations.js';
import { createLogger } from '../src/logger.js';
import { createDatabase, databaseServer, tempDir } from '../test/support/database.js';
import { projectRoot, TEST_MAIL_FROM } from '../test/support/env.js';
import { histogramQuantile, scrape, type Scrape } from '../test/support/prom.js';
import { cleanUpOnInterrupt, CleanupStack } from '../test/support/scope.js';
import { startService, type ServiceProcess } from '../test/support/service.js';
import { startSmtpSinkProcess } from '../test/support/smtp-sink-process.js';
import { awaitDelivery, exitCodeOf, finish, fmt, non2xxOf, printTable, runSignups, summaryLine } from './common.js';

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    'sigterm-duration': { type: 'string', default: '4' },
    connections: { type: 'string', default: '50' },
    'argon2-memory-kib': { type: 'string', default: '64' },
    'argon2-iterations': { type: 'string', default: '1' },
    'smtp-latency-ms': { type: 'string', default: '10' },
    'no-dkim': { type: 'boolean', default: false },
    workers: { type: 'string', default: '2' },
    'drain-timeout': { type: 'string', default: '60' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(`usage: npm run bench:offload -- [--duration S] [--sigterm-duration S] [--connections N]
  [--argon2-memory-kib N] [--argon2-iterations N] [--smtp-latency-ms MS] [--no-dkim] [--workers N] [--drain-timeout S]
env: DATABASE_URL (a server where the bench may CREATE DATABASE; default: an embedded PostgreSQL)\n`);
  process.exit(0);
}

const durationS = Number(args.duration);
const sigtermS = Number(args['sigterm-duration']);
const connections = Number(args.connections);
const latencyMs = Number(args['smtp-latency-ms']);
const workers = Number(args.workers);
const smtpConnectionsPerWorker = 5; // the service's MAIL_SMTP_CONNECTIONS default
const drainTimeoutMs = Number(args['drain-timeout']) * 1000;
const dkimOn = !args['no-dkim'];
const log = createLogger('warn');
const variantEntry = path.join(projectRoot, 'dist/bench/offload-variant.js');

type VariantName = 'a' | 'b' | 'c';
const labels: Record<VariantName | 'baseline', string> = {
  a: '(a) pool + outbox (this service)',
  b: '(b) await sendMail on the API thread',
  c: '(c) fire-and-forget on the API thread',
  baseline: 'email-disabled baseline (this service)',
};

interface Measured {
  rps: number;
  p99: number;
  loopP99Ms: number | undefined;
  accepted: number;
  delivered: number;
  lost: number;
  duplicates: number;
  drainMs: number | undefined;
  cpuS: number;
  non2xx: Record<string, number>;
}

interface SigtermRun {
  accepted: number;
  delivered: number;
  lost: number;
  exit: string;
  successor: boolean;
}

const cleanup = new CleanupStack();
cleanUpOnInterrupt(cleanup);

try {
  const serverUrl = await databaseServer(cleanup, process.env.DATABASE_URL, log, 'offload');
  const sink = await startSmtpSinkProcess(cleanup, { latencyMs });
  const dataDir = tempDir(cleanup, 'offload');

  const dkimEnv: Record<string, string> = {};
  if (dkimOn) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    Object.assign(dkimEnv, { DKIM_DOMAIN: 'mailoffload.test', DKIM_SELECTOR: 'bench', DKIM_PRIVATE_KEY: privateKey });
  }
  const commonEnv = {
    DATA_DIR: dataDir,
    MAIL_FROM: TEST_MAIL_FROM,
    ARGON2_MEMORY_KIB: args['argon2-memory-kib']!,
    ARGON2_ITERATIONS: args['argon2-iterations']!,
    LOG_LEVEL: 'info',
    ...dkimEnv,
  };

  process.stderr.write(
    `bench:offload: ${connections} connections, ${durationS} s per variant (+ a ${sigtermS} s run with SIGTERM at ${sigtermS / 2} s); ` +
      `argon2id ${args['argon2-memory-kib']} KiB / ${args['argon2-iterations']} iteration(s): deliberately cheap, so the mail path, not password hashing, is what is measured; ` +
      `SMTP latency ${latencyMs} ms per message; DKIM ${dkimOn ? 'on (RSA-2048, generated for this run)' : 'off'}; ` +
      `${workers} mail workers x ${smtpConnectionsPerWorker} SMTP connections, and the same ${workers * smtpConnectionsPerWorker} pooled connections for (b) and (c); ` +
      'rate limiting off (RATE_LIMIT_PER_MINUTE=0, RATE_LIMIT_GLOBAL_PER_MINUTE=0)\n',
  );

  /** A fresh database (migrated for the variants; the service migrates itself), dropped at the end. */
  const freshDatabase = async (migrate: boolean) => {
    const { url } = await createDatabase(cleanup, serverUrl, 'offload');
    if (migrate) await runMigrations(url, log);
    return url;
  };

  const start = (variant: VariantName | 'baseline', databaseUrl: string, smtpUrl: string, extraEnv: Record<string, string> = {}): Promise<ServiceProcess> => {
    const env = { ...commonEnv, DATABASE_URL: databaseUrl, SMTP_URL: smtpUrl, MAIL_WORKERS: String(workers), ...extraEnv };
    const options = { name: labels[variant], readyTimeoutMs: 90_000, graceMs: 40_000 };
    if (variant === 'a' || variant === 'baseline') return startService(cleanup, env, options);
    const variantEnv = { ...env, VARIANT: variant === 'b' ? 'await' : 'fire', SMTP_CONNECTIONS: String(workers * smtpConnectionsPerWorker) };
    return startService(cleanup, variantEnv, { ...options, entry: variantEntry });
  };

  const cpuOf = (after: Scrape | undefined, before: Scrape) => (after?.value('process_cpu_seconds_total') ?? NaN) - (before.value('process_cpu_seconds_total') ?? NaN);

  /** The throughput run: load for durationS, then every accepted email delivered. */
  const measure = async (variant: VariantName): Promise<Measured> => {
    process.stderr.write(`\nbench:offload: ${labels[variant]}: ${durationS} s of signups\n`);
    const databaseUrl = await freshDatabase(variant !== 'a');
    const service = await start(variant, databaseUrl, sink.url);
    try {
      const before = await scrape(service.url);
      const { summary, accepted } = await runSignups(cleanup, { targets: [service.url], concurrency: connections, maxDurationMs: durationS * 1000, requestTimeoutMs: 30_000, prefix: `off${variant}` });
      const loadEndedAt = Date.now();
      const afterLoad = await scrape(service.url);
      const delivery = await awaitDelivery(sink, accepted, loadEndedAt, drainTimeoutMs);
      const afterDrain = await scrape(service.url).catch(() => undefined);
      return {
        rps: summary.requestsPerSecond,
        p99: summary.latencyMs.p99,
        loopP99Ms: scaled(histogramQuantile('mailoffload_eventloop_delay_seconds', 0.99, afterLoad, before)),
        accepted: accepted.size,
        delivered: delivery.delivered,
        lost: delivery.lost,
        duplicates: delivery.duplicates,
        drainMs: delivery.drainMs,
        cpuS: cpuOf(afterDrain, before),
        non2xx: non2xxOf(summary.byStatus),
      };
    } finally {
      await service.stop();
    }
  };

  /** SIGTERM in the middle of a run; (a) then gets a successor on its database, as in a redeploy. */
  const sigterm = async (variant: VariantName): Promise<SigtermRun> => {
    process.stderr.write(`\nbench:offload: ${labels[variant]}: ${sigtermS} s of signups, SIGTERM at ${sigtermS / 2} s\n`);
    const databaseUrl = await freshDatabase(variant !== 'a');
    const service = await start(variant, databaseUrl, sink.url);
    const timer = setTimeout(() => service.kill('SIGTERM'), (sigtermS * 1000) / 2);
    const { accepted } = await runSignups(cleanup, { targets: [service.url], concurrency: connections, maxDurationMs: sigtermS * 1000, requestTimeoutMs: 30_000, prefix: `sig${variant}` }, { quiet: true });
    clearTimeout(timer);
    const exit = exitCodeOf(await Promise.race([service.exited, sleep(45_000).then(() => ({ code: null, signal: null }))]));
    let successor: ServiceProcess | undefined;
    if (variant === 'a') {
      // What a redeploy does: the next instance sends whatever the outbox still holds.
      successor = await start('a', databaseUrl, sink.url);
    }
    const delivery = await awaitDelivery(sink, accepted, Date.now(), variant === 'a' ? drainTimeoutMs : 5_000);
    if (successor) await successor.stop();
    return { accepted: accepted.size, delivered: delivery.delivered, lost: delivery.lost, exit, successor: successor !== undefined };
  };

  /**
   * The email-disabled baseline: the real service whose SMTP server accepts connections and
   * never greets, with MAIL_MAX_IN_FLIGHT=1. The first email hangs; every other signup finds
   * the dispatcher full and leaves its email in the outbox. So the run does everything a
   * signup does (hash, transaction, outbox row, reply) and no email work.
   */
  const baseline = async (): Promise<{ cpuPerSignupMs: number; accepted: number; rps: number }> => {
    process.stderr.write(`\nbench:offload: ${labels.baseline}: ${durationS} s of signups\n`);
    const sockets = new Set<Socket>();
    const silent = createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    const silentUrl = `smtp://127.0.0.1:${(silent.address() as { port: number }).port}`;
    const databaseUrl = await freshDatabase(false);
    const service = await start('baseline', databaseUrl, silentUrl, { MAIL_MAX_IN_FLIGHT: '1', MAIL_SEND_TIMEOUT_MS: '600000', SHUTDOWN_TIMEOUT_MS: '1000' });
    try {
      const before = await scrape(service.url);
      const { summary, accepted } = await runSignups(cleanup, { targets: [service.url], concurrency: connections, maxDurationMs: durationS * 1000, requestTimeoutMs: 30_000, prefix: 'base' });
      const after = await scrape(service.url);
      const cpu = cpuOf(after, before);
      return { cpuPerSignupMs: (cpu * 1000) / accepted.size, accepted: accepted.size, rps: summary.requestsPerSecond };
    } finally {
      await service.stop();
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  };

  const measured = {} as Record<VariantName, Measured>;
  const terminated = {} as Record<VariantName, SigtermRun>;
  for (const variant of ['a', 'b', 'c'] as const) {
    measured[variant] = await measure(variant);
    terminated[variant] = await sigterm(variant);
  }
  const base = await baseline();

  const cpuPerEmailMs = (m: Measured) => (m.cpuS * 1000 - base.cpuPerSignupMs * m.accepted) / Math.max(1, m.delivered);
  const a = measured.a;
  const rows: [string, string][] = [];
  for (const variant of ['a', 'b', 'c'] as const) {
    const m = measured[variant];
    const t = terminated[variant];
    rows.push([
      labels[variant],
      `${fmt(m.rps, 0).padStart(6)} req/s (x${fmt(m.rps / a.rps, 2)})  p99 ${fmt(m.p99, 0).padStart(5)} ms (x${fmt(m.p99 / a.p99, 2)})  ` +
        `loop p99 ${fmt(m.loopP99Ms, 2)} ms  delivered ${m.delivered}/${m.accepted}  dup ${m.duplicates}  ` +
        `CPU/email ${fmt(cpuPerEmailMs(m), 2)} ms  SIGTERM: lost ${t.lost} of ${t.accepted} 202s (exit ${t.exit}${t.successor ? ', then a successor drained the outbox' : ''})`,
    ]);
  }
  printTable(`bench:offload: ${connections} connections, ${durationS} s, SMTP latency ${latencyMs} ms, DKIM ${dkimOn ? 'on' : 'off'}, argon2id ${args['argon2-memory-kib']} KiB x ${args['argon2-iterations']}`, rows);
  const nonOk = (['a', 'b', 'c'] as const).filter((v) => Object.keys(measured[v].non2xx).length > 0);
  printTable('CPU of the mail path (process_cpu_seconds_total = process.cpuUsage(), every thread of the process)', [
    [labels.baseline, `${fmt(base.rps, 0)} req/s, ${fmt(base.cpuPerSignupMs, 3)} ms CPU per signup (${base.accepted} signups)`],
    ['(a) service CPU over load + drain', `${fmt(a.cpuS, 2)} s for ${a.accepted} signups, ${a.delivered} emails`],
    ['(a) mail path CPU per delivered email', `${fmt(cpuPerEmailMs(a), 3)} ms  (= (service CPU - baseline per signup x signups) / delivered)`],
    ...(nonOk.length ? nonOk.map((v): [string, string] => [`${labels[v]} non-2xx`, JSON.stringify(measured[v].non2xx)]) : []),
  ]);
  process.stdout.write(
    `\n${summaryLine({
      a_rps: a.rps,
      b_rps: measured.b.rps,
      c_rps: measured.c.rps,
      a_p99_ms: a.p99,
      b_p99_ms: measured.b.p99,
      c_p99_ms: measured.c.p99,
      a_loop_p99_ms: a.loopP99Ms,
      b_loop_p99_ms: measured.b.loopP99Ms,
      c_loop_p99_ms: measured.c.loopP99Ms,
      a_lost_sigterm: terminated.a.lost,
      b_lost_sigterm: terminated.b.lost,
      c_lost_sigterm: terminated.c.lost,
      a_cpu_ms_per_email: cpuPerEmailMs(a),
      accepted: a.accepted,
      delivered: a.delivered,
      lost: a.lost,
      duplicates: a.duplicates,
    })}\n`,
  );
  // The service must lose nothing, in the throughput run or on SIGTERM; (b)/(c) are the comparison.
  await finish(cleanup, a.lost > 0 || terminated.a.lost > 0 ? 1 : 0);
} catch (error) {
  process.stderr.write(`bench:offload: ${error instanceof Error ? error.stack : String(error)}\n`);
  await finish(cleanup, 2);
}

function scaled(seconds: number | undefined): number | undefined {
  return seconds === undefined ? undefined : seconds * 1000;
}
