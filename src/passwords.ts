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

// libuv's pool has 4 threads. Four real-cost argon2 hashes at once (19 MiB, tens of ms of
// CPU each) on a 2-core machine leave the API thread a third of a core and its event loop
// stalls; one hash per core hashes just as fast and leaves it room. One more than cores was
// tried (a core idles while the API thread hands the next hash over): with three 19 MiB
// hashes sharing two cores' caches each hash took about 8 % more CPU, and `npm run bench --
// hash` read lower in four of six pairs (docs/benchmarks.md, cut 8). A cheap hash (the test
// and benchmark costs) is bound by the round trip through the pool, not by CPU: limiting it
// would only cap signups/s, so it is not limited.
const CPU_BOUND_MEMORY_KIB = 4096;
const hashSlots = pLimit(availableParallelism());

export function hashPassword(password: string, cost: PasswordCost): Promise<string> {
  const run = () => hash(password, { algorithm: ARGON2ID, memoryCost: cost.memoryKib, timeCost: cost.iterations, parallelism: 1 });
  return cost.memoryKib >= CPU_BOUND_MEMORY_KIB ? hashSlots(run) : run();
}

export function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  return verify(passwordHash, password);
}

/** Starts libuv's pool, where the hashes run (it starts with its first task): its threads then exist. */
export async function startHashThreads(): Promise<void> {
  await hash('', { algorithm: ARGON2ID, memoryCost: 8, timeCost: 1, parallelism: 1 });
}
