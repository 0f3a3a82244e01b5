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

// A PostgreSQL error echoes row values in some fields: `detail` ("Key (email)=(…) already
// exists", "Failing row contains (…)" with every column, the password hash included),
// `where` (PL/pgSQL context with values) and `internalQuery`. The SQLSTATE, constraint, table
// and message stay: they are what an operator needs, and the code never sends a password
// or a token plaintext to the database (only their hashes), so no message can echo one.
const ECHOING_FIELDS = ['detail', 'where', 'internalQuery', 'internalPosition'] as const;

/** pino's error serializer without the fields where a database error echoes values. */
export function serializeError(err: unknown): unknown {
  if (!(err instanceof Error)) return err;
  const serialized = pino.stdSerializers.err(err) as unknown as Record<string, unknown>;
  for (const field of ECHOING_FIELDS) if (serialized[field] !== undefined) serialized[field] = '[redacted]';
  const cause = serialized.cause;
  if (cause !== null && typeof cause === 'object') {
    for (const field of ECHOING_FIELDS) if ((cause as Record<string, unknown>)[field] !== undefined) (cause as Record<string, unknown>)[field] = '[redacted]';
  }
  return serialized;
}

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    level,
    redact: { paths: redactPaths, censor: '[redacted]' },
    serializers: { err: serializeError },
  };
  if (destination) return pino(options, destination);
  if (process.stdout.isTTY) {
    return pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  // Synchronous writes: a line logged just before process.exit() is never lost.
  return pino(options, pino.destination({ dest: 1, sync: true }));
}
