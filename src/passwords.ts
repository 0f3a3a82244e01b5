// argon2id through @node-rs/argon2: prebuilt binaries (no install script), and the hash
// runs on libuv's thread pool, off the event loop. The result is a PHC string.
import { hash, verify } from '@node-rs/argon2';

export interface PasswordCost {
  readonly memoryKib: number;
  readonly iterations: number;
}

// 2 is Algorithm.Argon2id; the package's enum is a `const enum`, which isolated modules cannot import.
const ARGON2ID = 2;

export function hashPassword(password: string, cost: PasswordCost): Promise<string> {
  return hash(password, { algorithm: ARGON2ID, memoryCost: cost.memoryKib, timeCost: cost.iterations, parallelism: 1 });
}

export function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  return verify(passwordHash, password);
}
