// Prometheus metrics (prom-client), one registry per app so tests can build several apps in
// one process. Gauges that read live state (outbox counts, pool, task group) are collected
// at scrape time rather than updated on the hot path.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { MailResult } from './mail/contract.js';

export class Metrics {
  readonly registry = new Registry();

  readonly emailsSent = new Counter({ name: 'mailoffload_emails_sent_total', help: 'Welcome emails accepted by the SMTP server', registers: [this.registry] });
  readonly emailsFailed = new Counter({
    name: 'mailoffload_emails_failed_total',
    help: 'Send attempts that failed, by error code and whether they will be retried',
    labelNames: ['code', 'retryable'] as const,
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

  constructor(options: { defaultMetrics: boolean }) {
    // Default process metrics include nodejs_eventloop_lag_* and the heap/RSS figures.
    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  observeBatch(results: readonly MailResult[], seconds: number): void {
    for (const result of results) {
      this.sendDuration.observe(seconds);
      if (result.status === 'sent') this.emailsSent.inc();
      else this.emailsFailed.inc({ code: result.code, retryable: String(result.retryable) });
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
