// Process entry: config -> app -> listen. Signals are handled here and nowhere else.
// The shutdown sequence is carried out by app.close(): preClose flips readiness and stops
// the sweeper, the HTTP server stops accepting and lets in-flight requests finish, then the
// plugins' onClose hooks end the password-hashing threads, drain the task group under the
// deadline, release what is left, destroy the mail pool and close the database, in that order.
import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.js';
import { ConfigError, loadConfig, type Config } from './config.js';
import { createLogger } from './logger.js';

/** One plain line on stderr for a person at a terminal, beside the JSON log: `mailoffload: …`. */
function tellTerminal(text: string): void {
  process.stderr.write(`mailoffload: ${text}\n`);
}

const messageOf = (err: unknown) => (err instanceof Error ? err.message : String(err));

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  tellTerminal(error.message);
  process.exit(1);
}

const log = createLogger(config.logLevel);

// Backstop only: the drain itself is bounded by SHUTDOWN_TIMEOUT_MS and then releases its
// work to the outbox. This catches a close() that hangs for another reason.
const FORCE_EXIT_AFTER_DRAIN_MS = 10_000;

// Signals are handled from the first moment, not only once the app is built: a SIGTERM or a
// Ctrl-C during boot (initdb, migrations) would otherwise kill the process at once and leave
// the embedded PostgreSQL, which runs in its own process group, behind. Instead the shutdown
// waits for the boot to finish and then closes everything it opened.
const booting = buildApp(config, log);
let shuttingDown = false;

function secondSignal(signal: NodeJS.Signals): void {
  // Exit now; whatever was unfinished is still in the outbox and its lease will expire.
  log.error({ signal }, 'second signal: exiting immediately, unfinished emails stay in the outbox');
  log.flush();
}

// SIGINT and SIGTERM are ours, the rest (SIGHUP, errors) close-with-grace's. Under `npm start`
// npm forwards every SIGINT and SIGTERM it gets to the service, so a signal sent to the whole
// process group (Ctrl-C in a terminal, systemd stopping the unit) arrives twice, milliseconds
// apart. That copy is the same request to stop, not the second signal that cuts the drain.
const STOP_SIGNALS = ['SIGINT', 'SIGTERM'] as const;
// npm sets npm_lifecycle_event for every script it runs; started otherwise, nothing forwards.
const FORWARDED_COPY_MS = process.env.npm_lifecycle_event === undefined ? 0 : 1000;
let stopRequest: { signal: NodeJS.Signals; at: number } | undefined;

const grace = closeWithGrace(
  {
    delay: config.shutdownTimeoutMs + FORCE_EXIT_AFTER_DRAIN_MS,
    logger: false,
    skip: [...STOP_SIGNALS],
    onSecondSignal: secondSignal,
    onTimeout: (delay) => {
      log.error({ delayMs: delay }, 'shutdown did not finish in time: exiting');
      log.flush();
    },
  },
  async ({ signal, err }) => {
    shuttingDown = true;
    const stopSignal = signal ?? stopRequest?.signal ?? null;
    if (err) log.error({ err }, 'unexpected error: shutting down');
    log.info({ signal: stopSignal }, 'shutting down server');
    const started = Date.now();
    // A boot that failed has already logged and exited (below): nothing to close.
    const app = await booting.catch(() => undefined);
    if (app === undefined) return;
    await app.close();
    const drainMs = Date.now() - started;
    app.metrics.lastDrainSeconds.set(drainMs / 1000);
    log.info({ signal: stopSignal, drainMs }, 'stopped server');
    log.flush();
  },
);

for (const signal of STOP_SIGNALS) {
  process.on(signal, () => {
    if (!shuttingDown) {
      stopRequest = { signal, at: Date.now() };
      void grace.close();
    } else if (!(signal === stopRequest?.signal && Date.now() - stopRequest.at < FORWARDED_COPY_MS)) {
      secondSignal(signal);
      process.exit(1);
    }
  });
}

let app: Awaited<typeof booting>;
try {
  app = await booting;
} catch (err) {
  log.fatal({ err }, 'failed to start');
  log.flush();
  tellTerminal(`failed to start: ${messageOf(err)}`);
  process.exit(1);
}

// A signal during boot: the shutdown above closes the app; it must not start listening.
if (!shuttingDown) {
  try {
    const address = await app.listen({ port: config.port, host: config.host });
    log.info({ address, workers: config.mail.workers, smtp: config.smtpUrl ? 'configured' : 'built-in catcher' }, 'starting server');
  } catch (err) {
    // A signal that raced the listen owns the exit; otherwise the port is taken or similar.
    if (!shuttingDown) {
      log.fatal({ err }, 'failed to listen');
      await app.close().catch(() => undefined);
      log.flush();
      tellTerminal(`failed to listen: ${messageOf(err)}`);
      process.exit(1);
    }
  }
}
