// Activation tokens, as Greenlight makes them: 26 characters of base32 (130 bits from a
// CSPRNG), mailed in plaintext, stored only as their SHA-256.
import { createHash, randomInt } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
export const TOKEN_LENGTH = 26;
export const ACTIVATION_TTL_MS = 3 * 24 * 60 * 60 * 1000;

export interface Token {
  readonly plaintext: string;
  readonly hash: Buffer;
}

// Activation never compares a secret in JavaScript: the plaintext is hashed and the hash is
// looked up by the database's unique index. A timing difference in that lookup could at best
// reveal how much of a guessed token's SHA-256 matches a stored one, which says nothing
// useful about any preimage (the tokens carry 130 random bits), so it is safe without
// timingSafeEqual; that is also why the hash, never the plaintext, is stored and indexed.
export function hashToken(plaintext: string): Buffer {
  return createHash('sha256').update(plaintext).digest();
}

export function generateToken(): Token {
  let plaintext = '';
  for (let i = 0; i < TOKEN_LENGTH; i++) plaintext += BASE32[randomInt(32)];
  return { plaintext, hash: hashToken(plaintext) };
}
