// Parsing and policy for the hardening settings, kept out of config.ts so the variables
// table there stays a table: which proxies may set X-Forwarded-For, when a plain smtp:// URL
// must be upgraded with STARTTLS, and which SMTP URLs are refused.
import { isIP } from 'node:net';
import { parse as parseLikeNodemailer } from 'nodemailer/lib/shared/url.js';

/**
 * Fastify's `trustProxy`: false, true (every hop), or addresses/CIDRs. Not a hop count: Fastify
 * 5.12 deliberately trusts nobody for a number, since a count cannot tell a proxy from a
 * direct client that sends enough X-Forwarded-For entries of its own.
 */
export type TrustProxy = boolean | string[];

// proxy-addr's named ranges, accepted as list entries.
const NAMED_RANGES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function isAddressOrCidr(entry: string): boolean {
  if (NAMED_RANGES.has(entry)) return true;
  const [address, prefix, extra] = entry.split('/');
  if (extra !== undefined || address === undefined) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (family === 4 ? 32 : 128);
}

/**
 * TRUST_PROXY: unset or "false" trusts nobody (X-Forwarded-For is ignored and the client is
 * the socket's peer); "true" trusts every hop (only when nothing but a proxy that overwrites
 * the header can reach the service); otherwise a comma list of proxy addresses, CIDRs or
 * proxy-addr's names (loopback, linklocal, uniquelocal). Undefined: invalid.
 */
export function parseTrustProxy(value: string | undefined): TrustProxy | undefined {
  if (value === undefined || value.trim() === '' || value.trim() === 'false') return false;
  const trimmed = value.trim();
  if (trimmed === 'true') return true;
  const entries = trimmed.split(',').map((entry) => entry.trim());
  return entries.every(isAddressOrCidr) ? entries : undefined;
}

/** localhost, 127.0.0.0/8 and ::1: traffic that never leaves the machine. */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host === '::ffff:127.0.0.1';
}

export interface SmtpPolicy {
  /** nodemailer's requireTLS: refuse to send unless STARTTLS succeeds (with a verified certificate). */
  readonly requireTls: boolean;
  /** Set when the URL must be refused: the reason, without the URL (it may hold a password). */
  readonly refusal?: string;
}

/**
 * smtps:// is TLS from the first byte, certificate verified. smtp:// to loopback (the built-in
 * catcher, a local relay) stays plain. smtp:// to any other host must upgrade with STARTTLS
 * and verify the certificate before anything else is sent, so credentials in such a URL travel
 * only inside TLS (port 587, as most providers document it). SMTP_ALLOW_INSECURE=true makes
 * STARTTLS opportunistic again, for relays that offer no TLS at all.
 *
 * Query parameters are refused: nodemailer turns every one of them into a transport option
 * that overrides the service's own (`tls.rejectUnauthorized=false`, `ignoreTLS=true`,
 * `requireTLS=false`, but also `maxRequeues`, which brings back duplicate sends, or `debug`,
 * which prints the SMTP dialogue). They are read with nodemailer's own URL parser, so what is
 * checked here is exactly what the transport would apply.
 */
export function smtpPolicy(smtpUrl: string | undefined, allowInsecure: boolean): SmtpPolicy {
  if (smtpUrl === undefined) return { requireTls: false };
  const query = parseLikeNodemailer(smtpUrl, true).query;
  const parameters = query !== null && typeof query === 'object' ? Object.keys(query) : [];
  if (parameters.length > 0) {
    // Parameter names only: a value might be a secret.
    return {
      requireTls: false,
      refusal: `invalid environment: SMTP_URL must not carry query parameters (got ${parameters.map((name) => JSON.stringify(name)).join(', ')}): they would override the service's TLS and delivery settings; use smtps://user:pass@host:465 or smtp://user:pass@host:587, and SMTP_ALLOW_INSECURE=true only for a relay without TLS`,
    };
  }
  const url = new URL(smtpUrl);
  if (url.protocol !== 'smtp:' || isLoopbackHost(url.hostname) || allowInsecure) return { requireTls: false };
  return { requireTls: true };
}
