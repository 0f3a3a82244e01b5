// Readiness and draining. From the first step of shutdown (preClose) the healthcheck says
// "draining", new requests get 503, and every response carries `Connection: close`: a
// keep-alive client that goes idle after shutdown begins must not hold the server open until
// its keep-alive timeout (fastify/fastify#7044). Requests already in a handler finish normally.
import fp from 'fastify-plugin';
import { errors } from '../errors.js';

const STILL_SERVED_WHILE_DRAINING = new Set(['/v1/healthcheck', '/metrics']);

export interface Lifecycle {
  draining: boolean;
  /** Date.now() when draining began; the shutdown deadline counts from here. */
  drainingSince: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle;
  }
}

export default fp<{ shutdownTimeoutMs: number }>(
  async (app, { shutdownTimeoutMs }) => {
    const lifecycle: Lifecycle = { draining: false, drainingSince: 0 };
    app.decorate('lifecycle', lifecycle);

    app.addHook('preClose', async () => {
      if (lifecycle.draining) return;
      lifecycle.draining = true;
      lifecycle.drainingSince = Date.now();
      // A request stuck on a database that hangs would hold the HTTP server's close (and so
      // the whole shutdown) until its query timeout: at the deadline its socket is cut.
      setTimeout(() => app.server.closeAllConnections(), shutdownTimeoutMs).unref();
    });

    app.addHook('onRequest', async (request) => {
      // The healthcheck reports the drain and /metrics shows its progress; everything else is refused.
      if (lifecycle.draining && !STILL_SERVED_WHILE_DRAINING.has(request.routeOptions.url ?? '')) throw errors.shuttingDown();
    });

    app.addHook('onSend', async (_request, reply) => {
      if (lifecycle.draining) reply.header('connection', 'close');
    });
  },
  { name: 'lifecycle' },
);
