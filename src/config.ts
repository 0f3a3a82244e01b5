// The environment is parsed once, here, into a frozen typed object that is passed down by
// argument (Greenlight's config struct). Nothing else in the service reads process.env.
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import envSchema from 'env-schema';
import type { WelcomeTemplates } from './mail/contract.js';
import { DEFAULT_TEMPLATES_DIR, loadWelcomeTemplates, TemplateFileError } from './mail/templates.js';
import { parseTrustProxy, smtpPolicy, type TrustProxy } from './security.js';

/** One row per variable: its JSON schema and the sentence that says what it accepts. */
const variables = {
  PORT: { schema: { type: 'integer', minimum: 0, maximum: 65535, default: 4000 }, accepts: 'an integer port from 0 to 65535' },
  HOST: { schema: { type: 'string', minLength: 1, default: '127.0.0.1' }, accepts: 'an address to bind, such as 127.0.0.1 or 0.0.0.0' },
  DATABASE_URL: { schema: { type: 'string' }, accepts: 'a postgres:// or postgresql:// connection URL' },
  SMTP_URL: { schema: { type: 'string' }, accepts: 'an smtp://user:pass@host:port or smtps://… URL' },
  MAIL_FROM: { schema: { type: 'string', minLength: 3, default: 'Mailoffload <no-reply@localhost>' }, accepts: 'a sender such as "Name <address@domain>"' },
  DATA_DIR: { schema: { type: 'string', minLength: 1, default: './.data' }, accepts: 'a directory path' },
  MAIL_WORKERS: { schema: { type: 'integer', minimum: 1, maximum: 64 }, accepts: 'an integer from 1 to 64' },
  MAIL_CONCURRENCY_PER_WORKER: { schema: { type: 'integer', minimum: 1, maximum: 256, default: 16 }, accepts: 'an integer from 1 to 256' },
  MAIL_SMTP_CONNECTIONS: { schema: { type: 'integer', minimum: 1, maximum: 100, default: 5 }, accepts: 'an integer from 1 to 100 (pooled SMTP connections per worker)' },
  MAIL_MAX_IN_FLIGHT: { schema: { type: 'integer', minimum: 1, maximum: 100000, default: 2000 }, accepts: 'an integer from 1 to 100000' },
  MAIL_BATCH_SIZE: { schema: { type: 'integer', minimum: 1, maximum: 1000, default: 32 }, accepts: 'an integer from 1 to 1000' },
  MAIL_BATCH_WAIT_MS: { schema: { type: 'integer', minimum: 0, maximum: 1000, default: 40 }, accepts: 'an integer of milliseconds from 0 (no wait) to 1000' },
  MAIL_MAX_ATTEMPTS: { schema: { type: 'integer', minimum: 0, maximum: 1000, default: 0 }, accepts: 'an integer from 0 (no cap: give up by age only) to 1000' },
  MAIL_GIVE_UP_AFTER_MS: { schema: { type: 'integer', minimum: 1000, maximum: 2592000000, default: 259200000 }, accepts: 'an integer of milliseconds from 1000 to 2592000000 (30 days)' },
  MAIL_RETRY_BASE_MS: { schema: { type: 'integer', minimum: 1, maximum: 3600000, default: 5000 }, accepts: 'an integer of milliseconds from 1 to 3600000' },
  MAIL_RETRY_MAX_MS: { schema: { type: 'integer', minimum: 1, maximum: 86400000, default: 900000 }, accepts: 'an integer of milliseconds from 1 to 86400000' },
  MAIL_LEASE_MS: { schema: { type: 'integer', minimum: 300, maximum: 3600000, default: 30000 }, accepts: 'an integer of milliseconds from 300 to 3600000' },
  MAIL_RATE_PER_SECOND: { schema: { type: 'number', minimum: 0, maximum: 100000, default: 0 }, accepts: 'a number of messages per second from 0 (unlimited) to 100000' },
  MAIL_BREAKER_THRESHOLD: { schema: { type: 'integer', minimum: 1, maximum: 10000, default: 10 }, accepts: 'an integer from 1 to 10000 (consecutive provider faults that pause sending)' },
  MAIL_BREAKER_PROBE_MS: { schema: { type: 'integer', minimum: 10, maximum: 3600000, default: 5000 }, accepts: 'an integer of milliseconds from 10 to 3600000' },
  DATABASE_POOL_MAX: { schema: { type: 'integer', minimum: 1, maximum: 1000, default: 6 }, accepts: 'an integer from 1 to 1000 (connections per instance)' },
  DATABASE_QUERY_TIMEOUT_MS: { schema: { type: 'integer', minimum: 100, maximum: 600000, default: 10000 }, accepts: 'an integer of milliseconds from 100 to 600000' },
  MAIL_SEND_TIMEOUT_MS: { schema: { type: 'integer', minimum: 100, maximum: 600000, default: 30000 }, accepts: 'an integer of milliseconds from 100 to 600000' },
  MAIL_WORKER_NICE: { schema: { type: 'integer', minimum: 0, maximum: 19, default: 10 }, accepts: 'an integer from 0 to 19 (the mail threads\' nice value on Linux)' },
  MAIL_RETAIN_SENT_DAYS: { schema: { type: 'integer', minimum: 1, maximum: 36500, default: 30 }, accepts: 'an integer of days from 1 to 36500' },
  SWEEP_INTERVAL_MS: { schema: { type: 'integer', minimum: 10, maximum: 600000, default: 2000 }, accepts: 'an integer of milliseconds from 10 to 600000' },
  SHUTDOWN_TIMEOUT_MS: { schema: { type: 'integer', minimum: 0, maximum: 3600000, default: 25000 }, accepts: 'an integer of milliseconds from 0 to 3600000' },
  LOG_LEVEL: { schema: { type: 'string', enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' }, accepts: 'one of fatal, error, warn, info, debug, trace, silent' },
  ARGON2_MEMORY_KIB: { schema: { type: 'integer', minimum: 8, maximum: 4194304, default: 19456 }, accepts: 'an integer of KiB from 8 to 4194304' },
  ARGON2_ITERATIONS: { schema: { type: 'integer', minimum: 1, maximum: 100, default: 2 }, accepts: 'an integer from 1 to 100' },
  DKIM_DOMAIN: { schema: { type: 'string', minLength: 1 }, accepts: 'a domain name' },
  DKIM_SELECTOR: { schema: { type: 'string', minLength: 1 }, accepts: 'a DKIM selector' },
  DKIM_PRIVATE_KEY: { schema: { type: 'string', minLength: 1 }, accepts: 'a PEM private key, or the path of a PEM file' },
  METRICS_ENABLED: { schema: { type: 'boolean', default: true }, accepts: 'true or false' },
  METRICS_PORT: { schema: { type: 'integer', minimum: 1, maximum: 65535 }, accepts: 'an integer port from 1 to 65535 (a listener of its own for GET /metrics)' },
  // Hardening. 0 disables a limit.
  RATE_LIMIT_PER_MINUTE: { schema: { type: 'integer', minimum: 0, maximum: 1000000, default: 60 }, accepts: 'an integer from 0 (off) to 1000000 (signups per client address per minute)' },
  RATE_LIMIT_GLOBAL_PER_MINUTE: { schema: { type: 'integer', minimum: 0, maximum: 10000000, default: 6000 }, accepts: 'an integer from 0 (off) to 10000000 (signups per minute, all clients together)' },
  TRUST_PROXY: { schema: { type: 'string' }, accepts: 'false, true, or a comma list of proxy IPs/CIDRs (or loopback, linklocal, uniquelocal)' },
  MAX_CONNECTIONS: { schema: { type: 'integer', minimum: 0, maximum: 1000000, default: 4096 }, accepts: 'an integer from 0 (no cap) to 1000000' },
  MAX_REQUESTS_PER_SOCKET: { schema: { type: 'integer', minimum: 0, maximum: 1000000, default: 1000 }, accepts: 'an integer from 0 (no cap) to 1000000' },
  HEADERS_TIMEOUT_MS: { schema: { type: 'integer', minimum: 100, maximum: 10000, default: 5000 }, accepts: 'an integer of milliseconds from 100 to 10000 (at most the 10 s request timeout)' },
  SMTP_ALLOW_INSECURE: { schema: { type: 'boolean', default: false }, accepts: 'true or false' },
  MAIL_TEMPLATES_DIR: { schema: { type: 'string', minLength: 1 }, accepts: 'a folder holding welcome.subject.txt, welcome.txt and welcome.html' },
  // The one variable that switches on NODE_ENV: in production the development conveniences
  // (embedded PostgreSQL, mail catcher) must be asked for by name instead of starting silently.
  NODE_ENV: { schema: { type: 'string' }, accepts: 'any value; only production changes anything' },
  ALLOW_EMBEDDED_POSTGRES: { schema: { type: 'boolean', default: false }, accepts: 'true or false' },
  ALLOW_MAIL_CATCHER: { schema: { type: 'boolean', default: false }, accepts: 'true or false' },
} as const;

type VariableName = keyof typeof variables;

export interface DkimConfig {
  readonly domainName: string;
  readonly keySelector: string;
  readonly privateKey: string;
}

export interface Config {
  readonly port: number;
  readonly host: string;
  /** Unset: the service starts its own PostgreSQL under dataDir/pg. */
  readonly databaseUrl: string | undefined;
  /** No query waits longer (statement and client-side timeout). */
  readonly databaseQueryTimeoutMs: number;
  /** DATABASE_POOL_MAX: the most connections this instance opens. */
  readonly databasePoolMax: number;
  /** Unset: the service starts its own mail catcher writing to dataDir/mailbox. */
  readonly smtpUrl: string | undefined;
  readonly mailFrom: string;
  readonly dataDir: string;
  readonly mail: {
    readonly workers: number;
    readonly concurrencyPerWorker: number;
    readonly smtpConnections: number;
    readonly maxInFlight: number;
    readonly batchSize: number;
    /** How long a partial batch may wait for more emails while they arrive at a pace where that gathers a batch; 0: never. */
    readonly batchWaitMs: number;
    /** 0: no cap; transient failures are retried until giveUpAfterMs. */
    readonly maxAttempts: number;
    /** Age of an email at which a transient failure makes it `dead`. */
    readonly giveUpAfterMs: number;
    /** Consecutive provider faults that pause sending, and the first probe interval. */
    readonly breakerThreshold: number;
    readonly breakerProbeMs: number;
    /** The provider's send-rate quota shared by all instances; 0: unlimited. */
    readonly ratePerSecond: number;
    readonly retryBaseMs: number;
    readonly retryMaxMs: number;
    readonly leaseMs: number;
    readonly sendTimeoutMs: number;
    /** Nice value of the mail worker threads (Linux): mail yields the CPU to the API thread. */
    readonly workerNice: number;
    readonly sweepIntervalMs: number;
    /** `sent` outbox rows older than this many days are deleted (with expired tokens). */
    readonly retainSentDays: number;
    readonly dkim: DkimConfig | undefined;
    /** The right-hand side of every Message-ID. */
    readonly messageIdDomain: string;
    /** The welcome email's templates (from MAIL_TEMPLATES_DIR), already checked. */
    readonly welcomeTemplates: WelcomeTemplates;
  };
  readonly shutdownTimeoutMs: number;
  readonly logLevel: string;
  readonly argon2: { readonly memoryKib: number; readonly iterations: number };
  readonly metricsEnabled: boolean;
  /** Serve GET /metrics on a listener of its own (same HOST), not on the API's; unset: the API's. */
  readonly metricsPort: number | undefined;
  readonly http: {
    /** Who may set X-Forwarded-For (false: nobody, the client is the socket's peer). */
    readonly trustProxy: TrustProxy;
    /** server.maxConnections; 0: no cap. */
    readonly maxConnections: number;
    /** Requests served on one keep-alive socket before it is closed; 0: no cap. */
    readonly maxRequestsPerSocket: number;
    readonly headersTimeoutMs: number;
  };
  /** Signups per minute on POST /v1/users; 0 disables that limit. */
  readonly rateLimit: { readonly perClientPerMinute: number; readonly globalPerMinute: number };
  /** Plain smtp:// to a non-loopback host: STARTTLS is mandatory (nodemailer requireTLS). */
  readonly smtpRequireTls: boolean;
}

export class ConfigError extends Error {
  constructor(readonly variable: string, message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function invalid(name: VariableName, value: unknown): ConfigError {
  // The value is echoed only for variables that cannot hold a secret.
  const secret = name === 'DATABASE_URL' || name === 'SMTP_URL' || name === 'DKIM_PRIVATE_KEY';
  const got = secret || value === undefined ? '' : ` (got ${JSON.stringify(value)})`;
  return new ConfigError(name, `invalid environment: ${name} must be ${variables[name].accepts}${got}`);
}

function checkUrl(name: 'DATABASE_URL' | 'SMTP_URL', value: string | undefined, protocols: string[]): void {
  if (value === undefined) return;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(name, value);
  }
  if (!protocols.includes(url.protocol) || url.hostname === '') throw invalid(name, value);
}

/**
 * Under NODE_ENV=production, an unset DATABASE_URL or SMTP_URL is a forgotten setting, not a
 * wish for the embedded PostgreSQL (each replica with its own data on its own disk) or the
 * mail catcher (every email marked sent and saved to a local file).
 */
function productionGuard(get: <T>(name: VariableName) => T, sendsMail: boolean): void {
  if (get('NODE_ENV') !== 'production') return;
  if (get('DATABASE_URL') === undefined && !get('ALLOW_EMBEDDED_POSTGRES')) {
    throw new ConfigError('DATABASE_URL', 'invalid environment: NODE_ENV=production needs DATABASE_URL (unset, every instance would run its own embedded PostgreSQL on its own disk); set ALLOW_EMBEDDED_POSTGRES=true to run one anyway');
  }
  if (sendsMail && get('SMTP_URL') === undefined && !get('ALLOW_MAIL_CATCHER')) {
    throw new ConfigError('SMTP_URL', 'invalid environment: NODE_ENV=production needs SMTP_URL (unset, the built-in mail catcher saves every email to a local file and sends none); set ALLOW_MAIL_CATCHER=true to run it anyway');
  }
}

function loadTemplates(dir: string | undefined): WelcomeTemplates {
  try {
    // A value is a path like DATA_DIR's, from the working directory; unset, the checkout's own.
    return loadWelcomeTemplates(dir === undefined ? DEFAULT_TEMPLATES_DIR : path.resolve(dir));
  } catch (error) {
    if (!(error instanceof TemplateFileError)) throw error;
    throw new ConfigError('MAIL_TEMPLATES_DIR', `invalid environment: MAIL_TEMPLATES_DIR must hold usable welcome email templates: ${error.message}`);
  }
}

/** The domain of an address in "Name <user@domain>" or "user@domain" form. */
function domainOf(from: string): string | undefined {
  const match = /@([^\s>@]+)>?\s*$/.exec(from);
  return match?.[1];
}

/** The environment checked against the variables' schemas, with defaults applied. */
function parseEnvironment(env: NodeJS.ProcessEnv): Record<VariableName, unknown> {
  const properties: Record<string, unknown> = {};
  for (const [name, { schema }] of Object.entries(variables)) properties[name] = schema;
  // Empty strings count as unset, as a shell's `VAR=` usually means "use the default".
  const data = Object.fromEntries(
    Object.keys(variables)
      .filter((name) => env[name] !== undefined && env[name] !== '')
      .map((name) => [name, env[name]]),
  );

  let raw: Record<VariableName, unknown>;
  try {
    raw = envSchema({ schema: { type: 'object', properties }, data, env: false, dotenv: false }) as never;
  } catch (error) {
    const first = (error as { errors?: { instancePath: string }[] }).errors?.[0];
    const name = first?.instancePath.replace(/^\//, '') as VariableName | undefined;
    if (name && name in variables) throw invalid(name, data[name]);
    throw error;
  }
  return raw;
}

/** DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY (a PEM or a path to one): all three or none. */
function readDkim(get: <T>(name: VariableName) => T): DkimConfig | undefined {
  const dkimParts = [get<string>('DKIM_DOMAIN'), get<string>('DKIM_SELECTOR'), get<string>('DKIM_PRIVATE_KEY')];
  // Half a DKIM setup is a mistake, not a wish to send unsigned mail: say which part is missing.
  const dkimNames = ['DKIM_DOMAIN', 'DKIM_SELECTOR', 'DKIM_PRIVATE_KEY'] as const;
  const missing = dkimNames.filter((_, i) => dkimParts[i] === undefined);
  if (missing.length > 0 && missing.length < dkimNames.length) {
    throw new ConfigError(missing[0]!, `invalid environment: ${missing[0]} must be set when any DKIM_* variable is (DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY go together)`);
  }
  if (missing.length === 0) {
    const [domainName, keySelector, keyOrPath] = dkimParts as [string, string, string];
    let privateKey = keyOrPath.replace(/\\n/g, '\n');
    if (!privateKey.includes('-----BEGIN')) {
      try {
        privateKey = readFileSync(keyOrPath, 'utf8');
      } catch {
        throw invalid('DKIM_PRIVATE_KEY', undefined);
      }
    }
    return { domainName, keySelector, privateKey };
  }

  return undefined;
}

/** The mail pipeline's settings. */
function readMail(get: <T>(name: VariableName) => T, dkim: DkimConfig | undefined, fromDomain: string): Config['mail'] {
  return {
    workers: get<number | undefined>('MAIL_WORKERS') ?? availableParallelism(),
    concurrencyPerWorker: get('MAIL_CONCURRENCY_PER_WORKER'),
    smtpConnections: get('MAIL_SMTP_CONNECTIONS'),
    maxInFlight: get('MAIL_MAX_IN_FLIGHT'),
    batchSize: get('MAIL_BATCH_SIZE'),
    batchWaitMs: get('MAIL_BATCH_WAIT_MS'),
    maxAttempts: get('MAIL_MAX_ATTEMPTS'),
    giveUpAfterMs: get('MAIL_GIVE_UP_AFTER_MS'),
    breakerThreshold: get('MAIL_BREAKER_THRESHOLD'),
    breakerProbeMs: get('MAIL_BREAKER_PROBE_MS'),
    ratePerSecond: get('MAIL_RATE_PER_SECOND'),
    retryBaseMs: get('MAIL_RETRY_BASE_MS'),
    retryMaxMs: get('MAIL_RETRY_MAX_MS'),
    leaseMs: get('MAIL_LEASE_MS'),
    sendTimeoutMs: get('MAIL_SEND_TIMEOUT_MS'),
    workerNice: get('MAIL_WORKER_NICE'),
    sweepIntervalMs: get('SWEEP_INTERVAL_MS'),
    retainSentDays: get('MAIL_RETAIN_SENT_DAYS'),
    dkim,
    messageIdDomain: dkim?.domainName ?? fromDomain,
    welcomeTemplates: loadTemplates(get('MAIL_TEMPLATES_DIR')),
  };
}

export interface LoadOptions {
  /** False for a command that sends no mail (`npm run migrate`): SMTP_URL is then not required in production. */
  readonly sendsMail?: boolean;
}

export function loadConfig(env: NodeJS.ProcessEnv, { sendsMail = true }: LoadOptions = {}): Config {
  const raw = parseEnvironment(env);
  const get = <T>(name: VariableName): T => raw[name] as T;
  checkUrl('DATABASE_URL', get('DATABASE_URL'), ['postgres:', 'postgresql:']);
  checkUrl('SMTP_URL', get('SMTP_URL'), ['smtp:', 'smtps:']);
  const smtp = smtpPolicy(get('SMTP_URL'), get('SMTP_ALLOW_INSECURE'));
  if (smtp.refusal !== undefined) throw new ConfigError('SMTP_URL', smtp.refusal);
  productionGuard(get, sendsMail);
  const trustProxy = parseTrustProxy(get('TRUST_PROXY'));
  if (trustProxy === undefined) throw invalid('TRUST_PROXY', get('TRUST_PROXY'));

  const mailFrom = get<string>('MAIL_FROM');
  const fromDomain = domainOf(mailFrom);
  if (fromDomain === undefined) throw invalid('MAIL_FROM', mailFrom);

  const dkim = readDkim(get);

  const config: Config = {
    port: get('PORT'),
    host: get('HOST'),
    databaseUrl: get('DATABASE_URL'),
    databaseQueryTimeoutMs: get('DATABASE_QUERY_TIMEOUT_MS'),
    databasePoolMax: get('DATABASE_POOL_MAX'),
    smtpUrl: get('SMTP_URL'),
    mailFrom,
    dataDir: path.resolve(get<string>('DATA_DIR')),
    mail: readMail(get, dkim, fromDomain),
    shutdownTimeoutMs: get('SHUTDOWN_TIMEOUT_MS'),
    logLevel: get('LOG_LEVEL'),
    argon2: { memoryKib: get('ARGON2_MEMORY_KIB'), iterations: get('ARGON2_ITERATIONS') },
    metricsEnabled: get('METRICS_ENABLED'),
    metricsPort: get('METRICS_PORT'),
    http: {
      trustProxy,
      maxConnections: get('MAX_CONNECTIONS'),
      maxRequestsPerSocket: get('MAX_REQUESTS_PER_SOCKET'),
      headersTimeoutMs: get('HEADERS_TIMEOUT_MS'),
    },
    rateLimit: { perClientPerMinute: get('RATE_LIMIT_PER_MINUTE'), globalPerMinute: get('RATE_LIMIT_GLOBAL_PER_MINUTE') },
    smtpRequireTls: smtp.requireTls,
  };
  return deepFreeze(config);
}

function deepFreeze<T extends object>(value: T): T {
  for (const child of Object.values(value)) {
    if (child !== null && typeof child === 'object') deepFreeze(child as object);
  }
  return Object.freeze(value);
}
