// What the load test, the redeploy drill and the offload bench share: the SMTP sink child
// process, the compiled service as a child process, an autocannon run that signs up a
// unique address per request, the delivery check, RSS sampling and the output format.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const serverEntry = path.join(projectRoot, 'dist/src/server.js');
const sinkEntry = path.join(projectRoot, 'dist/bench/smtp-sink.js');

/** Every instance a bench starts has rate limiting off: the benches measure throughput. */
export const NO_RATE_LIMIT = { RATE_LIMIT_PER_MINUTE: '0', RATE_LIMIT_GLOBAL_PER_MINUTE: '0' } as const;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() > deadline) return false;
    await sleep(intervalMs);
  }
}

export function tempDataDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), `mailoffload-${prefix}-`));
  // The embedded PostgreSQL runs as `postgres` when we are root: it must enter this folder.
  chmodSync(dir, 0o755);
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A fresh database on the server of `serverUrl`, so a run starts with an empty outbox. */
export async function createDatabase(serverUrl: string, prefix: string): Promise<string> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

// ---------------------------------------------------------------------------------------
// SMTP sink (child process)

export interface SinkReport {
  readonly total: number;
  readonly held: number;
  readonly duplicateMessageIds: number;
  readonly byRecipient: Map<string, number>;
}

export interface Sink {
  readonly url: string;
  readonly pid: number;
  stall(): void;
  resume(): void;
  report(): Promise<SinkReport>;
  stop(): Promise<void>;
}

export async function startSink({ latencyMs = 0 } = {}): Promise<Sink> {
  const child = fork(sinkEntry, [], { env: { ...process.env, SINK_LATENCY_MS: String(latencyMs) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`SMTP sink exited during start (${code})`)));
    child.on('message', (message: { type: string; port?: number }) => {
      if (message.type === 'listening') resolve(message.port!);
    });
  });
  let nextId = 0;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    url: `smtp://127.0.0.1:${port}`,
    pid: child.pid!,
    stall: () => child.send({ type: 'stall' }),
    resume: () => child.send({ type: 'resume' }),
    report: () =>
      new Promise<SinkReport>((resolve) => {
        const id = ++nextId;
        const onMessage = (message: { type: string; id?: number } & Omit<SinkReport, 'byRecipient'> & { byRecipient: [string, number][] }) => {
          if (message.type !== 'report' || message.id !== id) return;
          child.off('message', onMessage);
          resolve({ ...message, byRecipient: new Map(message.byRecipient) });
        };
        child.on('message', onMessage);
        child.send({ type: 'report', id });
      }),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

// ---------------------------------------------------------------------------------------
// The compiled service as a child process

