// Write-behind for the outbox: while one write is under way, the items of every caller that
// arrives meanwhile are gathered and go out together in the next write. At low load a write
// carries one batch and starts at once; under load one statement (and one commit) carries the
// results of many batches, so the database cost per email falls as the rate rises.

interface Waiter {
  resolve(): void;
  reject(error: unknown): void;
}

export class WriteCoalescer<T> {
  #queued: T[] = [];
  #waiters: Waiter[] = [];
  #writing = false;

  constructor(private readonly write: (items: T[]) => Promise<void>) {}

  /** Resolves once a write that includes `items` has succeeded; rejects if that write failed. */
  add(items: readonly T[]): Promise<void> {
    if (items.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#queued.push(...items);
      this.#waiters.push({ resolve, reject });
      if (!this.#writing) void this.#drain();
    });
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    while (this.#queued.length > 0) {
      const items = this.#queued;
      const waiters = this.#waiters;
      this.#queued = [];
      this.#waiters = [];
      try {
        await this.write(items);
        for (const waiter of waiters) waiter.resolve();
      } catch (error) {
        for (const waiter of waiters) waiter.reject(error);
      }
    }
    this.#writing = false;
  }
}
