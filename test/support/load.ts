// The one signup load generator of the tests and the benchmarks: POST /v1/users with a unique
// address per request, a bounded number of requests in flight, each bounded in time, and a
// record of what every address got back (the per-address ledger the shutdown tests check
// against what the SMTP server received, and the benchmarks' accepted set and latencies).
// Requests go over keep-alive connections with node:http, whose client costs a fraction of
// fetch's CPU per request: the generator shares the cores with the service it measures.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { urlToHttpOptions } from 'node:url';
import { closeAtEnd, track, type Scope } from './scope.js';

export interface SignupOutcome {
  readonly email: string;
  readonly target: string;
  /** Date.now() when the request was sent. */
  readonly startedAt: number;
  readonly elapsedMs: number;
  /** When the answer arrived, in ms since the epoch with a fraction (comparable across processes). */
  readonly answeredAt: number;
  /** The HTTP status, or undefined when no response came back. */
  readonly status: number | undefined;
  readonly body: unknown;
  /** For a request without a response: 'timeout', or the network error code ('ECONNREFUSED', 'ECONNRESET', …). */
  readonly failure: string | undefined;
}

export interface SignupLoadOptions {
  /** Base URLs to send to, round robin; or a function asked before each request. */
  readonly targets: readonly string[] | (() => string);
  readonly concurrency: number;
  /** The load stops by itself after this long… */
  readonly maxDurationMs?: number;
  /** …or after this many requests, whichever comes first. One of the two is required. */
  readonly count?: number;
  /** A request without an answer after this long counts as hung (default 10 s). */
  readonly requestTimeoutMs?: number;
  /** Every address starts with it, so a test can find its users with LIKE 'prefix%'. */
  readonly prefix?: string;
  /** Requests started per second, spread evenly (default: as fast as answers come back). */
  readonly ratePerSecond?: number;
  /** Called with each outcome as it is recorded. */
  readonly onOutcome?: (outcome: SignupOutcome) => void;
}

export interface SignupLoad {
  readonly outcomes: SignupOutcome[];
  /** Requests sent so far (some may still be in flight). */
  readonly sent: number;
  /** Outcomes with status 202. */
  accepted(): SignupOutcome[];
  count(predicate: (outcome: SignupOutcome) => boolean): number;
  /** Stops sending; resolves when every request in flight has its outcome. */
  stop(): Promise<void>;
  readonly done: Promise<void>;
}

const PASSWORD = 'pa55word1234';

function failureOf(error: unknown): string {
  const err = error as { name?: string; code?: string; cause?: { code?: string; name?: string } };
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'timeout';
  return err.code ?? err.cause?.code ?? err.cause?.name ?? err.name ?? 'error';
}

/**
 * One POST over `agent`, bounded by `timeoutMs` from start to end. Lean on purpose: a plain
 * timer instead of AbortSignal.timeout, the target parsed once per load, the body read as a
 * string: at a hundred-odd requests a second this client's CPU is a part of what `npm run
 * bench -- hash` measures, on the same cores as the service.
 */
function post(agent: http.Agent, target: http.RequestOptions, body: string, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { hostname: target.hostname, port: target.port, path: '/v1/users', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, text }));
        response.on('error', reject);
      },
    );
    const timer = setTimeout(() => request.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { name: 'TimeoutError' })), timeoutMs);
    // 'close' comes once the response has ended or the request has failed: either way, done.
    request.on('close', () => clearTimeout(timer));
    request.on('error', reject);
    request.end(body);
  });
}

