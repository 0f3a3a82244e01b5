// Settings and names every harness uses.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/test/support/). */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The compiled service, as `npm start` runs it. */
export const serverEntry = path.join(projectRoot, 'dist/src/server.js');

/** Low hashing cost, for runs that measure behaviour or mail, not argon2. */
export const FAST_ARGON2 = { ARGON2_MEMORY_KIB: '64', ARGON2_ITERATIONS: '1' } as const;

/**
 * Tests and benchmarks send many signups from 127.0.0.1 in a minute: the signup rate limits
 * are off unless a test turns them on (test/hardening.test.ts does).
 */
export const NO_RATE_LIMITS = { RATE_LIMIT_PER_MINUTE: '0', RATE_LIMIT_GLOBAL_PER_MINUTE: '0' } as const;

/** The sender of every test and benchmark email: its domain is the Message-ID's. */
export const TEST_MAIL_FROM = 'Mailoffload <no-reply@mailoffload.test>';

/**
 * What every test instance runs with, in-process or as a child: two mail threads, a fast
 * sweeper and retries, cheap hashes, no rate limits, the test sender. A test's own env wins.
 */
export const TEST_ENV = {
  MAIL_WORKERS: '2',
  SWEEP_INTERVAL_MS: '200',
  MAIL_RETRY_BASE_MS: '200',
  MAIL_FROM: TEST_MAIL_FROM,
  ...FAST_ARGON2,
  ...NO_RATE_LIMITS,
} as const;

export function unique(prefix = 'user'): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

export function uniqueEmail(prefix = 'user'): string {
  return `${unique(prefix)}@example.com`;
}
