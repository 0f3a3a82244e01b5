// The command line of `npm run outbox`, parsed with node's util.parseArgs (strict) into one
// typed command, or a UsageError whose message is the one line the operator sees.
import { parseArgs } from 'node:util';
import { OUTBOX_STATUSES, PURGEABLE_STATUSES, type OutboxStatus, type PurgeableStatus } from '../src/db/outbox-admin.js';

export type Command =
  | { readonly name: 'help' }
  | { readonly name: 'stats'; readonly json: boolean }
  | { readonly name: 'list'; readonly json: boolean; readonly status: OutboxStatus; readonly limit: number }
  /** Dead rows only; `ids` narrows them. */
  | { readonly name: 'requeue'; readonly json: boolean; readonly ids: readonly number[] | undefined }
  | { readonly name: 'purge'; readonly json: boolean; readonly status: PurgeableStatus; readonly olderThan: string; readonly olderThanMs: number };

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const USAGE = `usage: npm run outbox -- <command> [options]

  stats                                      counts by status, oldest pending email, dead emails by reason
  list [--status dead] [--limit 50]          emails of one status (pending, sending, sent, dead), latest change first
  requeue --status dead                      every dead email back to pending, due now, attempts from 0
  requeue --id N [--id M ...]                those dead emails only
  purge --status dead --older-than 30d       delete dead (or sent) emails last changed before that (s, m, h, d)

  --json                                     machine-readable output, on every command
  -h, --help                                 this text`;

const DEFAULT_LIST_LIMIT = 50;
const MAX_LIST_LIMIT = 10_000;
const MAX_AGE_MS = 3650 * 86_400_000;
const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Which options each command takes; anything else is a mistake worth stopping for. */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  stats: ['json'],
  list: ['json', 'status', 'limit'],
  requeue: ['json', 'status', 'id'],
  purge: ['json', 'status', 'older-than'],
};

export function parseOutboxArgs(argv: readonly string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: true,
      options: {
        status: { type: 'string' },
        limit: { type: 'string' },
        id: { type: 'string', multiple: true },
        'older-than': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    // parseArgs explains at length how to pass a positional starting with "-": keep the first sentence.
    throw new UsageError(String((error as Error).message).split(/\.\s/)[0]!.replace(/\.$/, ''));
  }
  const { values, positionals } = parsed;
  if (values.help) return { name: 'help' };
  const [name, ...extra] = positionals;
  if (name === undefined) throw new UsageError('a command is required: stats, list, requeue or purge');
  const allowed = ALLOWED[name];
  if (allowed === undefined) throw new UsageError(`unknown command "${name}": use stats, list, requeue or purge`);
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}" after ${name}`);
  for (const [option, value] of Object.entries(values)) {
    if (value !== undefined && !allowed.includes(option)) throw new UsageError(`${name} does not take --${option}`);
  }
  const json = values.json ?? false;

  switch (name) {
    case 'stats':
      return { name, json };
    case 'list':
      return { name, json, status: oneOf('--status', values.status ?? 'dead', OUTBOX_STATUSES), limit: limitOf(values.limit) };
    case 'requeue': {
      if (values.status === undefined && values.id === undefined) throw new UsageError('requeue needs --status dead or --id N');
      if (values.status !== undefined) oneOf('--status', values.status, ['dead'] as const);
      return { name, json, ids: values.id?.map(idOf) };
    }
    default: {
      if (values.status === undefined) throw new UsageError('purge needs --status dead (or sent)');
      if (values['older-than'] === undefined) throw new UsageError('purge needs --older-than, such as 30d');
      const olderThan = values['older-than'];
      return { name: 'purge', json, status: oneOf('--status', values.status, PURGEABLE_STATUSES), olderThan, olderThanMs: durationOf(olderThan) };
    }
  }
}

function oneOf<T extends string>(option: string, value: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`${option} must be ${choices.length === 1 ? choices[0] : `one of ${choices.join(', ')}`} (got "${value}")`);
}

function limitOf(value: string | undefined): number {
  if (value === undefined) return DEFAULT_LIST_LIMIT;
  const limit = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(limit >= 1 && limit <= MAX_LIST_LIMIT)) throw new UsageError(`--limit must be an integer from 1 to ${MAX_LIST_LIMIT} (got "${value}")`);
  return limit;
}

function idOf(value: string): number {
  const id = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(id >= 1 && Number.isSafeInteger(id))) throw new UsageError(`--id must be a positive integer (got "${value}")`);
  return id;
}

/** "30d", "12h", "90m", "45s": whole numbers only, so what is typed is what is deleted. */
export function durationOf(value: string): number {
  const match = /^(\d+)([smhd])$/.exec(value);
  const ms = match ? Number(match[1]) * UNIT_MS[match[2]!]! : Number.NaN;
  if (!(ms >= 0 && ms <= MAX_AGE_MS)) throw new UsageError(`--older-than must be a whole number with a unit s, m, h or d, at most 3650d (got "${value}")`);
  return ms;
}
