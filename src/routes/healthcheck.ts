import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@fastify/type-provider-typebox';

import { VERSION } from '../version.js';

const healthcheck: FastifyPluginAsyncTypebox = async (app) => {
  app.get(
    '/v1/healthcheck',
    {
      schema: {
        response: {
          200: Type.Object({ status: Type.Literal('available'), system_info: Type.Object({ version: Type.String(), instance: Type.String() }) }),
          503: Type.Object({ status: Type.Literal('draining') }),
        },
      },
    },
    async (_request, reply) => {
      // Readiness: a draining instance tells the load balancer to stop sending it traffic.
      if (app.lifecycle.draining) return reply.code(503).send({ status: 'draining' as const });
      return { status: 'available' as const, system_info: { version: VERSION, instance: app.mailer.owner } };
    },
  );
};

export default healthcheck;
