// A signup load client for the shutdown and crash tests: unique signups at full speed with a
// bounded number of requests in flight, each bounded in time, and a record of what every
// address got back. Not a benchmark: the point is the per-address ledger the tests check
// against what the SMTP server received.
import { uniqueEmail } from './helpers.js';

export interface SignupOutcome {
  readonly email: string;
  readonly target: string;
  /** Date.now() when the request was sent. */
  readonly startedAt: number;
  readonly elapsedMs: number;
  /** The HTTP status, or undefined when no response came back. */
  readonly status: number | undefined;
  readonly body: unknown;
  /** For a request without a response: 'timeout', or the network error code ('ECONNREFUSED', 'UND_ERR_SOCKET', …). */
  readonly failure: string | undefined;
}

export interface SignupLoad {
  readonly outcomes: SignupOutcome[];
  /** Outcomes with status 202. */
  accepted(): SignupOutcome[];
  count(predicate: (outcome: SignupOutcome) => boolean): number;
  /** Stops sending; resolves when every request in flight has its outcome. */
  stop(): Promise<void>;
  readonly done: Promise<void>;
}

export interface SignupLoadOptions {
  /** Base URLs to send to, round robin. */
  readonly targets: readonly string[];
  readonly concurrency: number;
  /** Hard bound on the run: the load stops by itself after this long. */
  readonly maxDurationMs: number;
  /** A request without an answer after this long counts as hung. */
  readonly requestTimeoutMs?: number;
  readonly prefix?: string;
}

function failureOf(error: unknown): string {
  const err = error as { name?: string; code?: string; cause?: { code?: string; name?: string } };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'timeout';
  return err.cause?.code ?? err.code ?? err.cause?.name ?? err.name ?? 'error';
}

export function startSignupLoad(options: SignupLoadOptions): SignupLoad {
  const outcomes: SignupOutcome[] = [];
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const deadline = Date.now() + options.maxDurationMs;
  let stopped = false;
  let sequence = 0;

  const one = async (): Promise<void> => {
    const target = options.targets[sequence++ % options.targets.length]!;
    const email = uniqueEmail(options.prefix ?? 'load');
    const startedAt = Date.now();
    let status: number | undefined;
    let body: unknown;
    let failure: string | undefined;
    try {
      const response = await fetch(`${target}/v1/users`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'Load Tester', email, password: 'pa55word1234' }),
        signal: AbortSignal.timeout(requestTimeoutMs),
      });
      status = response.status;
      const text = await response.text();
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
    } catch (error) {
      failure = failureOf(error);
    }
    outcomes.push({ email, target, startedAt, elapsedMs: Date.now() - startedAt, status, body, failure });
  };

  const worker = async (): Promise<void> => {
    while (!stopped && Date.now() < deadline) {
      await one();
      // A refused connection fails in microseconds: back off, so a dead target is not spun on
      // (that would starve the SMTP server in this same process, and slow the drain it measures).
      if (outcomes.at(-1)?.failure !== undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  const done = Promise.all(Array.from({ length: options.concurrency }, worker)).then(() => undefined);
  return {
    outcomes,
    accepted: () => outcomes.filter((outcome) => outcome.status === 202),
    count: (predicate) => outcomes.filter(predicate).length,
    stop: () => {
      stopped = true;
      return done;
    },
    done,
  };
}

/** "202=310 503=12 error:timeout=1": the outcomes counted by status or failure, for messages. */
export function describeOutcomes(outcomes: readonly SignupOutcome[]): string {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    const key = o.status !== undefined ? String(o.status) : `error:${o.failure}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts].map(([key, n]) => `${key}=${n}`).join(' ');
}
