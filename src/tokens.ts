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

export function hashToken(plaintext: string): Buffer {
  return createHash('sha256').update(plaintext).digest();
}

export function generateToken(): Token {
  let plaintext = '';
  for (let i = 0; i < TOKEN_LENGTH; i++) plaintext += BASE32[randomInt(32)];
  return { plaintext, hash: hashToken(plaintext) };
}
