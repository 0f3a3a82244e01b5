// nodemailer does not say whether a failure is about this email or about the provider; the
// SMTP step that failed does. A 5xx is not always permanent: an `EAUTH` 535 (a rotated
// password), a 554 to MAIL FROM ("sending paused") or a failed STARTTLS say nothing about the
// recipient and would kill every email if taken as final. Only a 5xx to RCPT TO or to this
// message's DATA is about this email. nodemailer's `command` names the step; its `code` alone
// cannot (a 554 to MAIL FROM and a 550 to RCPT TO are both `EENVELOPE`).
import type { FailureKind, SmtpPhase } from '../src/mail/contract.js';

export interface Classified {
  readonly code: string;
  readonly responseCode: number | null;
  readonly command: string | null;
  readonly phase: SmtpPhase;
  readonly kind: FailureKind;
  readonly message: string;
}

/** nodemailer's codes for a connection that failed, dropped or timed out. */
const CONNECTION_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNRESET', 'ECONNREFUSED', 'CONNECT_TIMEOUT', 'EPIPE', 'EPROXY']);

// Providers say "slow down" in the text more reliably than in the code: Amazon SES answers
// "454 Throttling failure: Maximum sending rate exceeded.", Gmail "421 4.7.0 Try again later",
// others "rate limit", "too many connections/messages".
const THROTTLE_TEXT = /throttl|rate[ -]?limit|sending rate|rate exceeded|too many/i;
// "421 4.7.0" and "451 4.7.1" are the policy replies that Gmail and greylisting-style rate
// limiters use; 454 4.7.0 alone is not one ("TLS not available", "temporary authentication
// failure" share it), so it needs the text.
const THROTTLE_REPLIES: Readonly<Record<number, string>> = { 421: '4.7.0', 451: '4.7.1' };
const ENHANCED_CODE = /^\d{3}[ -](\d\.\d{1,3}\.\d{1,3})\b/;

export function classifySendError(error: unknown): Classified {
  const fields = (error ?? {}) as { code?: unknown; responseCode?: unknown; command?: unknown; response?: unknown; message?: unknown };
  const code = typeof fields.code === 'string' ? fields.code : 'EUNKNOWN';
  const responseCode = typeof fields.responseCode === 'number' ? fields.responseCode : null;
  const command = typeof fields.command === 'string' ? fields.command : null;
  const message = String(fields.message ?? error).slice(0, 500);
  const reply = typeof fields.response === 'string' ? fields.response : message;
  const phase = phaseOf(code, command, responseCode);
  const kind = kindOf(code, command, phase, responseCode, reply);
  return { code, responseCode, command, phase, kind, message };
}

/** The worker's own check of the address failed: no SMTP was spoken, and it never will pass. */
export function invalidRecipient(): Classified {
  return { code: 'EINVALIDRECIPIENT', responseCode: null, command: null, phase: 'rcpt-to', kind: 'permanent', message: 'invalid recipient address' };
}

function phaseOf(code: string, command: string | null, responseCode: number | null): SmtpPhase {
  const step = (command ?? '').toUpperCase();
  // CONN with a reply code is a refused greeting (EPROTOCOL 554/421); without one the socket
  // itself failed (refused, reset, timed out before the greeting).
  if (step === 'CONN') return responseCode === null ? 'connection' : 'greeting';
  if (step === 'EHLO' || step === 'HELO' || step === 'LHLO') return 'ehlo';
  if (step === 'STARTTLS' || code === 'ETLS' || code === 'EREQUIRETLS') return 'starttls';
  // EAUTH also comes with command "API" when credentials are incomplete.
  if (step.startsWith('AUTH') || code === 'EAUTH' || code === 'ENOAUTH' || code === 'EOAUTH2') return 'auth';
  if (step === 'MAIL FROM') return 'mail-from';
  if (step === 'RCPT TO') return 'rcpt-to';
  if (step === 'DATA') return 'data';
  if (CONNECTION_CODES.has(code)) return 'connection';
  if (code === 'EMESSAGE' || code === 'ESTREAM') return 'message';
  return 'unknown';
}

function kindOf(code: string, command: string | null, phase: SmtpPhase, responseCode: number | null, reply: string): FailureKind {
  if (responseCode !== null && responseCode >= 400 && responseCode < 500) {
    return isThrottling(responseCode, reply) ? 'throttled' : 'provider';
  }
  // 503 (bad sequence of commands) is about the session's state, not the message: a new
  // connection can pass (nodemailer's isPermanentResponseCode makes the same exception).
  if (responseCode !== null && responseCode >= 500 && responseCode !== 503 && (phase === 'rcpt-to' || phase === 'data')) return 'permanent';
  // nodemailer could not parse the recipient and refused before speaking SMTP.
  if (code === 'EENVELOPE' && command === 'API') return 'permanent';
  return 'provider';
}

function isThrottling(responseCode: number, reply: string): boolean {
  if (THROTTLE_TEXT.test(reply)) return true;
  const enhanced = ENHANCED_CODE.exec(reply)?.[1];
  return enhanced !== undefined && THROTTLE_REPLIES[responseCode] === enhanced;
}
