// `npm run loadtest`: signups under load, then the proof that each accepted one got its email.
//
//   npm run loadtest -- [--connections 50] [--duration 10] [--out loadtest-result.json]
//                       [--report loadtest.html] [--smtp-latency-ms 0] [--workers N]
//                       [--argon2-memory-kib N --argon2-iterations N] [--drain-timeout 120]
//                       [--url http://host:port]  (with DATABASE_URL for the delivery check)
//                       [--burst 20000 --stall-smtp [--stall-ms 5000]]  (the memory check)
//
// By default it boots the built service (dist/src/server.js) on its embedded defaults in a
// temporary DATA_DIR, with its own SMTP sink (a child process) unless SMTP_URL is given.
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createLogger } from '../src/logger.js';
import { startTempPostgres, tempDir } from '../test/support/database.js';
import { histogramQuantile, maxObserved, scrape, type Scrape } from '../test/support/prom.js';
import { cleanUpOnInterrupt, CleanupStack } from '../test/support/scope.js';
import { startService, type ServiceProcess } from '../test/support/service.js';
import { startSmtpSinkProcess, type SinkProcess } from '../test/support/smtp-sink-process.js';
import { heldWithin } from '../test/support/wait.js';
import { awaitDelivery, describeSettings, exitCodeOf, finish, fmt, mailSettingsFromEnvironment, mib, non2xxOf, printTable, RssSampler, runSignups, summaryLine, type Delivery } from './common.js';
import { checkOutputPaths, peakOf, serviceVersion, writeOutputs } from './report/output.js';
import { TimelineRecorder } from './report/timeline.js';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '50' },
    duration: { type: 'string', default: '10' },
    url: { type: 'string' },
    out: { type: 'string', default: 'loadtest-result.json' },
    report: { type: 'string' },
    'smtp-latency-ms': { type: 'string', default: '0' },
    'argon2-memory-kib': { type: 'string' },
    'argon2-iterations': { type: 'string' },
    'drain-timeout': { type: 'string', default: '120' },
    burst: { type: 'string' },
    'stall-smtp': { type: 'boolean', default: false },
    'stall-ms': { type: 'string', default: '5000' },
    workers: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(`usage: npm run loadtest -- [--connections N] [--duration S] [--url URL] [--out FILE]
  [--report FILE.html] [--smtp-latency-ms MS] [--argon2-memory-kib N] [--argon2-iterations N] [--drain-timeout S] [--workers N]
  [--burst N] [--stall-smtp] [--stall-ms MS]
env: SMTP_URL (use this SMTP server instead of the tool's sink; delivery is then checked in the
database), DATABASE_URL (the database the service uses; required with --url)\n`);
  process.exit(0);
}

const connections = Number(args.connections);
const durationS = Number(args.duration);
const burst = args.burst !== undefined ? Number(args.burst) : undefined;
const drainTimeoutMs = Number(args['drain-timeout']) * 1000;
const stall = args['stall-smtp'];
const stallMs = Number(args['stall-ms']);
const smtpLatencyMs = Number(args['smtp-latency-ms']);
const external = args.url !== undefined;
const log = createLogger('warn');

if (stall && (external || process.env.SMTP_URL)) fail('--stall-smtp needs the tool\'s own SMTP sink (no --url, no SMTP_URL)');
if (external && !process.env.DATABASE_URL) fail('--url needs DATABASE_URL (the target\'s database) for the delivery check');
if (!Number.isInteger(smtpLatencyMs) || smtpLatencyMs < 0) fail(`--smtp-latency-ms takes a whole number of milliseconds, got "${args['smtp-latency-ms']}"`);
if (smtpLatencyMs > 0 && (external || process.env.SMTP_URL)) fail('--smtp-latency-ms sets the tool\'s own SMTP sink (no --url, no SMTP_URL)');
checkOutputPaths('loadtest', { out: args.out!, report: args.report });

