// What the API thread and the password-hashing threads (workers/hash-worker.ts) exchange.

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
