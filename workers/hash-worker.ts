// The Piscina entry of the password-hashing threads: argon2id at the service's cost, one hash
// after another. The thread names itself and lowers its own priority once, at load.
import { workerData } from 'node:worker_threads';
import { hashSync } from '@node-rs/argon2';
import { argon2idOptions, HASH_THREAD_NAME, type HashSettings, type HashTask } from '../src/password-contract.js';
import { announceThreadLoaded } from '../src/thread-loading.js';
import { nameThisThread, setThisThreadNice } from './this-thread.js';

const settings = workerData as HashSettings;

// Below the API thread, which takes a core back from a hash whenever it has work.
setThisThreadNice(settings.nice);
nameThisThread(HASH_THREAD_NAME);

// Last: from here on the thread may be terminated safely (see thread-loading.ts).
announceThreadLoaded();

export default function hashPassword({ password, memoryKib, iterations }: HashTask): string {
  return hashSync(password, argon2idOptions(memoryKib, iterations));
}
