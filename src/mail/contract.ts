// The messages between the API thread and the mail workers: types only, no runtime code,
// so both sides compile against one definition. Everything here must survive the
// structured clone between threads: plain objects, strings, numbers, booleans.

/** Built once per worker thread from `workerData`; the workers read nothing else. */
export interface WorkerSettings {
  readonly smtpUrl: string;
  readonly from: string;
  readonly messageIdDomain: string;
  readonly smtpConnections: number;
  readonly sendTimeoutMs: number;
  /** The thread's nice value (Linux; 0 leaves it alone): sending is background work. */
  readonly nice?: number;
  /** Verify the SMTP server's certificate (false only for a loopback catcher). */
  readonly tlsRejectUnauthorized: boolean;
  /** Refuse to send unless STARTTLS succeeds (plain smtp:// to a non-loopback host). */
  readonly requireTls?: boolean;
  readonly dkim?: { readonly domainName: string; readonly keySelector: string; readonly privateKey: string };
  /**
   * One Int32 shared with the API thread (a SharedArrayBuffer survives the trip to the worker
   * as shared memory): set to 1 when shutdown begins. A worker then hands back, unsent, every
   * job that has not yet got an SMTP connection.
   */
  readonly handBack: SharedArrayBuffer;
}

/** One welcome email. The token is the plaintext; only its hash is in the database. */
export interface WelcomeJob {
  readonly outboxId: number;
  readonly userId: number;
  readonly name: string;
  readonly email: string;
  readonly token: string;
}

/** A worker task is a batch of jobs: per-task overhead is paid once per batch, not per email. */
export type MailTask = readonly WelcomeJob[];

export interface SentResult {
  readonly outboxId: number;
  readonly status: 'sent';
}

/** Never handed to SMTP (shutdown began while it waited for a connection): back to the outbox. */
export interface ReleasedResult {
  readonly outboxId: number;
  readonly status: 'released';
}

/**
 * What a failure says about whom: `permanent` is about this email (a 5xx to RCPT TO or to its
 * DATA), `provider` about the provider or our account and setup (retried, and counted by the
 * circuit breaker), `throttled` a request to slow down (retried).
 */
export type FailureKind = 'permanent' | 'provider' | 'throttled';

/**
 * Errors thrown in a worker lose `code` and `responseCode` on the way back, so a failure is a
 * value: nodemailer's error code, the SMTP reply code and whether trying again can help.
 */
export interface FailedResult {
  readonly outboxId: number;
  readonly status: 'failed';
  readonly code: string;
  readonly responseCode: number | null;
  readonly kind: FailureKind;
  /** The SMTP phase that failed (nodemailer's `command`: CONN, AUTH PLAIN, MAIL FROM, RCPT TO, DATA…), if known. */
  readonly command: string | null;
  readonly message: string;
}

export type MailResult = SentResult | ReleasedResult | FailedResult;
