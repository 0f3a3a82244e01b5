// Shared test helpers: a fresh database per test file, a real SMTP server with injectable
// latency and failures, the real app (in-process) and the real compiled service (as a child
// process, for signals). No mocks.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { simpleParser, type ParsedMail } from 'mailparser';
import pg from 'pg';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import { buildApp } from '../src/app.js';
import { loadConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/logger.js';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const serverEntry = path.join(projectRoot, 'dist/src/server.js');

/** Low hashing cost: tests measure behaviour, not argon2. */
export const FAST_ARGON2 = { ARGON2_MEMORY_KIB: '64', ARGON2_ITERATIONS: '1' } as const;

/**
 * Tests send many signups from 127.0.0.1 in a minute: the signup rate limits are off unless a
 * test turns them on (test/hardening.test.ts does).
 */
export const NO_RATE_LIMITS = { RATE_LIMIT_PER_MINUTE: '0', RATE_LIMIT_GLOBAL_PER_MINUTE: '0' } as const;

export function unique(prefix = 'user'): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

export function uniqueEmail(prefix = 'user'): string {
  return `${unique(prefix)}@example.com`;
}

// ---------------------------------------------------------------------------------------
// Database

export interface TestDatabase {
  readonly url: string;
  readonly pool: pg.Pool;
  drop(): Promise<void>;
}

/** A new, empty database on the test server (TEST_DATABASE_URL, set by `npm test`). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const serverUrl = process.env.TEST_DATABASE_URL;
  assert.ok(serverUrl, 'TEST_DATABASE_URL is not set: run the tests with `npm test`');
  const name = `test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
  return {
    url: url.toString(),
    pool,
    async drop() {
      await pool.end();
      const client = new pg.Client({ connectionString: serverUrl });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}

// ---------------------------------------------------------------------------------------
// SMTP

export interface ReceivedMail {
  readonly envelopeTo: string[];
  readonly raw: string;
  readonly parsed: ParsedMail;
}

export interface SmtpBehaviour {
  /** Delay before accepting each message, in ms. */
  latencyMs?: number;
  /**
   * Decide the reply for a message: undefined accepts it; a number answers that SMTP code
   * (4xx temporary, 5xx permanent).
   */
  reply?: (session: SMTPServerSession, rcpt: string[]) => number | undefined;
}

export interface SmtpSink {
  readonly url: string;
  readonly port: number;
  readonly received: ReceivedMail[];
  /** Messages whose DATA began arriving (counted before any latency or reply decision). */
  readonly dataStarted: number;
  behaviour: SmtpBehaviour;
  /** Messages received for an address. */
  to(address: string): ReceivedMail[];
  waitForCount(count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startSmtpSink(behaviour: SmtpBehaviour = {}, port = 0): Promise<SmtpSink> {
  const received: ReceivedMail[] = [];
  const sink = {
    behaviour,
    received,
    dataStarted: 0,
  } as { behaviour: SmtpBehaviour; received: ReceivedMail[]; dataStarted: number };
  const server = new SMTPServer({
    disabledCommands: ['STARTTLS', 'AUTH'],
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    onData(stream, session, callback) {
      sink.dataStarted++;
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        const rcpt = session.envelope.rcptTo.map((r) => r.address);
        const finish = async () => {
          const code = sink.behaviour.reply?.(session, rcpt);
          if (code !== undefined) {
            const error = Object.assign(new Error(code >= 500 ? 'mailbox unavailable' : 'try again later'), { responseCode: code });
            callback(error);
            return;
          }
          const raw = Buffer.concat(chunks).toString('utf8');
          received.push({ envelopeTo: rcpt, raw, parsed: await simpleParser(raw) });
          callback();
        };
        const latency = sink.behaviour.latencyMs ?? 0;
        if (latency > 0) setTimeout(() => void finish(), latency);
        else void finish();
      });
    },
  });
  server.on('error', () => undefined);
  server.listen(port, '127.0.0.1');
  await once(server.server, 'listening');
  const actualPort = (server.server.address() as { port: number }).port;
  return Object.assign(sink, {
    url: `smtp://127.0.0.1:${actualPort}`,
    port: actualPort,
    to: (address: string) => received.filter((mail) => mail.envelopeTo.includes(address.toLowerCase()) || mail.envelopeTo.includes(address)),
    waitForCount: (count: number, timeoutMs = 20_000) =>
      waitUntil(() => received.length >= count, timeoutMs, () => `expected ${count} emails, got ${received.length}`),
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  });
}

// ---------------------------------------------------------------------------------------
// Polling with a deadline (never a bare sleep as synchronisation)

export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  describe: () => string = () => 'condition',
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// ---------------------------------------------------------------------------------------
// The app, in-process

