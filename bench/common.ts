// What the load test, the redeploy drill and the benchmarks share beyond the support kit
// (test/support/): the delivery check at the SMTP sink, RSS sampling, progress lines, the
// output format and the way a tool ends.
import { readFileSync } from 'node:fs';
import { startSignupLoad, summarize, type LoadSummary, type SignupLoad, type SignupLoadOptions } from '../test/support/load.js';
import type { CleanupStack, Scope } from '../test/support/scope.js';
import type { Exit } from '../test/support/service.js';
import type { SinkProcess, SinkReport } from '../test/support/smtp-sink-process.js';
import { heldWithin } from '../test/support/wait.js';

export function exitCodeOf(exit: Exit): string {
  return exit.signal ? `signal ${exit.signal}` : String(exit.code);
}

/**
 * Runs the tool's cleanup (services, sinks, PostgreSQL, folders), then exits with `code`: 0
 * when nothing was lost, 1 when something was, 2 when the tool itself failed.
 */
export async function finish(cleanup: CleanupStack, code: number): Promise<never> {
  await cleanup.run().catch((error: unknown) => process.stderr.write(`cleanup: ${error instanceof Error ? error.message : String(error)}\n`));
  process.exit(code);
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

/** One line a second on stderr while a load runs; returns the function that stops it. */
export function reportProgress(load: SignupLoad, extra: () => string = () => ''): () => void {
  let second = 0;
  const timer = setInterval(() => process.stderr.write(`  t=${++second}s requests sent=${load.sent} accepted=${load.accepted().length}${extra()}\n`), 1000);
  return () => clearInterval(timer);
}

/** A load run to its end (with a progress line a second unless `quiet`), and its figures. */
export async function runSignups(scope: Scope, options: SignupLoadOptions, { quiet = false } = {}): Promise<{ load: SignupLoad; summary: LoadSummary; accepted: Set<string> }> {
  const load = startSignupLoad(scope, options);
  const stopProgress = quiet ? () => undefined : reportProgress(load);
  await load.done;
  stopProgress();
  return { load, summary: summarize(load.outcomes), accepted: acceptedSet(load) };
}

/** MAIL_* variables of the tool's environment: they tune the services it starts, as they would in production. */
export function mailSettingsFromEnvironment(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[0].startsWith('MAIL_') && entry[1] !== undefined));
}

/** "; from the environment: MAIL_WORKERS=1 MAIL_SMTP_CONNECTIONS=20", or "" when there are none. */
export function describeSettings(settings: Record<string, string>): string {
  const pairs = Object.entries(settings).map(([name, value]) => `${name}=${value}`);
  return pairs.length === 0 ? '' : `; from the environment: ${pairs.join(' ')}`;
}

/** The addresses that got a 202, lowercased as the SMTP sink counts them. */
export function acceptedSet(load: SignupLoad): Set<string> {
  return new Set(load.accepted().map((outcome) => outcome.email.toLowerCase()));
}

/** The HTTP statuses other than 2xx among counts by status (summarize().byStatus). */
export function non2xxOf(byStatus: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(byStatus).filter(([key]) => /^\d+$/.test(key) && !key.startsWith('2')));
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
 * Waits until every accepted address has its email at the sink (or the deadline). Duplicates:
 * deliveries beyond the first for an accepted address (every address is used once per run;
 * Message-IDs are not compared because runs on different databases reuse outbox ids).
 * While emails are still arriving it asks the sink only for its count: the full report (every
 * recipient so far) is large, and the sink and this tool share the cores being measured.
 */
export async function awaitDelivery(sink: SinkProcess, accepted: ReadonlySet<string>, loadEndedAt: number, timeoutMs: number): Promise<Delivery> {
  const count = (r: SinkReport) => {
    let delivered = 0;
    for (const email of accepted) if ((r.byRecipient.get(email) ?? 0) > 0) delivered++;
    return delivered;
  };
  let report: SinkReport = await sink.report();
  // The sink's count once every missing email has arrived (more if some arrive twice).
  let awaited = report.total + (accepted.size - count(report));
  const done = await heldWithin(async () => {
    if ((await sink.total()) < awaited) return false;
    report = await sink.report();
    awaited = report.total + (accepted.size - count(report));
    return count(report) === accepted.size;
  }, timeoutMs, 100);
  if (!done) report = await sink.report();
  const drainMs = done ? Math.max(0, Date.now() - loadEndedAt) : undefined;
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
