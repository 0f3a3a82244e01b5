// `npm run drill`: a rolling redeploy under load. One shared database, one SMTP sink; each
// cycle starts a new instance on its own port, waits until its healthcheck answers 200,
// routes new signups to it, then signals the old one (SIGTERM, or SIGKILL with --kill) while
// the traffic continues. At the end: every 202 must have its welcome email at the sink.
//
//   npm run drill -- [--cycles 5] [--kill] [--connections 20] [--interval 3]
//                    [--out drill-result.json] [--report drill.html] [--smtp-latency-ms 0]
//                    [--workers N] [--shutdown-timeout-ms MS]
//                    [--argon2-memory-kib N --argon2-iterations N] [--drain-timeout 120]
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createLogger } from '../src/logger.js';
import { databaseServer, tempDir } from '../test/support/database.js';
import { startSignupLoad, summarize } from '../test/support/load.js';
import { cleanUpOnInterrupt, CleanupStack } from '../test/support/scope.js';
import { startService, type ServiceProcess } from '../test/support/service.js';
import { startSmtpSinkProcess } from '../test/support/smtp-sink-process.js';
import { waitUntil } from '../test/support/wait.js';
import { acceptedSet, awaitDelivery, describeSettings, exitCodeOf, finish, fmt, mailSettingsFromEnvironment, non2xxOf, printTable, reportProgress, summaryLine } from './common.js';
import { checkOutputPaths, serviceVersion, writeOutputs } from './report/output.js';
import { TimelineRecorder } from './report/timeline.js';

