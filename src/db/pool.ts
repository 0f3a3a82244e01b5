// The pg pool and the transaction helper. Every query function elsewhere takes its client
// (a Pool or a PoolClient) as its first argument, so callers choose the transaction.
import pg from 'pg';
import type { Log } from '../logger.js';
import { CONNECTION_EXCEPTION_CLASS, SQLSTATE } from './sqlstate.js';

// bigint columns (ids) arrive as numbers: they stay far below 2^53, and JSON wants numbers.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number.parseInt(value, 10));

export type Queryable = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

export function createPool(connectionString: string, log: Log, queryTimeoutMs: number, max: number): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    // DATABASE_POOL_MAX (6). Every connection is a PostgreSQL backend process: one statement per
    // signup and coalesced result writes keep only a few busy, and more of them only compete
    // for the database's cores (the service's too, with PostgreSQL on the same host). With 20,
    // `npm run bench -- offload` read an event-loop delay p99 of 25.6 / 15.7 / 25.5 ms; with 6,
    // 17.6 / 9.4 / 14.0 ms, and e2e's CPU per signup and email fell in each of three pairs.
    max,
    // Fail fast when the database is away, so the API answers 503 instead of hanging.
    connectionTimeoutMillis: Math.min(5_000, queryTimeoutMs),
    idleTimeoutMillis: 30_000,
    // A server that hangs (stopped, or a network that drops packets) answers nothing: the
    // server-side timeout cannot fire, so the client gives up on its own too. Keepalive
    // notices a dead peer on an idle connection.
    query_timeout: queryTimeoutMs,
    statement_timeout: queryTimeoutMs,
    keepAlive: true,
    application_name: 'mailoffload',
  });
  // An idle client whose server went away emits 'error' on the pool; without a listener that
  // would crash the process. The pool discards the client and opens a new one when needed.
  pool.on('error', (err) => log.warn({ err }, 'idle database connection lost'));
  return pool;
}

export async function withTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError));
    throw error;
  } finally {
    // A client whose ROLLBACK failed is in an unknown state: destroy it rather than reuse it.
    client.release(broken);
  }
}

/**
 * Errors worth trying again: the database is unreachable, or it refused this attempt for a
 * passing reason (a serialization failure, a deadlock, too many connections, a query cancelled
 * by its timeout). The request path answers them 503; result writes retry them.
 */
export function isTransientDatabaseError(error: unknown): boolean {
  const { code } = (error ?? {}) as { code?: string };
  if (code === SQLSTATE.serializationFailure || code === SQLSTATE.deadlockDetected) return true;
  if (code === SQLSTATE.tooManyConnections || code === SQLSTATE.queryCanceled) return true;
  return isDatabaseUnavailable(error);
}

/** SQLSTATE classes and driver codes that mean "the database cannot be reached right now". */
export function isDatabaseUnavailable(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  if (typeof code === 'string') {
    if (code.startsWith(CONNECTION_EXCEPTION_CLASS)) return true;
    if (code === SQLSTATE.adminShutdown || code === SQLSTATE.crashShutdown || code === SQLSTATE.cannotConnectNow) return true;
    if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH'].includes(code)) return true;
  }
  // pg reports a dropped socket and a connect timeout without a code.
  return typeof message === 'string' && /^(Connection terminated|timeout exceeded when trying to connect|Query read timeout)/.test(message);
}
