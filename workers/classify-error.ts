// nodemailer does not say whether a failure is about this email or about the provider; the
// SMTP phase that failed and the reply code do. Only a 5xx to RCPT TO or to this message's
// DATA is about the email (unknown recipient, content refused). Everything else is about the
// provider, the network or our own setup (credentials, TLS, a paused sender refusing MAIL
// FROM with 554): retrying, with the circuit breaker pausing sends, is the right answer.
import type { FailureKind } from '../src/mail/contract.js';

export interface Classified {
  readonly code: string;
  readonly responseCode: number | null;
  readonly command: string | null;
  readonly kind: FailureKind;
  readonly message: string;
}

/** Phases whose 5xx reply is about this one email. */
const PER_MESSAGE_COMMANDS = new Set(['RCPT TO', 'DATA']);
/** 4xx replies (and enhanced codes) that ask the sender to slow down. */
const THROTTLING = /\b4\.7\.[01]\b|throttl|rate limit|rate exceeded|sending rate|too many/i;

export function classifySendError(error: unknown): Classified {
  const { code, responseCode, command, response, message } = (error ?? {}) as Record<string, unknown>;
  const smtpCode = typeof responseCode === 'number' ? responseCode : null;
  const phase = typeof command === 'string' ? command : null;
  const reply = `${typeof response === 'string' ? response : ''} ${typeof message === 'string' ? message : ''}`;
  let kind: FailureKind = 'provider';
  if (smtpCode !== null && smtpCode >= 500 && phase !== null && PER_MESSAGE_COMMANDS.has(phase)) kind = 'permanent';
  else if (smtpCode !== null && smtpCode >= 400 && smtpCode < 500 && (smtpCode === 454 || THROTTLING.test(reply)) && phase !== 'AUTH PLAIN' && !String(phase).startsWith('AUTH')) kind = 'throttled';
  return {
    code: typeof code === 'string' ? code : 'EUNKNOWN',
    responseCode: smtpCode,
    command: phase,
    kind,
    message: String(message ?? error).slice(0, 500),
  };
}
