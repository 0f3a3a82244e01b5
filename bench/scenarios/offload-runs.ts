// The runs of `npm run bench -- offload`, each on a service started as a child process on a
// fresh database of the rig: a throughput run (load, then every accepted email delivered), a
// run with SIGTERM halfway, and the email-disabled baseline. The signup handlers compared:
//   (a) this service: pool + outbox (dist/src/server.js)
//   (b) `await sendMail` on the API thread before the 202 (bench/offload-variant.ts)
//   (c) sendMail on the API thread, fire and forget (the same file)
import { availableParallelism } from 'node:os';
import { createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createDatabase } from '../../test/support/database.js';
import { projectRoot } from '../../test/support/env.js';
import { histogramQuantile, scrape } from '../../test/support/prom.js';
import { closeAtEnd, type Scope } from '../../test/support/scope.js';
import type { ServiceProcess } from '../../test/support/service.js';
import { awaitDelivery, exitCodeOf, non2xxOf, runSignups } from '../common.js';
import { mainThreadScheduling, startCpuWindow } from '../proc-cpu.js';
import { startBuild, startBuildOn, withScope, type Build, type Rig } from '../rig.js';
import type { Values } from '../scenario.js';

export type Handler = 'a' | 'b' | 'c';
export const HANDLERS: readonly Handler[] = ['a', 'b', 'c'];

export const LABELS: Record<Handler | 'email-disabled', string> = {
  a: '(a) pool + outbox (this service)',
  b: '(b) await sendMail on the API thread',
  c: '(c) fire-and-forget on the API thread',
  'email-disabled': 'email-disabled baseline (this service)',
};

/** The service's MAIL_SMTP_CONNECTIONS default: (b) and (c) get as many pooled connections in all. */
const SMTP_CONNECTIONS_PER_WORKER = 5;

export interface Settings {
  readonly durationS: number;
  readonly sigtermS: number;
  readonly connections: number;
  readonly drainTimeoutMs: number;
  /** MAIL_WORKERS; undefined: the service's default, one per core. */
  readonly workers: number | undefined;
  /** Hash cost, log level and DKIM, for every handler. */
  readonly env: Record<string, string>;
  /** The command line, for --cpu-prof. */
  readonly args: Values;
}

export interface Throughput {
  readonly requestsPerSecond: number;
  readonly p99Ms: number;
  /** The API thread's, from the service's mailoffload_eventloop_delay_seconds over the load. */
  readonly loopP99Ms: number;
  /** The API thread over the load, per second of it: on a core, and waiting for one. */
  readonly apiRunShare: number;
  readonly apiWaitShare: number;
  readonly accepted: number;
  readonly delivered: number;
  readonly lost: number;
  readonly duplicates: number;
  /** CPU over load and drain, from /proc: the service's every thread, PostgreSQL's server. */
  readonly serviceCpuMs: number;
  readonly postgresCpuMs: number;
  readonly non2xx: Record<string, number>;
}

export interface Terminated {
  readonly accepted: number;
  readonly lost: number;
  readonly exit: string;
}

export interface EmailDisabled {
  readonly requestsPerSecond: number;
  readonly serviceCpuMsPerSignup: number;
  readonly postgresCpuMsPerSignup: number;
}

function buildOf(handler: Handler, role = ''): Build {
  const label = `${handler}${role}`;
  return handler === 'a' ? { label, root: projectRoot } : { label, root: projectRoot, entry: 'dist/bench/offload-variant.js' };
}

function envOf(settings: Settings, handler: Handler): Record<string, string> {
  const env = { ...settings.env, ...(settings.workers === undefined ? {} : { MAIL_WORKERS: String(settings.workers) }) };
  if (handler === 'a') return env;
  const connections = (settings.workers ?? availableParallelism()) * SMTP_CONNECTIONS_PER_WORKER;
  return { ...env, VARIANT: handler === 'b' ? 'await' : 'fire', SMTP_CONNECTIONS: String(connections) };
}

/**
 * The load for settings.durationS, then every accepted email delivered (or the drain deadline).
 * `build`: another build of (a) (`--baseline DIR`) instead of this checkout's.
 */
