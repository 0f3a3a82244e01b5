// Who closes what the harness opens. Every opener of the kit takes a Scope: a node:test
// context `t` (closed when that test ends, pass or fail), the test file's `file` scope
// (leak-check.ts), or a benchmark's CleanupStack (closed at its end or on Ctrl-C). Within one
// scope, things close in the reverse order of opening: the app before the SMTP server it sends
// to, the SMTP server before the database.
//
// The kit also keeps a registry of everything it opened and has not closed yet, so that the
// end of a test file can prove nothing was left behind (leak-check.ts).

/** Anything that runs a function at its end: node:test's TestContext is one. */
export interface Scope {
  after(fn: () => unknown): void;
}

/** Cleanup steps run last-in, first-out; every step runs even when an earlier one fails. */
export class CleanupStack implements Scope {
  #steps: (() => unknown)[] = [];

  after(fn: () => unknown): void {
    this.#steps.push(fn);
  }

  /** Runs (and forgets) every step, newest first; rejects with the first failure, after all ran. */
  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (let step = this.#steps.pop(); step !== undefined; step = this.#steps.pop()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup steps failed`);
  }
}

const stacks = new WeakMap<Scope, CleanupStack>();

/**
 * Registers `close` to run at the end of `scope`, in reverse order of opening. A node:test
 * context runs its own `after` hooks first-in, first-out, so each scope gets one stack and one
 * hook that runs it.
 */
export function closeAtEnd(scope: Scope, close: () => unknown): void {
  if (scope instanceof CleanupStack) {
    scope.after(close);
    return;
  }
  let stack = stacks.get(scope);
  if (!stack) {
    const created = new CleanupStack();
    stacks.set(scope, created);
    scope.after(() => created.run());
    stack = created;
  }
  stack.after(close);
}

/** `close` made safe to call twice: every call after the first gets the first call's promise. */
export function once(close: () => unknown): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => (closing ??= Promise.resolve().then(close).then(() => undefined));
}

// ---------------------------------------------------------------------------------------
// What is open right now

export interface OpenResource {
  /** 'service', 'smtp sink', 'app', 'pg pool', 'signup load', … */
  readonly kind: string;
  readonly label: string;
  /** Closes it, however it is; used to end a run that left it open. */
  readonly forceClose: () => Promise<unknown> | unknown;
}

const open = new Set<OpenResource>();

/** Records a resource as open; call the returned function once it is closed. */
export function track(resource: OpenResource): () => void {
  open.add(resource);
  return () => {
    open.delete(resource);
  };
}

export function openResources(): OpenResource[] {
  return [...open];
}

// ---------------------------------------------------------------------------------------
// Command-line tools

/**
 * Ctrl-C in a benchmark: run its cleanup (stop the services, sinks and PostgreSQL it started,
 * remove its folders), then exit 130 as a shell expects.
 */
export function cleanUpOnInterrupt(cleanup: CleanupStack): void {
  process.once('SIGINT', () => {
    void cleanup.run().catch(() => undefined).finally(() => process.exit(130));
  });
}