// Argon2: the service's default (OWASP's minimum) unless given. The burst measures memory under a
// stalled SMTP server, not hashing: it lowers the cost unless told otherwise, and says so.
const defaultArgon2 = burst !== undefined ? { memoryKib: '64', iterations: '1' } : undefined;
const argon2Memory = args['argon2-memory-kib'] ?? defaultArgon2?.memoryKib;
const argon2Iterations = args['argon2-iterations'] ?? defaultArgon2?.iterations;
const argon2Text = external
  ? 'whatever the target is configured with'
  : `${argon2Memory ?? '19456 (default)'} KiB, ${argon2Iterations ?? '2 (default)'} iterations` + (defaultArgon2 && !args['argon2-memory-kib'] ? ' (lowered for the burst: memory, not hashing, is measured)' : '');

function fail(message: string): never {
  process.stderr.write(`loadtest: ${message}\n`);
  process.exit(2);
}

const cleanup = new CleanupStack();
cleanUpOnInterrupt(cleanup);

let sink: SinkProcess | undefined;
let service: ServiceProcess | undefined;
let baseUrl: string;
let databaseUrl = process.env.DATABASE_URL;

try {
  if (!external) {
    const dataDir = tempDir(cleanup, 'loadtest');
    if (!process.env.SMTP_URL) {
      sink = await startSmtpSinkProcess(cleanup, { latencyMs: smtpLatencyMs });
    } else if (!databaseUrl) {
      // Delivery goes to a server we cannot see into: check it in the database, which must
      // then be one we can reach. Start our own embedded PostgreSQL for the service.
      databaseUrl = (await startTempPostgres(cleanup, log, 'loadtest-pg')).url;
    }
    const mailSettings = mailSettingsFromEnvironment();
    process.stderr.write(`loadtest: starting the service (rate limiting off for this instance: RATE_LIMIT_PER_MINUTE=0, RATE_LIMIT_GLOBAL_PER_MINUTE=0${describeSettings(mailSettings)})\n`);
    service = await startService(cleanup, {
      DATA_DIR: dataDir,
      ...mailSettings,
      SMTP_URL: sink?.url ?? process.env.SMTP_URL,
      ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
      ...(argon2Memory ? { ARGON2_MEMORY_KIB: argon2Memory } : {}),
      ...(argon2Iterations ? { ARGON2_ITERATIONS: argon2Iterations } : {}),
      ...(args.workers ? { MAIL_WORKERS: args.workers } : {}),
    }, { readyTimeoutMs: 90_000, graceMs: 40_000 });
    baseUrl = service.url;
  } else {
    baseUrl = args.url!.replace(/\/$/, '');
    process.stderr.write('loadtest: targeting an external service: make sure its rate limits allow this load (RATE_LIMIT_PER_MINUTE=0, RATE_LIMIT_GLOBAL_PER_MINUTE=0)\n');
  }

  const bootRss = service ? new RssSampler(service.pid).stop() : undefined;
  const before = await scrape(baseUrl);
  // Peak RSS: /proc for our child, every 100 ms. The rest, once a second, for the report and the
  // peaks: the metrics, /proc, and what the sink accepted.
  const rss = service ? new RssSampler(service.pid) : undefined;
  const recorder = new TimelineRecorder(sink ? { deliveredTotal: () => sink!.total() } : {});
  recorder.watch('service', baseUrl, service?.pid);
  if (service) recorder.ready('service');

  if (stall) sink!.stall();
  const mode = burst !== undefined ? `burst of ${burst} signups` : `${durationS} s`;
  process.stderr.write(`loadtest: POST /v1/users, ${connections} connections, ${mode}${stall ? ', SMTP stalled' : ''}; argon2id ${argon2Text}\n`);
  const loadStarted = Date.now();
  const { load, summary, accepted } = await runSignups(cleanup, {
    targets: [baseUrl],
    concurrency: connections,
    ...(burst !== undefined ? { count: burst } : { maxDurationMs: durationS * 1000 }),
    requestTimeoutMs: 30_000,
    prefix: 'lt',
  });
  const loadEndedAt = Date.now();
  const afterLoad: Scrape = await scrape(baseUrl);

  let stallRss: number | undefined;
  if (stall) {
    process.stderr.write(`loadtest: load done; SMTP stays stalled for ${stallMs} ms more, then recovers\n`);
    await new Promise((resolve) => setTimeout(resolve, stallMs));
    stallRss = rss?.peakBytes;
    sink!.resume();
  }

  process.stderr.write(`loadtest: waiting up to ${drainTimeoutMs / 1000} s for ${accepted.size} welcome emails\n`);
  let delivery: Delivery;
  if (sink) {
    delivery = await awaitDelivery(sink, accepted, stall ? Date.now() : loadEndedAt, drainTimeoutMs);
  } else {
    delivery = await deliveryFromDatabase(databaseUrl!, accepted, loadEndedAt, drainTimeoutMs);
  }
  const afterDrain = await scrape(baseUrl).catch(() => undefined);

  // The service is retired as a redeploy would, and the report shows its drain.
  let exit: string | undefined;
  if (service) {
    recorder.signalled('service', 'SIGTERM');
    exit = exitCodeOf(await service.stop());
    recorder.exited('service', service, exit);
  }
  const timeline = await recorder.finish(load.outcomes);
  const serviceSeries = timeline.instances[0]!;
  const peakRss = rss?.stop() ?? peakOf(serviceSeries.rssMiB) * 1024 * 1024;
  const peakPending = peakOf(timeline.outboxPending);
  const peakInFlight = peakOf(serviceSeries.inFlight);
  const workers = service?.logs.find((line) => line.msg === 'starting server')?.workers;

  const latency = summary.latencyMs;
  const non2xx = non2xxOf(summary.byStatus);
  const loopP99 = histogramQuantile('mailoffload_eventloop_delay_seconds', 0.99, afterLoad, before);
  const loopMax = maxObserved('mailoffload_eventloop_delay_seconds', afterLoad, before);
  const cpuS = (afterDrain?.value('process_cpu_seconds_total') ?? NaN) - (before.value('process_cpu_seconds_total') ?? NaN);
  const title = `loadtest: ${mode}, ${connections} connections${stall ? `, SMTP stalled until ${stallMs} ms after the burst` : ''}`;
  const rows: [string, string][] = [
    ['argon2id cost', argon2Text],
    ['requests', `${summary.requests} in ${fmt((loadEndedAt - loadStarted) / 1000, 1)} s`],
    ['requests/s', fmt(summary.requests / ((loadEndedAt - loadStarted) / 1000), 0)],
    ['latency p50/p90/p99/max', `${fmt(latency.p50)} / ${fmt(latency.p90)} / ${fmt(latency.p99)} / ${fmt(latency.max)} ms`],
    ['non-2xx by status', Object.keys(non2xx).length ? JSON.stringify(non2xx) : 'none'],
    ['connection errors/timeouts', String(summary.failures)],
    ['signups accepted (202)', String(accepted.size)],
    ['emails delivered', String(delivery.delivered)],
    ['lost', String(delivery.lost)],
    ['duplicates', sink ? String(delivery.duplicates) : 'unknown (checked in the database, not at the SMTP server)'],
    [stall ? 'drain after SMTP recovered' : 'outbox drain after load', delivery.drainMs === undefined ? `not drained within ${drainTimeoutMs / 1000} s` : `${fmt(delivery.drainMs / 1000, 2)} s`],
    ['API event-loop delay p99', loopP99 === undefined ? 'n/a' : `${fmt(loopP99 * 1000, 2)} ms (mailoffload_eventloop_delay_seconds, during the load)`],
    ['peak RSS of the service', `${fmt(mib(peakRss), 0)} MiB${bootRss ? ` (after boot: ${fmt(mib(bootRss), 0)} MiB)` : ''}`],
    ...(stall ? ([['peak outbox pending', String(peakPending)], ['peak emails in flight (memory)', String(peakInFlight)]] as [string, string][]) : []),
    ['service CPU (all threads)', Number.isNaN(cpuS) ? 'n/a' : `${fmt(cpuS, 2)} s (process_cpu_seconds_total)`],
    ...(exit !== undefined ? ([['service exit (SIGTERM)', exit]] as [string, string][]) : []),
  ];
  const line = summaryLine({
    rps: summary.requests / ((loadEndedAt - loadStarted) / 1000),
    p99_ms: latency.p99,
    accepted: accepted.size,
    delivered: delivery.delivered,
    lost: delivery.lost,
    duplicates: sink ? delivery.duplicates : 'unknown',
    drain_s: delivery.drainMs === undefined ? undefined : delivery.drainMs / 1000,
    eventloop_p99_ms: loopP99 === undefined ? undefined : loopP99 * 1000,
    peak_rss_mib: mib(peakRss),
  });
  const result = {
    tool: 'loadtest' as const,
    title,
    serviceVersion: serviceVersion(),
    config: {
      connections,
      durationS: (loadEndedAt - loadStarted) / 1000,
      argon2: argon2Text,
      smtpLatencyMs: sink ? smtpLatencyMs : null,
      workers: typeof workers === 'number' ? workers : null,
      other: { mode: burst !== undefined ? `burst of ${burst} signups` : 'duration', target: external ? baseUrl : 'local service (dist/src/server.js)', 'SMTP stalled': stall },
    },
    mode: burst !== undefined ? 'burst' : 'duration',
    target: external ? baseUrl : 'local service (dist/src/server.js)',
    connections,
    durationS: (loadEndedAt - loadStarted) / 1000,
    burst: burst ?? null,
    smtpStalled: stall,
    argon2: argon2Text,
    requests: summary.requests,
    requestsPerSecond: summary.requests / ((loadEndedAt - loadStarted) / 1000),
    latencyMs: latency,
    non2xxByStatus: non2xx,
    connectionErrors: summary.failures,
    accepted: accepted.size,
    delivered: delivery.delivered,
    lost: delivery.lost,
    duplicates: sink ? delivery.duplicates : null,
    drainMs: delivery.drainMs ?? null,
    eventLoopDelayP99Ms: loopP99 === undefined ? null : loopP99 * 1000,
    eventLoopDelayMaxBucketMs: loopMax === undefined ? null : loopMax * 1000,
    peakRssMiB: mib(peakRss),
    bootRssMiB: mib(bootRss),
    rssDuringStallMiB: mib(stallRss),
    peakOutboxPending: peakPending,
    peakEmailsInFlight: peakInFlight,
    serviceCpuSeconds: Number.isNaN(cpuS) ? null : cpuS,
    serviceExit: exit ?? null,
    tables: [{ title, rows }],
    line,
    timeline,
  };

  printTable(title, rows);
  writeOutputs(result, { out: args.out!, report: args.report });
  process.stdout.write(`${line}\n`);
  await finish(cleanup, result.lost > 0 ? 1 : 0);
} catch (error) {
  process.stderr.write(`loadtest: ${error instanceof Error ? error.stack : String(error)}\n`);
  if (service) process.stderr.write(`service stderr: ${service.stderr.join('').slice(-1000)}\n`);
  await finish(cleanup, 2);
}

/** Delivery read from the outbox (status sent) when we cannot see the SMTP server. */
async function deliveryFromDatabase(url: string, accepted: ReadonlySet<string>, loadEndedAt: number, timeoutMs: number): Promise<Delivery> {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  const emails = [...accepted];
  let delivered = 0;
  try {
    const done = await heldWithin(async () => {
      const { rows } = await pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM email_outbox o JOIN users u ON u.id = o.user_id
          WHERE o.status = 'sent' AND u.email = ANY($1::citext[])`,
        [emails],
      );
      delivered = rows[0]!.n;
      return delivered >= emails.length;
    }, timeoutMs, 500);
    return { delivered, lost: emails.length - delivered, duplicates: 0, drainMs: done ? Date.now() - loadEndedAt : undefined, extra: 0 };
  } finally {
    await pool.end();
  }
}
