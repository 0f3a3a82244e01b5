// What the API thread and the password-hashing threads (workers/hash-worker.ts) exchange, and
// the one definition of a hash's parameters both use.
import type { Options } from '@node-rs/argon2';

/** The name each hashing thread gives itself on Linux (at most 15 characters). */
export const HASH_THREAD_NAME = 'argon2';

/** Given to each hashing thread when it starts. */
export interface HashSettings {
  /** The thread's nice value. */
  readonly nice: number;
}

/** One hash: argon2id with one lane, at the service's cost. */
export interface HashTask {
  readonly password: string;
  readonly memoryKib: number;
  readonly iterations: number;
}

/**
 * @node-rs/argon2's options for one hash: argon2id (2: the package's `Algorithm` is a `const
 * enum`, which isolated modules cannot import) with one lane, at the given cost.
 */
export function argon2idOptions(memoryKib: number, iterations: number): Options {
  return { algorithm: 2, memoryCost: memoryKib, timeCost: iterations, parallelism: 1 };
}
