// pino, JSON lines by default; pretty output only when a person is watching a TTY.
import type { FastifyBaseLogger } from 'fastify';
import pino, { type Logger } from 'pino';

/** What the service's modules log through: a pino logger or a Fastify child of one. */
export type Log = FastifyBaseLogger;

/**
 * Paths that may carry a secret anywhere in a log object. Redaction is a second line of
 * defence: the code does not log request bodies, tokens or connection strings to begin with.
 */
export const redactPaths = [
  'password',
  'token',
  'plaintext',
  '*.password',
  '*.token',
  '*.plaintext',
  'req.headers.authorization',
  'req.headers.cookie',
  'smtpUrl',
  'databaseUrl',
  '*.smtpUrl',
  '*.databaseUrl',
  'auth',
  '*.auth',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    redact: { paths: redactPaths, censor: '[redacted]' },
  };
  if (destination) return pino(options, destination);
  if (process.stdout.isTTY) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  // Synchronous writes: a line logged just before process.exit() is never lost.
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