export interface Service {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  port: number;
  readonly url: string;
  readonly logs: Record<string, unknown>[];
  readonly stderr: string[];
  /** Resolves with the exit code (or 128 + signal number when killed by a signal). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  waitForLog(msg: string, timeoutMs: number): Promise<Record<string, unknown> | undefined>;
}

export function spawnNode(entry: string, env: Record<string, string | undefined>, name: string): Service {
  const child = spawn(process.execPath, [entry], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...NO_RATE_LIMIT, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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
        // Bounded: a bench must not grow without limit if the service logs a lot.
        if (logs.length < 10_000) logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        stderr.push(line);
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    if (stderr.length < 1000) stderr.push(chunk.toString('utf8'));
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let gone = false;
  void exited.then(() => (gone = true));
  return {
    name,
    child,
    pid: child.pid!,
    port: 0,
    get url() {
      return `http://127.0.0.1:${this.port}`;
    },
    logs,
    stderr,
    exited,
    async waitForLog(msg, timeoutMs) {
      let found: Record<string, unknown> | undefined;
      await waitUntil(() => {
        found = logs.find((line) => line.msg === msg);
        return found !== undefined || gone;
      }, timeoutMs, 20);
      return found;
    },
  };
}

/** Starts the service and waits for `starting server` (and its port). */
export async function startService(env: Record<string, string | undefined>, name = 'service', timeoutMs = 90_000): Promise<Service> {
  const service = spawnNode(serverEntry, { PORT: '0', LOG_LEVEL: 'info', ...env }, name);
  const started = await service.waitForLog('starting server', timeoutMs);
  if (!started) {
    service.child.kill('SIGKILL');
    throw new Error(`${name} did not start: ${service.stderr.join('').slice(-800)} ${JSON.stringify(service.logs.slice(-3))}`);
  }
  service.port = Number(new URL(String(started.address)).port);
  return service;
}

export function exitCodeOf(exit: { code: number | null; signal: NodeJS.Signals | null }): string {
  return exit.signal ? `signal ${exit.signal}` : String(exit.code);
}

/** Stops a child we started, politely then firmly; never leaves it running. */
export async function stopService(service: Service, graceMs = 40_000): Promise<void> {
  if (service.child.exitCode !== null || service.child.signalCode !== null) return;
  service.child.kill('SIGTERM');
  const timer = setTimeout(() => service.child.kill('SIGKILL'), graceMs);
  await service.exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------------------------
// Memory

/** Peak resident set size of a local process, sampled from /proc every 100 ms. */
export class RssSampler {
  peakBytes = 0;
  #timer: NodeJS.Timeout;
  constructor(private readonly pid: number) {
    this.sample();
    this.#timer = setInterval(() => this.sample(), 100);
  }
  sample(): number {
    try {
      const kib = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${this.pid}/status`, 'utf8'))?.[1] ?? 0);
      this.peakBytes = Math.max(this.peakBytes, kib * 1024);
      return kib * 1024;
    } catch {
      return 0; // the process is gone
    }
  }
  stop(): number {
    clearInterval(this.#timer);
    return this.peakBytes;
  }
}

// ---------------------------------------------------------------------------------------
// Load

export interface LoadOptions {
  readonly target: string;
  readonly connections: number;
  readonly durationS?: number;
  /** A fixed number of requests instead of a duration. */
  readonly amount?: number;
  readonly prefix: string;
  readonly progress: boolean;
  /** Called with each accepted (202) address. */
  readonly onAccepted?: (email: string) => void;
}

export interface LoadResult {
  readonly result: autocannon.Result;
  readonly accepted: Set<string>;
  readonly statusCounts: Record<string, number>;
  readonly errors: number;
}

const PASSWORD = 'correct horse battery staple';

/** POST /v1/users with a unique address per request. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const accepted = new Set<string>();
  let counter = 0;
  const runId = `${options.prefix}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  let finish!: (value: { err: Error | null; result: autocannon.Result }) => void;
  const finished = new Promise<{ err: Error | null; result: autocannon.Result }>((resolve) => (finish = resolve));
  const instance = autocannon({
    url: options.target,
    connections: options.connections,
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.durationS ?? 10 }),
    timeout: 30,
    requests: [
      {
        method: 'POST',
        path: '/v1/users',
        headers: { 'content-type': 'application/json' },
        setupRequest: (request) => {
          const n = ++counter;
          request.body = JSON.stringify({ name: `Load ${n}`, email: `${runId}-${n}@loadtest.example`, password: PASSWORD });
          return request;
        },
        onResponse: (status, body) => {
          if (status !== 202) return;
          const email = /"email":"([^"]+)"/.exec(body)?.[1];
          if (email) {
            accepted.add(email.toLowerCase());
            options.onAccepted?.(email.toLowerCase());
          }
        },
      },
    ],
  }, (err, result) => finish({ err, result }));
  if (options.progress) autocannon.track(instance, { renderProgressBar: process.stderr.isTTY, renderResultsTable: false, renderLatencyTable: false, outputStream: process.stderr });
  if (options.progress && !process.stderr.isTTY) {
    // No TTY (CI, a pipe): one line a second instead of a progress bar.
    let second = 0;
    instance.on('tick', () => process.stderr.write(`  t=${++second}s requests sent=${counter} accepted=${accepted.size}\n`));
  }
  const { err, result } = await finished;
  if (err) throw err;
  const statusCounts: Record<string, number> = {};
  for (const [code, stat] of Object.entries(result.statusCodeStats ?? {})) statusCounts[code] = Number((stat as { count: number | string }).count);
  return { result, accepted, statusCounts, errors: result.errors + result.timeouts };
}

// ---------------------------------------------------------------------------------------
// Delivery check at the SMTP side

export interface Delivery {
  readonly delivered: number;
  readonly lost: number;
  readonly duplicates: number;
  /** From the end of the load until the last accepted email arrived (undefined: not all did). */
  readonly drainMs: number | undefined;
  readonly extra: number;
}

/**
 * Polls the sink until every accepted address has its email (or the deadline). Duplicates:
 * deliveries beyond the first for an accepted address (every address is used once per run;
 * Message-IDs are not compared because runs on different databases reuse outbox ids).
 */
export async function awaitDelivery(sink: Sink, accepted: ReadonlySet<string>, loadEndedAt: number, timeoutMs: number, onPoll?: (report: SinkReport) => void): Promise<Delivery> {
  let report = await sink.report();
  const count = (r: SinkReport) => {
    let delivered = 0;
    for (const email of accepted) if ((r.byRecipient.get(email) ?? 0) > 0) delivered++;
    return delivered;
  };
  let drainMs: number | undefined;
  const done = await waitUntil(async () => {
    report = await sink.report();
    onPoll?.(report);
    return count(report) === accepted.size;
  }, timeoutMs, 200);
  if (done) drainMs = Math.max(0, Date.now() - loadEndedAt);
  const delivered = count(report);
  let duplicates = 0;
  let extra = 0;
  for (const [email, n] of report.byRecipient) {
    if (accepted.has(email)) duplicates += n - 1;
    else extra += n;
  }
  return { delivered, lost: accepted.size - delivered, duplicates, drainMs, extra };
}

// ---------------------------------------------------------------------------------------
// Output

export function fmt(value: number | undefined, digits = 1): string {
  if (value === undefined || Number.isNaN(value)) return 'n/a';
  return value.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export const mib = (bytes: number | undefined) => (bytes === undefined ? undefined : bytes / 1024 / 1024);

export function printTable(title: string, rows: [string, string][]): void {
  const width = Math.max(...rows.map(([key]) => key.length));
  process.stdout.write(`\n${title}\n${'-'.repeat(title.length)}\n`);
  for (const [key, value] of rows) process.stdout.write(`${key.padEnd(width)}  ${value}\n`);
}

export function summaryLine(values: Record<string, string | number | undefined>): string {
  return Object.entries(values)
    .map(([key, value]) => `${key}=${value === undefined ? 'n/a' : typeof value === 'number' ? String(Math.round(value * 100) / 100) : value}`)
    .join(' ');
}
