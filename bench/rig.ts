// The parts a service benchmark runs against, started once per `npm run bench` and shared
// by its runs: the SMTP sink (a child process of its own), a PostgreSQL server (an embedded
// one, or DATABASE_URL) and its postmaster's pid for /proc; and the builds being compared:
// this checkout's, and with `--baseline DIR` another built checkout's, each started as its
// `npm start` would (node with that build's flags) against the same parts, round robin, so
// "before" and "after" share the machine's state.
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pino from 'pino';
import { createLogger, type Log } from '../src/logger.js';
import { createDatabase, databaseServer, tempDir } from '../test/support/database.js';
import { NO_RATE_LIMITS, projectRoot, TEST_MAIL_FROM } from '../test/support/env.js';
import { CleanupStack, type Scope } from '../test/support/scope.js';
import { startService, type ServiceProcess } from '../test/support/service.js';
import { startSmtpSinkProcess, type SinkProcess } from '../test/support/smtp-sink-process.js';
import { mailSettingsFromEnvironment } from './common.js';
import { postmasterPidOf } from './proc-cpu.js';
import { UsageError, type Options, type Values } from './scenario.js';

export interface Rig {
  /** The tool's own log (stderr; warnings and errors unless LOG_LEVEL says otherwise). */
  readonly log: Log;
  readonly sink: SinkProcess;
  readonly serverUrl: string;
  readonly postmasterPid: number;
}

export async function startRig(scope: Scope, { smtpLatencyMs = 0 } = {}): Promise<Rig> {
  const log = createLogger(process.env.LOG_LEVEL ?? 'warn', pino.destination(2));
  const sink = await startSmtpSinkProcess(scope, { latencyMs: smtpLatencyMs });
  const serverUrl = await databaseServer(scope, process.env.DATABASE_URL, log, 'bench');
  return { log, sink, serverUrl, postmasterPid: await postmasterPidOf(serverUrl) };
}

export interface Build {
  /** 'this' (the checkout running the bench) or 'baseline'. */
  readonly label: string;
  readonly root: string;
  /** The script to run, relative to root (default: the service, dist/src/server.js). */
  readonly entry?: string;
}

/** The options of every scenario that starts the service. */
export const buildOptions: Options = {
  baseline: { type: 'string' },
  'cpu-prof': { type: 'string' },
};

/** This checkout, then the baseline's when `--baseline DIR` names a built checkout. */
export function buildsFrom(args: Values): Build[] {
  const builds: Build[] = [{ label: 'this', root: projectRoot }];
  if (typeof args.baseline === 'string') {
    const root = path.resolve(args.baseline);
    if (!existsSync(path.join(root, 'dist/src/server.js')) || !existsSync(path.join(root, 'node_modules'))) {
      throw new UsageError(`--baseline ${args.baseline}: not a built checkout (no dist/src/server.js or node_modules; run npm ci && npm run build there)`);
    }
    builds.push({ label: 'baseline', root });
  }
  return builds;
}

/** Builds in a different order each run, so that neither always runs on a fresher machine. */
export function rotate<T>(list: readonly T[], run: number): T[] {
  const shift = run % list.length;
  return [...list.slice(shift), ...list.slice(0, shift)];
}

/**
 * A build of the service on a fresh database of the rig, its own DATA_DIR, the SMTP sink and
 * no rate limits. With `--cpu-prof DIR`, node writes a .cpuprofile per thread into DIR/<label>
 * when the service exits.
 */
export async function startBuild(scope: Scope, rig: Rig, build: Build, env: Record<string, string>, args: Values): Promise<ServiceProcess> {
  const database = await createDatabase(scope, rig.serverUrl, 'bench');
  return startBuildOn(scope, rig, build, database.url, env, args);
}

/**
 * The node flags a build runs the service with, as its `npm start` passes them (its
 * dist/src/node-flags.js); none for a build from before that file.
 */
async function nodeFlagsOf(build: Build): Promise<readonly string[]> {
  const file = path.join(build.root, 'dist/src/node-flags.js');
  if (!existsSync(file)) return [];
  return ((await import(pathToFileURL(file).href)) as { SERVICE_NODE_FLAGS: readonly string[] }).SERVICE_NODE_FLAGS;
}

/** The same on a database that already exists: a successor on its predecessor's outbox. */
export async function startBuildOn(scope: Scope, rig: Rig, build: Build, databaseUrl: string, env: Record<string, string>, args: Values): Promise<ServiceProcess> {
  const profileDir = typeof args['cpu-prof'] === 'string' ? path.resolve(args['cpu-prof'], build.label) : undefined;
  return startService(
    scope,
    { DATA_DIR: tempDir(scope, 'bench-data'), DATABASE_URL: databaseUrl, SMTP_URL: rig.sink.url, MAIL_FROM: TEST_MAIL_FROM, ...NO_RATE_LIMITS, ...mailSettingsFromEnvironment(), ...env },
    {
      name: `${build.label} service`,
      entry: path.join(build.root, build.entry ?? 'dist/src/server.js'),
      cwd: build.root,
      readyTimeoutMs: 90_000,
      graceMs: 60_000,
      nodeArgs: [...(await nodeFlagsOf(build)), ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [])],
    },
  );
}

/** DKIM settings with an RSA-2048 key generated for this run. */
export function dkimEnv(): Record<string, string> {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  return { DKIM_DOMAIN: 'mailoffload.test', DKIM_SELECTOR: 'bench', DKIM_PRIVATE_KEY: privateKey };
}

/** Runs `body` with a scope of its own, cleaned up (service stopped, database dropped) after. */
export async function withScope<T>(body: (scope: CleanupStack) => Promise<T>): Promise<T> {
  const scope = new CleanupStack();
  try {
    return await body(scope);
  } finally {
    await scope.run();
  }
}
