// The mail pipeline wired into Fastify's lifecycle: built at boot (with the built-in mail
// catcher when SMTP_URL is unset), started once the app is ready, told to stop claiming when
// shutdown begins, and drained after the HTTP server has closed.
import path from 'node:path';
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { startMailCatcher } from '../mail/catcher.js';
import { MailPipeline } from '../mail/pipeline.js';

declare module 'fastify' {
  interface FastifyInstance {
    mailer: MailPipeline;
  }
}

export default fp<{ config: Config }>(
  async (app, { config }) => {
    const log = app.log.child({ component: 'mailer' });
    let smtpUrl = config.smtpUrl;
    if (smtpUrl === undefined) {
      const catcher = await startMailCatcher(path.join(config.dataDir, 'mailbox'), log);
      // Registered before the drain's hook, so it stops after the pool is destroyed.
      app.addHook('onClose', () => catcher.stop());
      smtpUrl = catcher.url;
    }

    const pipeline = new MailPipeline({ config, smtpUrl, db: app.db, log, metrics: app.metrics });
    app.decorate('mailer', pipeline);
    // The shutdown deadline counts from the signal (when draining began).
    const deadlineAt = () => (app.lifecycle.drainingSince || Date.now()) + config.shutdownTimeoutMs;
    app.addHook('onReady', async () => pipeline.start());
    // Step 1 of the shutdown: claim nothing new. (Readiness flips in the lifecycle plugin.)
    app.addHook('preClose', () => pipeline.stopClaiming(deadlineAt()));
    // Steps 3 and 4, after the HTTP server has closed and in-flight requests have finished.
    app.addHook('onClose', () => pipeline.drain(deadlineAt()));
  },
  { name: 'mailer', dependencies: ['database', 'lifecycle', 'metrics'] },
);
