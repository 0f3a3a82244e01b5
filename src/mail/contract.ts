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
  /**
   * Extra certificate authorities to trust (PEM). The service never sets it (the system's
   * authorities apply, or NODE_EXTRA_CA_CERTS); tests use it to trust a certificate they made.
   */
  readonly tlsCa?: string;
  /** The welcome email's templates, read and checked once at boot; each thread compiles them. */
  readonly welcomeTemplates: WelcomeTemplates;
  readonly dkim?: { readonly domainName: string; readonly keySelector: string; readonly privateKey: string };
  /**
   * One Int32 shared with the API thread (a SharedArrayBuffer survives the trip to the worker
   * as shared memory): set to 1 when shutdown begins. A worker then hands back, unsent, every
   * job that has not yet got an SMTP connection.
   */
  readonly handBack: SharedArrayBuffer;
}

/**
 * The source text of the welcome email's three parts (MAIL_TEMPLATES_DIR). Passed as text,
 * not as a folder: every thread then renders exactly what the boot checked, even a thread
 * that replaces a dead one after the files were edited.
 */
export interface WelcomeTemplates {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
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
 * What a failure is about:
 * - `permanent`: this email (a 5xx to RCPT TO or to its DATA, an invalid recipient); trying
 *   it again gets the same answer.
 * - `throttled`: the provider asks us to slow down (a 4xx that says rate or throttling).
 * - `provider`: the provider, the network or our own setup (connection, greeting, EHLO, TLS,
 *   AUTH, MAIL FROM, any other 4xx, anything unknown); every email would fail the same way
 *   until it is fixed, so it is retried, counted by the circuit breaker, and never held
 *   against this email.
 */
export type FailureKind = 'permanent' | 'provider' | 'throttled';

/** The SMTP step that failed: a small fixed set, fit for a metric label. */
export type SmtpPhase = 'connection' | 'greeting' | 'ehlo' | 'starttls' | 'auth' | 'mail-from' | 'rcpt-to' | 'data' | 'message' | 'unknown';

/**
 * Errors thrown in a worker lose `code` and `responseCode` on the way back, so a failure is a
 * value: nodemailer's error code, the SMTP reply code and command, and what the failure is about.
 */
export interface FailedResult {
  readonly outboxId: number;
  readonly status: 'failed';
  readonly code: string;
  readonly responseCode: number | null;
  readonly kind: FailureKind;
  /** nodemailer's `command` as it reported it (`AUTH PLAIN`, `RCPT TO`, `CONN`…), or null. */
  readonly command: string | null;
  readonly phase: SmtpPhase;
  readonly message: string;
}

export type MailResult = SentResult | ReleasedResult | FailedResult;
