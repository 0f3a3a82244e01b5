// nodemailer does not say whether a failure is worth retrying; SMTP reply codes and its
// error codes do. 5xx replies are permanent (the server will say the same again), 4xx are
// temporary by definition, network failures may pass.
const TRANSIENT_CODES = new Set(['ECONNECTION', 'ETIMEDOUT', 'ESOCKET', 'EDNS', 'ECONNRESET', 'ECONNREFUSED', 'CONNECT_TIMEOUT', 'EPIPE']);

export interface Classified {
  readonly code: string;
  readonly responseCode: number | null;
  readonly retryable: boolean;
  readonly message: string;
}

export function classifySendError(error: unknown): Classified {
  const { code, responseCode, message } = (error ?? {}) as { code?: unknown; responseCode?: unknown; message?: unknown };
  const smtpCode = typeof responseCode === 'number' ? responseCode : null;
  const errorCode = typeof code === 'string' ? code : 'EUNKNOWN';
  let retryable: boolean;
  if (smtpCode !== null && smtpCode >= 500) retryable = false;
  else if (smtpCode !== null && smtpCode >= 400) retryable = true;
  // A rejected recipient without a reply code, or a message we could not even build, will not
  // get better by trying again.
  else if (errorCode === 'EENVELOPE' || errorCode === 'EMESSAGE') retryable = false;
  // EAUTH is a configuration problem: retrying with backoff gives the operator time to fix it
  // before the attempts run out.
  else retryable = TRANSIENT_CODES.has(errorCode) || errorCode === 'EAUTH' || errorCode === 'EUNKNOWN';
  return { code: errorCode, responseCode: smtpCode, retryable, message: String(message ?? error).slice(0, 500) };
}