export function startSignupLoad(scope: Scope, options: SignupLoadOptions): SignupLoad {
  if (options.maxDurationMs === undefined && options.count === undefined) throw new Error('a signup load needs maxDurationMs or count');
  const outcomes: SignupOutcome[] = [];
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const deadline = Date.now() + (options.maxDurationMs ?? Number.POSITIVE_INFINITY);
  const limit = options.count ?? Number.POSITIVE_INFINITY;
  const runId = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const pick = typeof options.targets === 'function' ? options.targets : ((list) => () => list[sent % list.length]!)(options.targets);
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.concurrency });
  let stopped = false;
  let sent = 0;
  // Host and port of each target, parsed once (an IPv6 address without its brackets).
  const targets = new Map<string, http.RequestOptions>();
  const targetOf = (target: string) => targets.get(target) ?? targets.set(target, urlToHttpOptions(new URL(target))).get(target)!;

  const one = async (): Promise<SignupOutcome> => {
    const target = pick();
    const n = ++sent;
    const email = `${options.prefix ?? 'load'}-${runId}-${n}@example.com`;
    const startedAt = Date.now();
    const started = performance.now();
    let status: number | undefined;
    let body: unknown;
    let failure: string | undefined;
    try {
      const response = await post(agent, targetOf(target), JSON.stringify({ name: `Load Tester ${n}`, email, password: PASSWORD }), requestTimeoutMs);
      status = response.status;
      try {
        body = response.text ? JSON.parse(response.text) : undefined;
      } catch {
        body = response.text;
      }
    } catch (error) {
      failure = failureOf(error);
    }
    const answered = performance.now();
    const outcome = { email, target, startedAt, elapsedMs: Math.round((answered - started) * 10) / 10, answeredAt: performance.timeOrigin + answered, status, body, failure };
    outcomes.push(outcome);
    options.onOutcome?.(outcome);
    return outcome;
  };

  const began = performance.now();
  let slots = 0;
  // With a rate, the n-th request may not start before began + n / rate: each worker takes
  // the next slot, then waits for it.
  const paced = async (): Promise<void> => {
    if (options.ratePerSecond === undefined) return;
    const due = began + (slots++ * 1000) / options.ratePerSecond;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  };

  const worker = async (): Promise<void> => {
    while (!stopped && sent < limit && Date.now() < deadline) {
      await paced();
      if (stopped || sent >= limit || Date.now() >= deadline) break;
      const outcome = await one();
      // A refused connection fails in microseconds: back off, so a dead target is not spun on
      // (that would starve the SMTP server in the same process, and slow the drain it measures).
      if (outcome.failure !== undefined) await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  const untrack = track({ kind: 'signup load', label: options.prefix ?? 'load', forceClose: () => stop() });
  const done = Promise.all(Array.from({ length: options.concurrency }, worker)).then(() => {
    agent.destroy();
    untrack();
  });
  const stop = () => {
    stopped = true;
    return done;
  };
  closeAtEnd(scope, stop);
  return {
    outcomes,
    get sent() {
      return sent;
    },
    accepted: () => outcomes.filter((outcome) => outcome.status === 202),
    count: (predicate) => outcomes.filter(predicate).length,
    stop,
    done,
  };
}

/** "202=310 503=12 error:timeout=1": the outcomes counted by status or failure, for messages. */
export function describeOutcomes(outcomes: readonly SignupOutcome[]): string {
  return Object.entries(countOutcomes(outcomes))
    .map(([key, n]) => `${key}=${n}`)
    .join(' ');
}

/** Outcomes by status ("202") or failure ("error:timeout"). */
export function countOutcomes(outcomes: readonly SignupOutcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) {
    const key = o.status !== undefined ? String(o.status) : `error:${o.failure}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

export interface LoadSummary {
  readonly requests: number;
  /** From the first request sent to the last answer. */
  readonly durationMs: number;
  readonly requestsPerSecond: number;
  /** Latency percentiles of the requests that got an answer, in ms. */
  readonly latencyMs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number };
  readonly byStatus: Record<string, number>;
  /** Requests without an answer (connection errors and timeouts). */
  readonly failures: number;
}

export function summarize(outcomes: readonly SignupOutcome[]): LoadSummary {
  const answered = outcomes.filter((o) => o.status !== undefined).map((o) => o.elapsedMs).sort((a, b) => a - b);
  const at = (q: number) => answered[Math.min(answered.length - 1, Math.ceil(q * answered.length) - 1)] ?? Number.NaN;
  let first = Number.POSITIVE_INFINITY;
  let last = Number.NEGATIVE_INFINITY;
  for (const o of outcomes) {
    first = Math.min(first, o.startedAt);
    last = Math.max(last, o.startedAt + o.elapsedMs);
  }
  const durationMs = outcomes.length > 0 ? last - first : 0;
  return {
    requests: outcomes.length,
    durationMs,
    requestsPerSecond: durationMs > 0 ? outcomes.length / (durationMs / 1000) : 0,
    latencyMs: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: answered.at(-1) ?? Number.NaN },
    byStatus: countOutcomes(outcomes),
    failures: outcomes.filter((o) => o.failure !== undefined).length,
  };
}
