// Prometheus metrics (prom-client), one registry per app so tests can build several apps in
// one process. Gauges that read live state (outbox counts, pool, task group) are collected
// at scrape time rather than updated on the hot path.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MailResult } from './mail/contract.js';

const EVENT_LOOP_SAMPLE_MS = 10;

export class Metrics {
  readonly registry = new Registry();

  readonly emailsSent = new Counter({ name: 'mailoffload_emails_sent_total', help: 'Welcome emails accepted by the SMTP server', registers: [this.registry] });
  readonly emailsFailed = new Counter({
    name: 'mailoffload_emails_failed_total',
    help: 'Send attempts that failed, by error code and kind (permanent, provider, throttled)',
    labelNames: ['code', 'kind'] as const,
    registers: [this.registry],
  });
  readonly providerFaults = new Counter({
    name: 'mailoffload_provider_faults_total',
    help: 'Failed send attempts counted by the circuit breaker (provider faults and refusals), by SMTP phase',
    labelNames: ['phase'] as const,
    registers: [this.registry],
  });
  readonly providerPaused = new Gauge({
    name: 'mailoffload_provider_paused',
    help: '1 while the circuit breaker has paused sending, else 0',
    registers: [this.registry],
  });
  readonly sendRateConfigured = new Gauge({
    name: 'mailoffload_send_rate_configured',
    help: 'MAIL_RATE_PER_SECOND: the provider quota shared by all instances (0: unlimited)',
    registers: [this.registry],
  });
  readonly sendRateEffective = new Gauge({
    name: 'mailoffload_send_rate_effective',
    help: 'Send rate all instances keep to now, lowered by throttling replies (0: unlimited)',
    registers: [this.registry],
  });
  readonly throttledReplies = new Counter({
    name: 'mailoffload_throttled_replies_total',
    help: 'SMTP replies asking to slow down (throttling)',
    registers: [this.registry],
  });
  readonly permitWaitSeconds = new Counter({
    name: 'mailoffload_send_permit_wait_seconds_total',
    help: 'Time the dispatcher spent waiting for send permits with emails ready to go',
    registers: [this.registry],
  });
  readonly staleResults = new Counter({
    name: 'mailoffload_stale_results_total',
    help: 'Result writes and releases not applied because another lease had taken the row over',
    registers: [this.registry],
  });
  readonly sendDuration = new Histogram({
    name: 'mailoffload_email_send_duration_seconds',
    help: 'Time from handing a batch to the pool to its results, per email',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly signupDuration = new Histogram({
    name: 'mailoffload_signup_duration_seconds',
    help: 'POST /v1/users handler time, including the password hash',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly signupsDeferred = new Counter({
    name: 'mailoffload_signups_deferred_total',
    help: 'Signups whose email was left in the outbox for the sweeper because the pool was full',
    registers: [this.registry],
  });
  readonly lastDrainSeconds = new Gauge({ name: 'mailoffload_last_drain_duration_seconds', help: 'Duration of the last shutdown drain', registers: [this.registry] });
  readonly emailsRetried = new Counter({
    name: 'mailoffload_emails_retried_total',
    help: 'Failed sends scheduled for another attempt, by error code',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  readonly emailsDead = new Counter({
    name: 'mailoffload_emails_dead_total',
    help: 'Emails given up on (permanent error or the give-up age reached), by error code',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  // prom-client's nodejs_eventloop_lag_p99_seconds samples every 10 ms and reports the whole
  // interval (an idle loop reads about 0.011 s) and resets at each scrape, so two scrapers
  // disturb each other. This histogram records only the excess delay of a 10 ms timer and is
  // cumulative, so any window's p99 can be computed from two scrapes.
  readonly eventLoopDelay = new Histogram({
    name: 'mailoffload_eventloop_delay_seconds',
    help: 'How late a 10 ms timer on the API thread fires (event-loop delay)',
    buckets: [0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  #eventLoopTimer: NodeJS.Timeout | undefined;

  constructor(options: { defaultMetrics: boolean }) {
    // Default process metrics include nodejs_eventloop_lag_*, process_cpu_seconds_total
    // (process.cpuUsage(): every thread of the process, workers included) and RSS.
    if (options.defaultMetrics) {
      collectDefaultMetrics({ register: this.registry });
      let expected = performance.now() + EVENT_LOOP_SAMPLE_MS;
      this.#eventLoopTimer = setInterval(() => {
        const now = performance.now();
        this.eventLoopDelay.observe(Math.max(0, now - expected) / 1000);
        expected = now + EVENT_LOOP_SAMPLE_MS;
      }, EVENT_LOOP_SAMPLE_MS).unref();
    }
  }

  /** Stops the event-loop sampler. Safe to call twice. */
  close(): void {
    clearInterval(this.#eventLoopTimer);
  }

  /** A failed send's fate, once the outbox has recorded it. */
  observeOutcome(status: 'pending' | 'dead', reason: string | undefined): void {
    (status === 'dead' ? this.emailsDead : this.emailsRetried).inc({ reason: reason ?? 'unknown' });
  }

  observeBatch(results: readonly MailResult[], seconds: number): void {
    for (const result of results) {
      if (result.status === 'released') continue;
      this.sendDuration.observe(seconds);
      if (result.status === 'sent') this.emailsSent.inc();
      else if (result.status === 'failed') this.emailsFailed.inc({ code: result.code, kind: result.kind });
    }
  }

  /** A gauge whose value is read when Prometheus scrapes. */
  gauge(name: string, help: string, read: () => number | Promise<number>): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        this.set(await read());
      },
    });
  }
}
