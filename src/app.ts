// buildApp(config): the whole service as a Fastify instance, used by server.ts and by the
// tests. Plugins open their resource at boot and close it in onClose; Fastify runs onClose
// hooks in reverse order, so the order here is the reverse of the shutdown order:
// database (embedded PostgreSQL, pool, migrations) < mailer (catcher, pool, sweeper) < routes.
import { randomUUID } from 'node:crypto';
import Fastify, { LogController } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { countByStatus, type OutboxCounts } from './mail/outbox.js';
import { errors } from './errors.js';
import { BODY_LIMIT_BYTES, errorHandler } from './error-handler.js';
import { Metrics } from './metrics.js';
import jsonBody from './plugins/json-body.js';
import database from './plugins/database.js';
import lifecycle from './plugins/lifecycle.js';
import mailer from './plugins/mailer.js';
import rateLimit from './plugins/rate-limit.js';
import socketLimits from './plugins/socket-limits.js';
import healthcheck from './routes/healthcheck.js';
import users from './routes/users.js';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

export async function buildApp(config: Config, logger: Logger) {
  const app = createServer(config, logger);
  const metrics = new Metrics({ defaultMetrics: config.metricsEnabled });
  app.decorate('metrics', metrics);
  app.addHook('onClose', async () => metrics.close());
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((_request, reply) => {
    const notFound = errors.notFound();
    return reply.code(notFound.statusCode).send(notFound.body);
  });

  try {
    await registerPlugins(app, config, metrics);
  } catch (error) {
    // Close what the plugins that did load opened (the embedded PostgreSQL, the worker pool).
    await app.close().catch(() => undefined);
    throw error;
  }
  return app;
}

function createServer(config: Config, logger: Logger) {
  const app = Fastify({
    loggerInstance: logger,
    // One line per request would cost more CPU than the signup itself at load; errors and
    // lifecycle events are logged.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    bodyLimit: BODY_LIMIT_BYTES,
    // Greenlight's server: idle keep-alive connections 60 s, a whole request 10 s.
    keepAliveTimeout: 60_000,
    connectionTimeout: 60_000,
    requestTimeout: 10_000,
    // The lifecycle plugin answers while draining, in this API's error shape.
    return503OnClosing: false,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Hardening (issue 6): X-Forwarded-For only from the proxies TRUST_PROXY names; a keep-alive
    // socket is closed after MAX_REQUESTS_PER_SOCKET requests (0: no cap).
    trustProxy: config.http.trustProxy,
    maxRequestsPerSocket: config.http.maxRequestsPerSocket,
    // Node checks the header and request timeouts on a timer (default every 30 s, which would let
    // a slowloris client hold a socket for up to 35 s): check every second instead.
    http: { connectionsCheckingInterval: 1_000 },
    // Unknown fields and wrong types are errors (400), not silently dropped or coerced.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();
  // Slow clients: the headers must arrive within HEADERS_TIMEOUT_MS, default 5 s (slowloris).
  app.server.headersTimeout = config.http.headersTimeoutMs;
  // Past the cap, Node destroys new sockets at once instead of letting them exhaust file
  // descriptors and memory (0: no cap).
  if (config.http.maxConnections > 0) app.server.maxConnections = config.http.maxConnections;

  return app;
}

async function registerPlugins(app: ReturnType<typeof createServer>, config: Config, metrics: Metrics): Promise<void> {
  await app.register(jsonBody, { bodyLimit: BODY_LIMIT_BYTES });
  await app.register(lifecycle);
  await app.register(socketLimits, { maxRequestsPerSocket: config.http.maxRequestsPerSocket });
  await app.register(database, { config });
  await app.register(mailer, { config, metrics });

  // One count query per scrape serves the three gauges; while the database is away a scrape
  // reports the last known counts rather than failing.
  let lastCounts: OutboxCounts = { pending: 0, sending: 0, dead: 0 };
  let reading: { at: number; counts: Promise<OutboxCounts> } | undefined;
  const outboxCounts = () => {
    if (!reading || Date.now() - reading.at > 1000) {
      reading = { at: Date.now(), counts: countByStatus(app.db).then((counts) => (lastCounts = counts), () => lastCounts) };
    }
    return reading.counts;
  };
  for (const status of ['pending', 'sending', 'dead'] as const) {
    metrics.gauge(`mailoffload_outbox_${status}`, `Outbox rows in status ${status}`, async () => (await outboxCounts())[status]);
  }
  app.get('/metrics', async (_request, reply) => {
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  await app.register(rateLimit, { config, routes: ['POST /v1/users'] });
  await app.register(healthcheck);
  await app.register(users, { config, metrics });
}
