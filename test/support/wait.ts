// The one way the tests and the benchmarks wait for something: poll a condition until it
// holds, with a deadline. Never a bare sleep as synchronisation.

/** Thrown by waitUntil when the deadline passes; callers that can go on without it catch it. */
export class WaitTimeoutError extends Error {
  override readonly name = 'WaitTimeoutError';
}

/**
 * Resolves as soon as `condition` returns true. The condition is checked first at once, then
 * every `intervalMs`; after `timeoutMs` it is checked one last time, and if it still does not
 * hold the promise rejects with a WaitTimeoutError naming `describe()`. An error thrown by
 * the condition rejects at once (it is a failure, not a "not yet").
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  describe: () => string = () => 'condition',
  intervalMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const overdue = Date.now() > deadline;
    if (await condition()) return;
    if (overdue) throw new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** True if `condition` held within `timeoutMs`, false if the deadline passed (for reports). */
export async function heldWithin(condition: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  try {
    await waitUntil(condition, timeoutMs, undefined, intervalMs);
    return true;
  } catch (error) {
    if (error instanceof WaitTimeoutError) return false;
    throw error;
  }
}