/** Log lines captured in memory: tests assert on them (and on what they never contain). */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  readonly raw: string[] = [];
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      this.raw.push(line);
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not JSON: kept in raw only
      }
    }
    callback();
  }
  messages(): string[] {
    return this.lines.map((line) => String(line.msg));
  }
}

export function testConfig(env: Record<string, string | undefined>): Config {
  return loadConfig({ PORT: '0', LOG_LEVEL: 'info', MAIL_WORKERS: '2', SWEEP_INTERVAL_MS: '200', MAIL_RETRY_BASE_MS: '200', ...FAST_ARGON2, ...NO_RATE_LIMITS, ...env });
}

export async function buildTestApp(env: Record<string, string | undefined>) {
  const logs = new LogCapture();
  const config = testConfig(env);
  // The service's own logger settings (redaction, error serializer), writing to memory.
  const logger = createLogger(config.logLevel, logs);
  const app = await buildApp(config, logger);
  await app.ready();
  return { app, logs, config };
}

// ---------------------------------------------------------------------------------------
// The compiled service as a child process (signals, exit codes, log order)

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly logs: Record<string, unknown>[];
  readonly stderr: string[];
  port: number;
  readonly url: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  kill(signal: NodeJS.Signals): void;
}

export async function startService(env: Record<string, string | undefined>, { waitReady = true } = {}): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [serverEntry], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH, PORT: '0', LOG_LEVEL: 'info', MAIL_WORKERS: '2', SWEEP_INTERVAL_MS: '200', MAIL_RETRY_BASE_MS: '200', ...FAST_ARGON2, ...NO_RATE_LIMITS, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return followService(child, { waitReady });
}

/**
 * Follows a child that runs the service however it was started (node directly, or `npm start`
 * with npm's own output on stdout): JSON lines are logs, anything else is kept with stderr.
 */
export async function followService(child: ChildProcess, { waitReady = true, readyTimeoutMs = 30_000 } = {}): Promise<ServiceProcess> {
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let buffer = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        stderr.push(line);
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const service: ServiceProcess = {
    child,
    logs,
    stderr,
    port: 0,
    get url() {
      return `http://127.0.0.1:${this.port}`;
    },
    exited,
    async waitForLog(msg, timeoutMs = 30_000) {
      let found: Record<string, unknown> | undefined;
      let gone = false;
      void exited.then(() => (gone = true));
      await waitUntil(
        () => {
          found = logs.find((line) => line.msg === msg);
          return found !== undefined || gone;
        },
        timeoutMs,
        () => `log line "${msg}" (stderr: ${stderr.join('').slice(-500)})`,
      );
      if (!found) throw new Error(`service exited before logging "${msg}": ${stderr.join('').slice(-500)}`);
      return found;
    },
    kill(signal) {
      child.kill(signal);
    },
  };
  if (waitReady) {
    const started = await service.waitForLog('starting server', readyTimeoutMs);
    service.port = Number(new URL(String(started.address)).port);
  }
  return service;
}

/** Pids whose command line mentions `text` (Linux /proc; postgres is started with -D <dir>). */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

export async function postJson(baseUrl: string, route: string, body: unknown, method = 'POST'): Promise<{ status: number; body: any }> {
  const response = await fetch(`${baseUrl}${route}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}

/** The activation token in a welcome email's text part. */
export function tokenFrom(mail: ReceivedMail): string {
  const match = /"token":\s*"([A-Z2-7]{26})"/.exec(mail.parsed.text ?? '');
  assert.ok(match, 'welcome email carries an activation token');
  return match[1]!;
}

// ---------------------------------------------------------------------------------------
// Cleanup of what a test file starts

/**
 * The services and SMTP sinks a test file starts, so that one `cleanup()` in after() stops
 * every one of them, even after a failed assertion (a live child would hang the runner).
 */
export class ChildScope {
  readonly services: ServiceProcess[] = [];
  readonly sinks: SmtpSink[] = [];

  constructor(private readonly defaults: () => Record<string, string | undefined> = () => ({})) {}

  async sink(behaviour: SmtpBehaviour = {}): Promise<SmtpSink> {
    const started = await startSmtpSink(behaviour);
    this.sinks.push(started);
    return started;
  }

  async service(env: Record<string, string | undefined>, options?: { waitReady?: boolean }): Promise<ServiceProcess> {
    const started = await startService({ ...this.defaults(), ...env }, options);
    this.services.push(started);
    return started;
  }

  async cleanup(): Promise<void> {
    for (const service of this.services) {
      if (service.child.exitCode === null && service.child.signalCode === null) {
        service.kill('SIGKILL');
        await service.exited;
      }
    }
    await Promise.all(this.sinks.map((sink) => sink.stop()));
  }
}
