// The end of every test file proves that the file left nothing behind: no app, pg pool,
// SMTP server, child process or load still open, and no socket, server, child or timer
// keeping the process alive beyond what it had before the first test. A leak fails the file
// (a root after() hook failure fails the run), names what leaked, and is closed so the run
// can still end. Every test file loads this module, through the kit's index or directly.
//
// It also holds the file's own scope, `file`, for what a whole file shares (one database,
// one app): those are closed here, newest first, just before the check.
import { after } from 'node:test';
import { CleanupStack, openResources, type Scope } from './scope.js';
import { waitUntil, WaitTimeoutError } from './wait.js';

/** How long closed things may take to let go of their handles (a socket's close is async). */
const SETTLE_MS = 5_000;

/**
 * Handle types that are not a leak: requests in progress (a write, a close, a DNS lookup)
 * finish by themselves, and an Immediate runs on the next turn of the loop.
 */
const TRANSIENT = /Req|Immediate/;

type Counts = Map<string, number>;

function activeResources(): Counts {
  const counts: Counts = new Map();
  for (const type of process.getActiveResourcesInfo()) {
    if (!TRANSIENT.test(type)) counts.set(type, (counts.get(type) ?? 0) + 1);
  }
  return counts;
}

/** What is active now beyond the baseline, as "TCPServerWrap x1"; empty when nothing is. */
export function beyond(baseline: Counts, now: Counts = activeResources()): string[] {
  return [...now].filter(([type, n]) => n > (baseline.get(type) ?? 0)).map(([type, n]) => `${type} x${n - (baseline.get(type) ?? 0)}`);
}

const state = globalThis as { [key: symbol]: CleanupStack | undefined };
const key = Symbol.for('mailoffload.test.file-scope');

function install(): CleanupStack {
  const stack = new CleanupStack();
  const baseline = activeResources();
  after(async () => {
    let cleanupError: unknown;
    await stack.run().catch((error: unknown) => (cleanupError = error));
    const leaked = openResources();
    // Whatever was left open is closed now, so that the failure below ends the run instead of
    // hanging it.
    await Promise.allSettled(leaked.map((resource) => resource.forceClose()));
    let lingering: string[] = [];
    try {
      await waitUntil(() => (lingering = beyond(baseline)).length === 0, SETTLE_MS, () => 'handles to close', 50);
    } catch (error) {
      if (!(error instanceof WaitTimeoutError)) throw error;
    }
    const problems = [
      ...leaked.map((resource) => `${resource.kind} left open: ${resource.label}`),
      ...(lingering.length > 0 ? [`active handles beyond the baseline ${SETTLE_MS} ms after the last test: ${lingering.join(', ')}`] : []),
    ];
    if (problems.length > 0) {
      // A handle the kit did not open cannot be closed from here and would keep the process
      // alive forever: once the failure is reported, end it (an unref'd timer fires only if
      // something else still holds the process).
      setTimeout(() => process.exit(1), 2_000).unref();
      throw new Error(`this test file left resources behind:\n  ${problems.join('\n  ')}`);
    }
    if (cleanupError !== undefined) throw cleanupError;
  });
  return stack;
}

/** The scope of the whole test file: closed after its last test, before the leak check. */
export const file: Scope = (state[key] ??= install());
