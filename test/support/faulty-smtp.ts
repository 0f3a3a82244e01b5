// An SMTP server that misbehaves the way providers do, at the SMTP step a test chooses, and
// that can be made healthy while the service keeps sending: a refused AUTH (a rotated
// password), a refused MAIL FROM (a paused account), a refused RCPT TO (an unknown user), a
// refused DATA (a sandboxed account), STARTTLS not offered. It records every connection and
// every command it answered, with the time, so tests can count the attempts the service made
// and when.
//
// It is the kit's sink (smtp.ts), so it is closed at the end of its scope and the leak check
// sees it closed: the refusals before DATA are smtp-server's own hooks (onConnect, onAuth,
// onMailFrom, onRcptTo) passed through the sink's `server` option, the refusal at DATA is the
// sink's `reply`, and what was accepted is the sink's `received`.
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { createServer } from 'node:net';
import path from 'node:path';
import type { SMTPServerOptions } from 'smtp-server';
import { projectRoot } from './env.js';
import type { Scope } from './scope.js';
import { startSmtpSink, type SmtpSink } from './smtp.js';

/** A reply the server sends instead of accepting: code and text, enhanced status code included. */
export interface Refusal {
  readonly code: number;
  readonly text: string;
}

export interface Faults {
  readonly auth?: Refusal;
  readonly mailFrom?: Refusal;
  /** Per recipient: a refusal, or undefined to accept. */
  readonly rcptTo?: (address: string) => Refusal | undefined;
  readonly data?: Refusal;
  /** EHLO does not advertise STARTTLS and the command is refused. */
  readonly noStartTls?: boolean;
}

export type SmtpStep = 'connect' | 'auth' | 'mail-from' | 'rcpt-to' | 'data';

export interface SmtpEvent {
  readonly at: number;
  readonly step: SmtpStep;
  /** The recipient, for rcpt-to and data. */
  readonly address?: string;
  readonly refused: boolean;
  /** For data: whether the message came over TLS (after STARTTLS). */
  readonly secure?: boolean;
}

export interface FaultySmtpOptions {
  /** Required AUTH PLAIN/LOGIN credentials (AUTH is then mandatory). */
  readonly credentials?: { readonly user: string; readonly pass: string };
  /** Offer STARTTLS with the test certificate (test/fixtures), unless `noStartTls` is set. */
  readonly tls?: boolean;
  /** Listen on this port (default: any free port). */
  readonly port?: number;
}

export interface FaultySmtp {
  /** The faults now in force; a test may change them while the service sends. */
  faults: Faults;
  readonly port: number;
  /** smtp://127.0.0.1:port, without credentials. */
  readonly url: string;
  /** Every connection and command answered, in order. */
  readonly events: readonly SmtpEvent[];
  /** The sink underneath: `received` holds every accepted message, with the time it was accepted. */
  readonly sink: SmtpSink;
  /** Every fault is gone: the provider accepts again. */
  heal(): void;
  /** Events of one step, optionally only those at or after `since`. */
  count(step: SmtpStep, since?: number): number;
  /** Events of one step that were refused. */
  refusedCount(step: SmtpStep): number;
  /** How many times this recipient was given in RCPT TO (one per attempt that got that far). */
  rcptCount(address: string): number;
  /** Messages accepted for this recipient. */
  deliveredTo(address: string): number;
  /** When each accepted message was accepted (Date.now()). */
  deliveryTimes(): number[];
}

/**
 * A self-signed certificate for 0.0.0.0, 127.0.0.1 and localhost, valid until 2126, made with:
 * openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500
 *   -keyout smtp-tls-key.pem -out smtp-tls-cert.pem -subj "/CN=mailoffload test SMTP server"
 *   -addext "subjectAltName=IP:0.0.0.0,IP:127.0.0.1,DNS:localhost" -addext "basicConstraints=critical,CA:TRUE"
 * A service given NODE_EXTRA_CA_CERTS=TEST_CA_FILE trusts it.
 */
export const TEST_CA_FILE = path.join(projectRoot, 'test/fixtures/smtp-tls-cert.pem');
const TEST_KEY_FILE = path.join(projectRoot, 'test/fixtures/smtp-tls-key.pem');

function refusal({ code, text }: Refusal): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

/** Starts the server on 127.0.0.1, healthy until the test sets `faults`; closed at the end of `scope`. */
export async function startFaultySmtp(scope: Scope, options: FaultySmtpOptions = {}): Promise<FaultySmtp> {
  const events: SmtpEvent[] = [];
  const record = (step: SmtpStep, refused: boolean, extra: { address?: string; secure?: boolean } = {}) => {
    events.push({ at: Date.now(), step, refused, ...extra });
  };
  // Without credentials AUTH is not offered at all; without TLS, STARTTLS is not.
  const disabledCommands = [...(options.tls ? [] : ['STARTTLS']), ...(options.credentials ? [] : ['AUTH'])];

  const hooks: Partial<SMTPServerOptions> = {
    // The reply texts carry their own enhanced status codes, as a provider's do.
    hideENHANCEDSTATUSCODES: true,
    authOptional: options.credentials === undefined,
    // AUTH over plain loopback: the service's SMTP_URL is smtp:// to 127.0.0.1.
    allowInsecureAuth: true,
    disabledCommands,
    ...(options.tls ? { key: readFileSync(TEST_KEY_FILE), cert: readFileSync(TEST_CA_FILE) } : {}),
    onConnect(session, callback) {
      record('connect', false);
      // A session's own list replaces the server's: STARTTLS is neither advertised nor accepted.
      if (faulty.faults.noStartTls) session.disabledCommands = ['STARTTLS', ...(options.credentials ? [] : ['AUTH'])];
      callback();
    },
    onAuth(auth, _session, callback) {
      const fault = faulty.faults.auth;
      record('auth', fault !== undefined);
      if (fault) return callback(refusal(fault));
      const { user, pass } = options.credentials ?? {};
      if (auth.username === user && auth.password === pass) return callback(null, { user: auth.username });
      return callback(refusal({ code: 535, text: '5.7.8 Authentication credentials invalid' }));
    },
    onMailFrom(_address, _session, callback) {
      const fault = faulty.faults.mailFrom;
      record('mail-from', fault !== undefined);
      callback(fault ? refusal(fault) : undefined);
    },
    onRcptTo(address, _session, callback) {
      const fault = faulty.faults.rcptTo?.(address.address);
      record('rcpt-to', fault !== undefined, { address: address.address });
      callback(fault ? refusal(fault) : undefined);
    },
  };

  const sink = await startSmtpSink(scope, {
    port: options.port,
    server: hooks,
    // Called once the whole message has arrived: undefined accepts it, a refusal answers DATA.
    reply(session, rcpt) {
      const fault = faulty.faults.data;
      record('data', fault !== undefined, { address: rcpt.join(','), secure: session.secure });
      return fault;
    },
  });

  const faulty: FaultySmtp = {
    faults: {},
    port: sink.port,
    url: sink.url,
    events,
    sink,
    heal() {
      faulty.faults = {};
    },
    count: (step, since = 0) => events.filter((event) => event.step === step && event.at >= since).length,
    refusedCount: (step) => events.filter((event) => event.step === step && event.refused).length,
    rcptCount: (address) => events.filter((event) => event.step === 'rcpt-to' && event.address === address).length,
    deliveredTo: (address) => sink.to(address).length,
    deliveryTimes: () => sink.received.map((mail) => mail.receivedAt),
  };
  return faulty;
}

/** A loopback port nothing listens on (bound, then closed): connecting to it is refused. */
export async function closedPort(): Promise<number> {
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
