// argon2id through @node-rs/argon2: prebuilt binaries (no install script), and the hash
// runs on libuv's thread pool, off the event loop. The result is a PHC string.
import { availableParallelism } from 'node:os';
import { hash, verify } from '@node-rs/argon2';
import pLimit from 'p-limit';

export interface PasswordCost {
  readonly memoryKib: number;
  readonly iterations: number;
}

// 2 is Algorithm.Argon2id; the package's enum is a `const enum`, which isolated modules cannot import.
const ARGON2ID = 2;

// libuv's pool has 4 threads. Four argon2 hashes at once on a 2-core machine leave the API
// thread a third of a core and its event loop stalls; one hash per core hashes just as fast
// and leaves room for the event loop (and for libuv's other work: DNS, files).
const hashing = pLimit(availableParallelism());

export function hashPassword(password: string, cost: PasswordCost): Promise<string> {
  return hashing(() => hash(password, { algorithm: ARGON2ID, memoryCost: cost.memoryKib, timeCost: cost.iterations, parallelism: 1 }));
}

export function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  return verify(passwordHash, password);
}
