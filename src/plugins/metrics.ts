// Prometheus metrics: the registry (app.metrics) for every component to add to, the outbox
// gauges and GET /metrics. Registered after the database, whose counts it reads.
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { countByStatus, type OutboxCounts } from '../db/outbox.js';
import { Metrics } from '../metrics.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

/** Scrapes within this long share one count query. */
const COUNT_CACHE_MS = 1000;

export default fp<{ config: Config }>(
  async (app, { config }) => {
    const metrics = new Metrics({ defaultMetrics: config.metricsEnabled });
    app.decorate('metrics', metrics);
    app.addHook('onClose', async () => metrics.close());

    // One count query per scrape serves the three gauges; while the database is away a scrape
    // reports the last known counts rather than failing.
    let lastCounts: OutboxCounts = { pending: 0, sending: 0, dead: 0 };
    let reading: { at: number; counts: Promise<OutboxCounts> } | undefined;
    const outboxCounts = () => {
      if (!reading || Date.now() - reading.at > COUNT_CACHE_MS) {
        reading = { at: Date.now(), counts: countByStatus(app.db).then((counts) => (lastCounts = counts), () => lastCounts) };
      }
      return reading.counts;
    };
    for (const status of ['pending', 'sending', 'dead'] as const) {
      metrics.gauge(`mailoffload_outbox_${status}`, `Outbox rows in status ${status}`, async () => (await outboxCounts())[status]);
    }

    app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  },
  { name: 'metrics', dependencies: ['database'] },
);
