// `npm run outbox -- stats|list|requeue|purge`: look at the outbox and repair it, from the
// service's own configuration (loadConfig), whether the service runs or not. With DATABASE_URL
// unset it uses the embedded PostgreSQL of DATA_DIR: the running service's, or one started for
// the command and stopped after it. Success: the answer on stdout, exit 0. Anything wrong:
// one line on stderr, exit 1, no stack, never a password.
import type pg from 'pg';
import { ConfigError, loadConfig } from '../src/config.js';
import { useEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded-postgres.js';
import { listOutbox, outboxStats, purgeOutbox, requeueDead, type OutboxRow, type OutboxStats } from '../src/db/outbox-admin.js';
import { createPool } from '../src/db/pool.js';
import { createLogger } from '../src/logger.js';
import { parseOutboxArgs, USAGE, UsageError, type Command } from './outbox-args.js';

const NAME = 'mailoffload outbox';

/** A failure whose message is already the line to print. */
class CliError extends Error {}

async function main(argv: readonly string[]): Promise<string> {
  const command = parseOutboxArgs(argv);
  if (command.name === 'help') return `${USAGE}\n`;
  const config = loadConfig(process.env, { sendsMail: false });
  // The output is the answer; logs would only get in its way (and errors are thrown).
  const log = createLogger('silent');
  let embedded: EmbeddedPostgres | undefined;
  let url = config.databaseUrl;
  if (url === undefined) {
    embedded = await useEmbeddedPostgres(config.dataDir, log);
    url = embedded.url;
  }
  const pool = createPool(url, log, config.databaseQueryTimeoutMs, config.databasePoolMax);
  try {
    try {
      await pool.query('SELECT 1');
    } catch (error) {
      throw new CliError(`cannot reach the database at ${describeUrl(url)}: ${reasonOf(error)}`);
    }
    return await run(pool, command);
  } catch (error) {
    // 42P01 undefined_table, 42703 undefined_column: a database the migrations have not reached.
    const code = (error as { code?: unknown }).code;
    if (code === '42P01' || code === '42703') {
      throw new CliError(`the database at ${describeUrl(url)} lacks the current outbox schema: run npm run migrate (or start the service once)`);
    }
    throw error;
  } finally {
    await pool.end().catch(() => undefined);
    await embedded?.stop();
  }
}

async function run(db: pg.Pool, command: Exclude<Command, { name: 'help' }>): Promise<string> {
  switch (command.name) {
    case 'stats': {
      const stats = await outboxStats(db);
      return command.json ? json(stats) : formatStats(stats);
    }
    case 'list': {
      const rows = await listOutbox(db, command.status, command.limit);
      return command.json ? json({ status: command.status, rows }) : formatList(command.status, rows);
    }
    case 'requeue': {
      const ids = await requeueDead(db, command.ids);
      const skipped = command.ids ? [...new Set(command.ids)].filter((id) => !ids.includes(id)).sort((a, b) => a - b) : [];
      if (command.json) return json({ requeued: ids.length, ids, ...(command.ids ? { notDead: skipped } : {}) });
      const moved = `requeued ${ids.length} dead email${ids.length === 1 ? '' : 's'}${ids.length > 0 ? ` (id ${ids.join(', ')})` : ''}: pending, due now`;
      return `${moved}${skipped.length > 0 ? `; not dead, left alone: id ${skipped.join(', ')}` : ''}\n`;
    }
    case 'purge': {
      const purged = await purgeOutbox(db, command.status, command.olderThanMs);
      if (command.json) return json({ purged, status: command.status, olderThan: command.olderThan });
      return `purged ${purged} ${command.status} email${purged === 1 ? '' : 's'} last changed more than ${command.olderThan} ago\n`;
    }
  }
}

function json(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

function formatStats(stats: OutboxStats): string {
  const lines = Object.entries(stats.counts).map(([status, count]) => `${status.padEnd(8)} ${count}`);
  const oldest = stats.oldestPending;
  lines.push(oldest ? `oldest pending: id ${oldest.id}, ${formatAge(oldest.ageSeconds)} old` : 'oldest pending: none');
  if (stats.deadByReason.length === 0) lines.push('dead by reason: none');
  else {
    lines.push('dead by reason:');
    for (const { reason, count } of stats.deadByReason) lines.push(`${String(count).padStart(8)}  ${reason}`);
  }
  return `${lines.join('\n')}\n`;
}

function formatList(status: string, rows: readonly OutboxRow[]): string {
  if (rows.length === 0) return `no ${status} emails\n`;
  const table = [['id', 'email', 'attempts', 'updated', 'last_error']];
  for (const row of rows) {
    // last_error in full: it is the last column, and the end of a reply is often the useful part.
    table.push([String(row.id), row.email ?? '(user deleted)', String(row.attempts), row.updatedAt.toISOString(), row.lastError ?? '']);
  }
  const widths = table[0]!.map((_, column) => Math.max(...table.map((cells) => cells[column]!.length)));
  return `${table.map((cells) => cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column]!))).join('  ').trimEnd()).join('\n')}\n`;
}

function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const parts: [number, string][] = [
    [Math.floor(s / 86_400), 'd'],
    [Math.floor((s % 86_400) / 3600), 'h'],
    [Math.floor((s % 3600) / 60), 'm'],
    [s % 60, 's'],
  ];
  const first = parts.findIndex(([value]) => value > 0);
  if (first === -1) return '0s';
  return parts
    .slice(first, first + 2)
    .filter(([value]) => value > 0)
    .map(([value, unit]) => `${value}${unit}`)
    .join(' ');
}

/** host:port/database, never the user or the password. */
function describeUrl(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.hostname}:${parsed.port || '5432'}${parsed.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}

function reasonOf(error: unknown): string {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  const text = typeof message === 'string' && message !== '' ? message : String(error);
  return typeof code === 'string' && !text.includes(code) ? `${text} (${code})` : text;
}

/** No error line repeats the database password, whatever the driver put in its message. */
function redact(line: string): string {
  const url = process.env.DATABASE_URL;
  if (!url) return line;
  try {
    const password = new URL(url).password;
    if (password === '') return line;
    return line.split(password).join('***').split(decodeURIComponent(password)).join('***');
  } catch {
    return line;
  }
}

try {
  process.stdout.write(await main(process.argv.slice(2)));
} catch (error) {
  let line: string;
  if (error instanceof UsageError) line = `${error.message} (npm run outbox -- --help)`;
  else if (error instanceof ConfigError || error instanceof CliError) line = error.message;
  else line = reasonOf(error);
  process.stderr.write(`${NAME}: ${redact(line.replace(/\s*\n\s*/g, ' '))}\n`);
  process.exitCode = 1;
}
