// The password hasher wired into the app: its threads start at boot, and end after the HTTP
// server has closed (every signup in flight has had its hash by then).
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { PasswordHasher } from '../passwords.js';

declare module 'fastify' {
  interface FastifyInstance {
    passwords: PasswordHasher;
  }
}

export default fp<{ config: Config }>(
  async (app, { config }) => {
    const log = app.log.child({ component: 'passwords' });
    const passwords = new PasswordHasher(config.argon2, log);
    app.decorate('passwords', passwords);
    if (passwords.threads > 0) log.debug({ threads: passwords.threads }, 'password hashing threads started, below the API thread in priority');
    // The shutdown deadline counts from the signal (when draining began).
    app.addHook('onClose', () => passwords.close((app.lifecycle.drainingSince || Date.now()) + config.shutdownTimeoutMs));
  },
  { name: 'passwords', dependencies: ['lifecycle'] },
);