export async function throughput(rig: Rig, settings: Settings, handler: Handler, tag: string, build: Build = buildOf(handler)): Promise<Throughput> {
  return withScope(async (scope) => {
    const service = await startBuild(scope, rig, build, envOf(settings, handler), settings.args);
    const window = startCpuWindow(service.pid, rig.postmasterPid);
    const before = await scrape(service.url);
    const scheduledBefore = mainThreadScheduling(service.pid);
    const loadStartedAt = Date.now();
    const { summary, accepted } = await runSignups(scope, { targets: [service.url], concurrency: settings.connections, maxDurationMs: settings.durationS * 1000, requestTimeoutMs: 30_000, prefix: `off${handler}-${tag}` });
    const loadEndedAt = Date.now();
    const scheduledAfter = mainThreadScheduling(service.pid);
    const afterLoad = await scrape(service.url);
    const delivery = await awaitDelivery(rig.sink, accepted, loadEndedAt, settings.drainTimeoutMs);
    const cpu = window.stop();
    await service.stop();
    return {
      requestsPerSecond: summary.requestsPerSecond,
      p99Ms: summary.latencyMs.p99,
      loopP99Ms: (histogramQuantile('mailoffload_eventloop_delay_seconds', 0.99, afterLoad, before) ?? Number.NaN) * 1000,
      apiRunShare: (scheduledAfter.runMs - scheduledBefore.runMs) / (loadEndedAt - loadStartedAt),
      apiWaitShare: (scheduledAfter.waitMs - scheduledBefore.waitMs) / (loadEndedAt - loadStartedAt),
      accepted: accepted.size,
      delivered: delivery.delivered,
      lost: delivery.lost,
      duplicates: delivery.duplicates,
      serviceCpuMs: cpu.serviceMs,
      postgresCpuMs: cpu.postgresMs,
      non2xx: non2xxOf(summary.byStatus),
    };
  });
}

/** SIGTERM halfway through a run; (a) then gets a successor on its database, as in a redeploy. */
export async function sigterm(rig: Rig, settings: Settings, handler: Handler, tag: string): Promise<Terminated> {
  return withScope(async (scope) => {
    const database = await createDatabase(scope, rig.serverUrl, 'bench');
    const service = await startBuildOn(scope, rig, buildOf(handler, '-sigterm'), database.url, envOf(settings, handler), settings.args);
    const timer = setTimeout(() => service.kill('SIGTERM'), (settings.sigtermS * 1000) / 2);
    const load = { targets: [service.url], concurrency: settings.connections, maxDurationMs: settings.sigtermS * 1000, requestTimeoutMs: 30_000, prefix: `sig${handler}-${tag}` };
    const { accepted } = await runSignups(scope, load, { quiet: true });
    clearTimeout(timer);
    // A cap, not a synchronisation: a drain that outlasts it is reported as such.
    const exit = exitCodeOf(await Promise.race([service.exited, sleep(45_000).then(() => ({ code: null, signal: null }))]));
    let successor: ServiceProcess | undefined;
    // What a redeploy does: the next instance sends whatever the outbox still holds.
    if (handler === 'a') successor = await startBuildOn(scope, rig, buildOf(handler, '-successor'), database.url, envOf(settings, handler), settings.args);
    const delivery = await awaitDelivery(rig.sink, accepted, Date.now(), successor ? settings.drainTimeoutMs : 5_000);
    await successor?.stop();
    return { accepted: accepted.size, lost: delivery.lost, exit: successor ? `${exit}, then a successor drained the outbox` : exit };
  });
}

/** An SMTP port that accepts connections and never greets: an email sent to it never ends. */
async function silentSmtp(scope: Scope): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  closeAtEnd(scope, () => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return `smtp://127.0.0.1:${(server.address() as { port: number }).port}`;
}

/**
 * The email-disabled baseline: this service with MAIL_MAX_IN_FLIGHT=1, sending to a port that
 * never greets. The first email hangs; every other signup finds the dispatcher full and leaves
 * its email in the outbox. So the run does everything a signup does (hash, transaction, outbox
 * row, reply) and no email work: the "no mail" reference for the CPU per email.
 */
export async function emailDisabled(rig: Rig, settings: Settings, tag: string): Promise<EmailDisabled> {
  return withScope(async (scope) => {
    const smtpUrl = await silentSmtp(scope);
    const env = { ...envOf(settings, 'a'), SMTP_URL: smtpUrl, MAIL_MAX_IN_FLIGHT: '1', MAIL_SEND_TIMEOUT_MS: '600000', SHUTDOWN_TIMEOUT_MS: '1000' };
    const service = await startBuild(scope, rig, { label: 'email-disabled', root: projectRoot }, env, settings.args);
    const window = startCpuWindow(service.pid, rig.postmasterPid);
    const { summary, accepted } = await runSignups(scope, { targets: [service.url], concurrency: settings.connections, maxDurationMs: settings.durationS * 1000, requestTimeoutMs: 30_000, prefix: `base-${tag}` });
    const cpu = window.stop();
    await service.stop();
    return { requestsPerSecond: summary.requestsPerSecond, serviceCpuMsPerSignup: cpu.serviceMs / accepted.size, postgresCpuMsPerSignup: cpu.postgresMs / accepted.size };
  });
}
