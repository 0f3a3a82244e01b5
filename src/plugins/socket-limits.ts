// MAX_REQUESTS_PER_SOCKET, enforced so that the socket really closes. Node's own
// server.maxRequestsPerSocket (which Fastify sets too) answers the last allowed request with
// `Connection: close` but leaves the socket open, answering 503 to anything more, until a
// timeout reaps it (documented Node behaviour, verified on Node 20). Setting the header
// ourselves on that response makes Node end the socket once the response is written.
import type { Socket } from 'node:net';
import fp from 'fastify-plugin';

export default fp<{ maxRequestsPerSocket: number }>(
  async (app, { maxRequestsPerSocket }) => {
    if (maxRequestsPerSocket <= 0) return;
    const served = new WeakMap<Socket, number>();
    app.addHook('onRequest', async (request, reply) => {
      const socket = request.raw.socket;
      const count = (served.get(socket) ?? 0) + 1;
      served.set(socket, count);
      if (count >= maxRequestsPerSocket) reply.header('connection', 'close');
    });
  },
  { name: 'socket-limits' },
);
