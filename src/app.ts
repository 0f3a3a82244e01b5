// buildApp(config): the whole service as a Fastify instance, used by server.ts and by the
// tests. Plugins open their resource at boot and close it in onClose; Fastify runs onClose
// hooks in reverse order, so the order here is the reverse of the shutdown order:
// database (embedded PostgreSQL, pool, migrations) < metrics < mailer (catcher, pipeline) < routes.
import { randomUUID } from 'node:crypto';
import Fastify, { LogController } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { errors } from './errors.js';
import { BODY_LIMIT_BYTES, errorHandler } from './error-handler.js';
import jsonBody from './plugins/json-body.js';
import database from './plugins/database.js';
import lifecycle from './plugins/lifecycle.js';
import mailer from './plugins/mailer.js';
import passwords from './plugins/passwords.js';
import metrics from './plugins/metrics.js';
import rateLimit from './plugins/rate-limit.js';
import socketLimits from './plugins/socket-limits.js';
import healthcheck from './routes/healthcheck.js';
import users from './routes/users.js';

export async function buildApp(config: Config, logger: Logger) {
  const app = createServer(config, logger);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => {
    // A known path with the wrong method is 405 with the methods it has (as Greenlight answers).
    const url = request.url.split('?', 1)[0]!;
    const allowed = HTTP_METHODS.filter((method) => app.hasRoute({ method, url }));
    const error = allowed.length > 0 ? errors.methodNotAllowed() : errors.notFound();
    if (allowed.length > 0) reply.header('allow', allowed.join(', '));
    return reply.code(error.statusCode).send(error.body);
  });

  try {
    await registerPlugins(app, config);
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
    // Hardening: X-Forwarded-For only from the proxies TRUST_PROXY names; a keep-alive
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

const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

async function registerPlugins(app: ReturnType<typeof createServer>, config: Config): Promise<void> {
  await app.register(jsonBody, { bodyLimit: BODY_LIMIT_BYTES });
  await app.register(lifecycle, { shutdownTimeoutMs: config.shutdownTimeoutMs });
  await app.register(socketLimits, { maxRequestsPerSocket: config.http.maxRequestsPerSocket });
  await app.register(database, { config });
  await app.register(metrics, { config });
  await app.register(mailer, { config });
  await app.register(passwords, { config });

  await app.register(rateLimit, { config, routes: ['POST /v1/users'] });
  await app.register(healthcheck);
  await app.register(users, { config });
}
