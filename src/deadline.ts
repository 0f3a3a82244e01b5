// Shutdown steps that talk to the database must end by the shutdown deadline even when the
// database hangs (a stopped server answers nothing, so no driver error ever comes).

/**
 * Waits for `work` until `deadlineAt` (a Date.now() value). Resolves with its value, or with
 * `timedOut: true` when the deadline came first; `work` goes on in the background and its
 * failure is ignored then, because nobody is waiting for it any more.
 */
export async function settleBy<T>(work: Promise<T>, deadlineAt: number): Promise<{ timedOut: false; value: T } | { timedOut: true }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<{ timedOut: true }>((resolve) => {
    timer = setTimeout(() => resolve({ timedOut: true }), Math.max(0, deadlineAt - Date.now()));
  });
  work.catch(() => undefined);
  try {
    return await Promise.race([work.then((value) => ({ timedOut: false as const, value })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
