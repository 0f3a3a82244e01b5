// The Piscina entry of the password-hashing threads: argon2id at the service's cost, one hash
// after another. The thread names itself and lowers its own priority once, at load.
import { writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';
import { hashSync } from '@node-rs/argon2';
import { HASH_THREAD_NAME, type HashSettings, type HashTask } from '../src/password-contract.js';
import { announceThreadLoaded } from '../src/thread-loading.js';

const settings = workerData as HashSettings;

if (process.platform === 'linux') {
  // On Linux the nice value is per thread (setpriority on the calling thread): this lowers this
  // thread only, so the API thread takes a core back from a hash whenever it has work.
  // Elsewhere it would renice the whole process, so it is skipped.
  try {
    setPriority(settings.nice);
  } catch {
    // Not permitted in this sandbox: run at normal priority.
  }
  try {
    // A name of its own in /proc, top and ps (Node calls every worker thread WorkerThread).
    writeFileSync('/proc/thread-self/comm', HASH_THREAD_NAME);
  } catch {
    // No /proc: the name stays Node's.
  }
}

// Last: from here on the thread may be terminated safely (see thread-loading.ts).
announceThreadLoaded();

export default function hashPassword({ password, memoryKib, iterations }: HashTask): string {
  return hashSync(password, { algorithm: 2 /* argon2id */, memoryCost: memoryKib, timeCost: iterations, parallelism: 1 });
}
