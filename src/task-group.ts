// Node's answer to Go's sync.WaitGroup, as Greenlight uses it for background work:
// track(promise) is wg.Add(n) + a deferred wg.Done(); wait(deadline) is wg.Wait() with a
// timeout. Framework-free: it knows nothing of Fastify, Piscina or the database.

export class TaskGroupClosedError extends Error {
  constructor() {
    super('task group is closed: no new background tasks are accepted during shutdown');
    this.name = 'TaskGroupClosedError';
  }
}

export interface WaitResult {
  /** True when every tracked task settled before the deadline. */
  readonly drained: boolean;
  /** Tasks still running when wait() returned (0 when drained). */
  readonly pending: number;
  readonly waitedMs: number;
}

export type TaskErrorHandler = (error: unknown, context: Readonly<Record<string, unknown>>) => void;

export class TaskGroup {
  #pending = 0;
  #closed = false;
  #onIdle: Array<() => void> = [];
  readonly #onError: TaskErrorHandler;

  /** `onError` receives every rejection, with the context given to track(): like Greenlight's recover(). */
  constructor(onError: TaskErrorHandler) {
    this.#onError = onError;
  }

  get size(): number {
    return this.#pending;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Counts `promise` as `weight` pending tasks until it settles, and returns it. A rejection
   * goes to the error handler and never becomes an unhandled rejection, nor stops the group.
   */
  track<T>(promise: Promise<T>, context: Readonly<Record<string, unknown>> = {}, weight = 1): Promise<T> {
    if (this.#closed) throw new TaskGroupClosedError();
    this.#pending += weight;
    promise.then(
      () => this.#done(weight),
      (error: unknown) => {
        try {
          this.#onError(error, context);
        } catch (handlerError) {
          // A broken handler (a logger that throws) must not turn the rejection it was given
          // into an unhandled one, which would end the process.
          process.emitWarning(`task group error handler threw: ${String(handlerError)}`);
        } finally {
          this.#done(weight);
        }
      },
    );
    return promise;
  }

  /** Refuses new tasks from now on; tasks already tracked keep running. */
  close(): void {
    this.#closed = true;
  }

  /** Resolves when the group is empty, or at `deadlineMs` from now with what is still pending. */
  wait(deadlineMs: number): Promise<WaitResult> {
    const started = performance.now();
    const result = (drained: boolean): WaitResult => ({
      drained,
      pending: this.#pending,
      waitedMs: Math.round(performance.now() - started),
    });
    if (this.#pending === 0) return Promise.resolve(result(true));
    return new Promise((resolve) => {
      const onIdle = () => {
        clearTimeout(timer);
        resolve(result(true));
      };
      const timer = setTimeout(() => {
        this.#onIdle = this.#onIdle.filter((fn) => fn !== onIdle);
        resolve(result(false));
      }, Math.max(0, deadlineMs));
      this.#onIdle.push(onIdle);
    });
  }

  #done(weight: number): void {
    this.#pending -= weight;
    if (this.#pending > 0) return;
    const waiters = this.#onIdle;
    this.#onIdle = [];
    for (const resolve of waiters) resolve();
  }
}