const { values: args } = parseArgs({
  options: {
    cycles: { type: 'string', default: '5' },
    kill: { type: 'boolean', default: false },
    connections: { type: 'string', default: '20' },
    interval: { type: 'string', default: '3' },
    'argon2-memory-kib': { type: 'string' },
    'argon2-iterations': { type: 'string' },
    'lease-ms': { type: 'string' },
    'drain-timeout': { type: 'string', default: '120' },
    out: { type: 'string', default: 'drill-result.json' },
    report: { type: 'string' },
    'smtp-latency-ms': { type: 'string', default: '0' },
    workers: { type: 'string' },
    'shutdown-timeout-ms': { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  process.stdout.write(`usage: npm run drill -- [--cycles K] [--kill] [--connections N] [--interval S]
  [--argon2-memory-kib N] [--argon2-iterations N] [--lease-ms MS] [--drain-timeout S]
  [--out FILE] [--report FILE.html] [--smtp-latency-ms MS] [--workers N] [--shutdown-timeout-ms MS]
env: DATABASE_URL (shared database; default: an embedded PostgreSQL started by the drill),
SMTP_URL is not supported: the drill checks delivery at its own SMTP sink\n`);
  process.exit(0);
}
if (process.env.SMTP_URL) {
  process.stderr.write('drill: SMTP_URL is ignored: the drill checks every 202 at its own SMTP sink\n');
}

const cycles = Number(args.cycles);
const connections = Number(args.connections);
const intervalMs = Number(args.interval) * 1000;
const signal: NodeJS.Signals = args.kill ? 'SIGKILL' : 'SIGTERM';
// After a SIGKILL the dead instance's leased emails wait for their lease to expire (30 s by
// default); a short lease lets the survivors recover them within the drill.
const leaseMs = args['lease-ms'] ?? (args.kill ? '5000' : undefined);
const drainTimeoutMs = Number(args['drain-timeout']) * 1000;
const smtpLatencyMs = Number(args['smtp-latency-ms']);
const log = createLogger('warn');
if (!Number.isInteger(smtpLatencyMs) || smtpLatencyMs < 0) {
  process.stderr.write(`drill: --smtp-latency-ms takes a whole number of milliseconds, got "${args['smtp-latency-ms']}"\n`);
  process.exit(2);
}
checkOutputPaths('drill', { out: args.out!, report: args.report });

interface Instance {
  readonly service: ServiceProcess;
  readonly index: number;
  readonly name: string;
  served: number;
  signal?: NodeJS.Signals;
  exit?: string;
  drainMs?: number;
  pendingAtShutdown?: number;
}

const cleanup = new CleanupStack();
cleanUpOnInterrupt(cleanup);

const instances: Instance[] = [];
/** Each instance by its URL, for counting the 202s it served. */
const byUrl = new Map<string, Instance>();
let current: Instance | undefined;
/** Starts once the first instance is ready (second 0), and follows every instance. */
let recorder: TimelineRecorder | undefined;

/** What its log says about its shutdown, once it has exited. */
async function recordExit(instance: Instance): Promise<void> {
  instance.exit = exitCodeOf(await instance.service.exited);
  recorder?.exited(instance.name, instance.service, instance.exit);
  const stopped = instance.service.logs.find((line) => line.msg === 'stopped server');
  const completing = instance.service.logs.find((line) => line.msg === 'completing background tasks');
  if (stopped) instance.drainMs = Number(stopped.drainMs);
  if (completing) instance.pendingAtShutdown = Number(completing.pending);
}

try {
  const databaseUrl = await databaseServer(cleanup, process.env.DATABASE_URL, log, 'drill');
  const sink = await startSmtpSinkProcess(cleanup, { latencyMs: smtpLatencyMs });
  const dataDir = tempDir(cleanup, 'drill');

  const mailSettings = mailSettingsFromEnvironment();
  const env = {
    DATABASE_URL: databaseUrl,
    SMTP_URL: sink.url,
    DATA_DIR: dataDir,
    ...mailSettings,
    ...(args['argon2-memory-kib'] ? { ARGON2_MEMORY_KIB: args['argon2-memory-kib'] } : {}),
    ...(args['argon2-iterations'] ? { ARGON2_ITERATIONS: args['argon2-iterations'] } : {}),
    ...(leaseMs ? { MAIL_LEASE_MS: leaseMs } : {}),
    ...(args.workers ? { MAIL_WORKERS: args.workers } : {}),
    ...(args['shutdown-timeout-ms'] ? { SHUTDOWN_TIMEOUT_MS: args['shutdown-timeout-ms'] } : {}),
  };
  process.stderr.write(
    `drill: ${cycles} cycles, ${signal} to the old instance, ${connections} concurrent signups, ${intervalMs / 1000} s between cycles; ` +
      `argon2id ${args['argon2-memory-kib'] ?? '19456 (default)'} KiB / ${args['argon2-iterations'] ?? '2 (default)'} iterations` +
      (leaseMs ? `; MAIL_LEASE_MS=${leaseMs}${args.kill && !args['lease-ms'] ? ' (short, so a killed instance\'s emails are recovered within the drill)' : ''}` : '') +
      (smtpLatencyMs > 0 ? `; SMTP latency ${smtpLatencyMs} ms` : '') +
      (args['shutdown-timeout-ms'] ? `; SHUTDOWN_TIMEOUT_MS=${args['shutdown-timeout-ms']}` : '') +
      `; rate limiting off on every instance (RATE_LIMIT_PER_MINUTE=0, RATE_LIMIT_GLOBAL_PER_MINUTE=0${describeSettings(mailSettings)})\n`,
  );

  const launch = async (index: number): Promise<Instance> => {
    const name = `instance-${index}`;
    const service = await startService(cleanup, env, { name, readyTimeoutMs: 90_000, graceMs: 40_000 });
    const instance: Instance = { service, index, name, served: 0 };
    instances.push(instance);
    await waitUntil(async () => {
      const response = await fetch(`${service.url}/v1/healthcheck`).catch(() => undefined);
      return response?.status === 200;
    }, 30_000, () => `instance-${index} to answer its healthcheck with 200`, 50);
    byUrl.set(service.url, instance);
    recorder ??= new TimelineRecorder({ deliveredTotal: () => sink.total() });
    recorder.watch(name, service.url, service.pid);
    recorder.ready(name);
    return instance;
  };

  // Traffic: a bounded-concurrency loop of signups, each sent to the newest ready instance.
  current = await launch(0);
  const loadStartedAt = Date.now();
  const traffic = startSignupLoad(cleanup, {
    targets: () => current!.service.url,
    concurrency: connections,
    // Stopped after the last cycle, however long the launches took.
    maxDurationMs: Number.POSITIVE_INFINITY,
    requestTimeoutMs: 30_000,
    prefix: 'drill',
    // A connection cut by SIGKILL or a closing server is no 202, so nothing is owed for it.
    onOutcome: (outcome) => {
      if (outcome.status === 202) byUrl.get(outcome.target)!.served++;
    },
  });
  const stopProgress = reportProgress(traffic, () => ` instance=${current!.index}`);
  cleanup.after(stopProgress);

  for (let cycle = 1; cycle <= cycles; cycle++) {
    await sleep(intervalMs);
    const old = current!;
    const next = await launch(cycle);
    current = next;
    old.signal = signal;
    process.stderr.write(`drill: cycle ${cycle}: instance-${next.index} ready on port ${next.service.port}; ${signal} to instance-${old.index}\n`);
    recorder!.signalled(old.name, signal);
    old.service.kill(signal);
    // Not awaited: the old instance drains while the traffic goes on.
    void recordExit(old);
  }
  await sleep(intervalMs);
  await traffic.stop();
  stopProgress();
  const loadEndedAt = Date.now();
  const loadDurationS = (loadEndedAt - loadStartedAt) / 1000;
  const accepted = acceptedSet(traffic);
  const { byStatus, failures: requestErrors } = summarize(traffic.outcomes);

  // Every signalled instance must have exited (bounded by its drain deadline).
  await Promise.race([Promise.all(instances.filter((i) => i.signal).map((i) => i.service.exited)), sleep(45_000)]);

  process.stderr.write(`drill: traffic stopped; waiting up to ${drainTimeoutMs / 1000} s for ${accepted.size} welcome emails\n`);
  const delivery = await awaitDelivery(sink, accepted, loadEndedAt, drainTimeoutMs);

  // The last instance is retired cleanly too.
  const last = current!;
  last.signal = 'SIGTERM';
  recorder!.signalled(last.name, 'SIGTERM');
  await last.service.stop();
  await recordExit(last);
  const timeline = await recorder!.finish(traffic.outcomes, (outcome) => byUrl.get(outcome.target)?.name);

  const expectedExit = (instance: Instance) => (instance.signal === 'SIGKILL' ? instance.exit === 'signal SIGKILL' : instance.exit === '0');
  const badExits = instances.filter((i) => !expectedExit(i)).length;

  const instanceRows = instances.map((i): [string, string] => [
    `instance-${i.index} (port ${i.service.port})`,
    `202s served=${i.served} signal=${i.signal ?? '-'} exit=${i.exit ?? 'still running'} ` +
      `drain=${i.drainMs !== undefined ? `${i.drainMs} ms` : i.signal === 'SIGKILL' ? 'n/a (killed)' : 'n/a'}` +
      (i.pendingAtShutdown !== undefined ? ` pending-at-shutdown=${i.pendingAtShutdown}` : ''),
  ]);
  const non2xx = non2xxOf(byStatus);
  const title = `drill: ${cycles} cycles with ${signal}`;
  const rows: [string, string][] = [
    ['signups sent', String(traffic.sent)],
    ['accepted (202)', String(accepted.size)],
    ['non-2xx by status', Object.keys(non2xx).length ? JSON.stringify(non2xx) : 'none'],
    ['connection errors', String(requestErrors)],
    ['delivered', String(delivery.delivered)],
    ['lost', String(delivery.lost)],
    ['duplicates', String(delivery.duplicates)],
    ['emails for requests without a 202', `${delivery.extra} (the response was cut, the signup had committed)`],
    ['drain after traffic stopped', delivery.drainMs === undefined ? `not drained within ${drainTimeoutMs / 1000} s` : `${fmt(delivery.drainMs / 1000, 2)} s`],
    ['instances with an unexpected exit', String(badExits)],
  ];
  const drains = instances.filter((i) => i.drainMs !== undefined).map((i) => i.drainMs!);
  const line = summaryLine({
    cycles,
    signal,
    accepted: accepted.size,
    delivered: delivery.delivered,
    lost: delivery.lost,
    duplicates: delivery.duplicates,
    max_drain_ms: drains.length ? Math.max(...drains) : undefined,
    bad_exits: badExits,
  });
  const workers = instances[0]!.service.logs.find((entry) => entry.msg === 'starting server')?.workers;
  const result = {
    tool: 'drill' as const,
    title,
    serviceVersion: serviceVersion(),
    config: {
      connections,
      durationS: loadDurationS,
      argon2: `${args['argon2-memory-kib'] ?? '19456 (default)'} KiB, ${args['argon2-iterations'] ?? '2 (default)'} iterations`,
      smtpLatencyMs,
      workers: typeof workers === 'number' ? workers : null,
      other: {
        cycles,
        signal,
        'seconds between cycles': intervalMs / 1000,
        MAIL_LEASE_MS: leaseMs ?? 'service default',
        SHUTDOWN_TIMEOUT_MS: args['shutdown-timeout-ms'] ?? 'service default',
      },
    },
    cycles,
    signal,
    sent: traffic.sent,
    accepted: accepted.size,
    non2xxByStatus: non2xx,
    connectionErrors: requestErrors,
    delivered: delivery.delivered,
    lost: delivery.lost,
    duplicates: delivery.duplicates,
    emailsWithout202: delivery.extra,
    drainMs: delivery.drainMs ?? null,
    instances: instances.map((i) => ({
      name: i.name,
      port: i.service.port,
      served: i.served,
      signal: i.signal ?? null,
      exit: i.exit ?? null,
      drainMs: i.drainMs ?? null,
      pendingAtShutdown: i.pendingAtShutdown ?? null,
    })),
    badExits,
    tables: [
      { title: 'drill: instances', rows: instanceRows },
      { title, rows },
    ],
    line,
    timeline,
  };
  printTable('drill: instances', instanceRows);
  printTable(title, rows);
  writeOutputs(result, { out: args.out!, report: args.report });
  process.stdout.write(`\n${line}\n`);
  await finish(cleanup, delivery.lost > 0 || badExits > 0 ? 1 : 0);
} catch (error) {
  process.stderr.write(`drill: ${error instanceof Error ? error.stack : String(error)}\n`);
  for (const i of instances) process.stderr.write(`instance-${i.index} stderr: ${i.service.stderr.join('').slice(-500)}\n`);
  await finish(cleanup, 2);
}
