// Prometheus metrics: the registry (app.metrics) for every component to add to, the outbox
// gauges and GET /metrics. Registered after the database, whose counts it reads. With
// METRICS_PORT, /metrics is served by a listener of its own, so it can stay off the public port.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
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

    if (config.metricsPort === undefined) {
      app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
      return;
    }
    const server = metricsServer(metrics);
    // Listening as part of app.listen(), just before the API binds: `starting server` then
    // means both listeners are up (fastify runs onListen hooks after listen() has resolved,
    // so a scraper could be refused after it), and a port that is taken stops the boot like
    // a taken API port. A boot that fails closes it (onClose). Closed last of the hooks
    // registered so far (onClose runs in reverse), so a drain's progress stays visible.
    app.addHook('onReady', async () => {
      server.listen(config.metricsPort, config.host);
      await once(server, 'listening'); // rejects with the 'error' of a port that is taken
      app.log.info({ address: `http://${config.host}:${config.metricsPort}/metrics` }, 'metrics listening');
    });
    app.addHook('onClose', () => new Promise<void>((resolve) => (server.listening ? server.close(() => resolve()) : resolve())));
  },
  { name: 'metrics', dependencies: ['database'] },
);

/** GET /metrics and nothing else, in this API's error shape. */
function metricsServer(metrics: Metrics): Server {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?', 1)[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'application/json; charset=utf-8' }).end('{"error":"the requested resource could not be found"}');
      return;
    }
    metrics.registry.metrics().then(
      (body) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      () => response.writeHead(500, { 'content-type': 'application/json; charset=utf-8' }).end('{"error":"the server encountered a problem and could not process your request"}'),
    );
  });
  // Scrapers keep connections open: do not let one hold the shutdown.
  server.keepAliveTimeout = 5_000;
  return server;
}
