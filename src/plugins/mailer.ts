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
    if (config.mail.leaseMs <= config.mail.sendTimeoutMs) {
      // Leases are not renewed while a send runs: a lease shorter than the send timeout lets
      // another instance take over a slow send and deliver the email twice.
      log.warn({ leaseMs: config.mail.leaseMs, sendTimeoutMs: config.mail.sendTimeoutMs }, 'MAIL_LEASE_MS is not above MAIL_SEND_TIMEOUT_MS: slow sends may be duplicated');
    }

    let smtpUrl = config.smtpUrl;
    if (smtpUrl === undefined) {
      const catcher = await startMailCatcher(path.join(config.dataDir, 'mailbox'), log);
      // Registered before the drain's hook, so it stops after the pool is destroyed.
      app.addHook('onClose', () => catcher.stop());
      smtpUrl = catcher.url;
    }

    const pipeline = new MailPipeline({ config, smtpUrl, db: app.db, log, metrics: app.metrics });
    app.decorate('mailer', pipeline);
    app.addHook('onReady', async () => pipeline.start());
    // Step 1 of the shutdown: claim nothing new. (Readiness flips in the lifecycle plugin.)
    app.addHook('preClose', () => pipeline.stopClaiming());
    // Steps 3 and 4, after the HTTP server has closed and in-flight requests have finished;
    // the deadline counts from the signal.
    app.addHook('onClose', () => pipeline.drain((app.lifecycle.drainingSince || Date.now()) + config.shutdownTimeoutMs));
  },
  { name: 'mailer', dependencies: ['database', 'lifecycle', 'metrics'] },
);
