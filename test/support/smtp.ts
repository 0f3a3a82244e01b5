// The one SMTP server of the tests and the benchmarks: a real `smtp-server` on loopback that
// accepts every message (or answers a chosen reply code), can be slow (latency before each
// answer) or stall (hold every answer until resumed), and records what it received: whole
// messages for the tests to read, or only counts per recipient and per Message-ID for the
// benchmarks, which send too many to keep. It can also count a message only if its reply
// reached an open connection, as the sending client sees it (`onlyAnsweredConnections`).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { closeAtEnd, once as closeOnce, track, type Scope } from './scope.js';

export interface ReceivedMail {
  readonly envelopeTo: string[];
  /** Date.now() when the server decided to accept it (after any latency), not when parsing ended. */
  readonly receivedAt: number;
  readonly raw: string;
  readonly parsed: ParsedMail;
}

/**
 * One message whose DATA began, kept with the messages (keepMessages). Its outcome is set when
 * its reply comes due: 'accepted', 'refused' (by `reply`), or 'cut' when the client had hung up
 * before and `onlyAnsweredConnections` is set.
 */
export interface Transmission {
  /** smtp-server's session id: one per connection. */
  readonly session: string;
  readonly envelopeTo: string[];
  /** Date.now() when DATA began. */
  readonly dataStartedAt: number;
  outcome?: 'accepted' | 'refused' | 'cut';
}

/** What the sink does with each message; tests may change it while the sink runs. */
export interface SmtpBehaviour {
  /** Delay before answering each message, in ms. */
  latencyMs?: number;
  /**
   * Decide the reply for a message: undefined accepts it; a number answers that SMTP code
   * (4xx temporary, 5xx permanent), optionally with the reply's text.
   */
  reply?: (session: SMTPServerSession, rcpt: string[]) => number | { code: number; text: string } | undefined;
}

export interface SmtpSinkOptions extends SmtpBehaviour {
  /** Keep every message, raw and parsed (default); false keeps only the counts. */
  keepMessages?: boolean;
  /** A fixed port (a test that starts its server late, on a port the service already uses). */
  port?: number;
  /** smtp-server options beyond the common ones: TLS, which commands to offer, limits. */
  server?: Partial<SMTPServerOptions>;
  /**
   * A message whose connection closed before its reply came due is not accepted (neither kept
   * nor counted; its transmission is 'cut'): its client never saw the reply, so to the sender
   * it was not delivered, and a copy sent again is not a duplicate. Default false: every
   * message whose reply came due counts, whoever was left to read it.
   */
  onlyAnsweredConnections?: boolean;
}

export interface SmtpSink {
  readonly url: string;
  readonly port: number;
  /** Every accepted message, when kept. */
  readonly received: ReceivedMail[];
  /** Messages accepted. */
  readonly accepted: number;
  /** Messages whose DATA began arriving (counted before any latency, stall or reply decision). */
  readonly dataStarted: number;
  /** Accepted messages per envelope recipient (lowercased). */
  readonly byRecipient: ReadonlyMap<string, number>;
  /** When each recipient's first message was accepted, in ms since the epoch with a fraction (comparable across processes). */
  readonly firstAcceptedAt: ReadonlyMap<string, number>;
  /** Answers held while stalled. */
  readonly held: number;
  /** Every message whose DATA began, in order, when messages are kept. */
  readonly transmissions: readonly Transmission[];
  /** When each connection closed (Date.now()), by session id. */
  readonly closedAt: ReadonlyMap<string, number>;
  /** The most messages received in full and waiting for their reply at one moment. */
  readonly maxAwaitingReply: number;
  behaviour: SmtpBehaviour;
  /** Accepted messages beyond the first of each Message-ID. */
  duplicateMessageIds(): number;
  /** Receive messages but answer none until resume(). */
  stall(): void;
  resume(): void;
  /** Messages received for an address. */
  to(address: string): ReceivedMail[];
  /** Stops listening; answers still pending are dropped. Safe to call twice. */
  stop(): Promise<void>;
}

/** The options every sink shares. */
const COMMON: SMTPServerOptions = {
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  // No DNS here; and smtp-server would wait for the lookup before greeting.
  disableReverseLookup: true,
  logger: false,
  // A client that never hangs up must not hold stop() for smtp-server's default 30 s.
  closeTimeout: 1_000,
};

const HEADER_LIMIT = 16_384;

export async function startSmtpSink(scope: Scope, options: SmtpSinkOptions = {}): Promise<SmtpSink> {
  const keepMessages = options.keepMessages ?? true;
  const received: ReceivedMail[] = [];
  const byRecipient = new Map<string, number>();
  const firstAcceptedAt = new Map<string, number>();
  const byMessageId = new Map<string, number>();
  const held: (() => void)[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const transmissions: Transmission[] = [];
  const closedAt = new Map<string, number>();
  let stalled = false;
  let stopped = false;
  const counters = { accepted: 0, dataStarted: 0, awaitingReply: 0, maxAwaitingReply: 0 };
  const behaviour: SmtpBehaviour = { latencyMs: options.latencyMs, reply: options.reply };

  /** Counts the message, and keeps it when asked; counted only once it is readable. */
  const record = async (rcpt: string[], head: string, body: Buffer[], receivedAt: number) => {
    if (keepMessages) {
      const raw = Buffer.concat(body).toString('utf8');
      received.push({ envelopeTo: rcpt, raw, parsed: await simpleParser(raw), receivedAt });
    }
    const acceptedAt = performance.timeOrigin + performance.now();
    for (const address of rcpt) {
      const key = address.toLowerCase();
      byRecipient.set(key, (byRecipient.get(key) ?? 0) + 1);
      if (!firstAcceptedAt.has(key)) firstAcceptedAt.set(key, acceptedAt);
    }
    const messageId = /^message-id:\s*(<[^>]+>)/im.exec(head)?.[1] ?? '(none)';
    byMessageId.set(messageId, (byMessageId.get(messageId) ?? 0) + 1);
    counters.accepted++;
  };

  const server = new SMTPServer({
    ...COMMON,
    ...options.server,
    onClose(session, callback) {
      closedAt.set(session.id, Date.now());
      options.server?.onClose?.(session, callback);
    },
    onData(stream, session, callback) {
      counters.dataStarted++;
      const transmission: Transmission = { session: session.id, envelopeTo: session.envelope.rcptTo.map((r) => r.address), dataStartedAt: Date.now() };
      if (keepMessages) transmissions.push(transmission);
      const body: Buffer[] = [];
      let head = '';
      stream.on('data', (chunk: Buffer) => {
        if (keepMessages) body.push(chunk);
        if (head.length < HEADER_LIMIT && !head.includes('\r\n\r\n')) head += chunk.toString('latin1');
      });
      stream.on('end', () => {
        const rcpt = session.envelope.rcptTo.map((r) => r.address);
        counters.maxAwaitingReply = Math.max(counters.maxAwaitingReply, ++counters.awaitingReply);
        const answer = () => {
          counters.awaitingReply--;
          // smtp-server reports a close a turn of the loop after the socket's: a reply due in
          // between is still counted, which errs towards counting a copy, never towards losing one.
          if (options.onlyAnsweredConnections && closedAt.has(session.id)) {
            transmission.outcome = 'cut';
            callback();
            return;
          }
          const decision = sink.behaviour.reply?.(session, rcpt);
          if (decision !== undefined) {
            transmission.outcome = 'refused';
            const { code, text } = typeof decision === 'number' ? { code: decision, text: decision >= 500 ? 'mailbox unavailable' : 'try again later' } : decision;
            callback(Object.assign(new Error(text), { responseCode: code }));
            return;
          }
          transmission.outcome = 'accepted';
          void record(rcpt, head, body, Date.now()).then(() => callback(), callback);
        };
        const delayed = () => {
          const latency = sink.behaviour.latencyMs ?? 0;
          if (latency <= 0) return answer();
          const timer = setTimeout(() => {
            timers.delete(timer);
            answer();
          }, latency);
          timers.add(timer);
        };
        if (stalled) held.push(delayed);
        else delayed();
      });
    },
  });
  server.on('error', () => undefined);
  server.listen(options.port ?? 0, '127.0.0.1');
  await once(server.server, 'listening');
  const port = (server.server.address() as { port: number }).port;

  const stop = closeOnce(async () => {
    stopped = true;
    for (const timer of timers) clearTimeout(timer);
    timers.clear();
    held.length = 0;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    untrack();
  });
  const untrack = track({ kind: 'smtp sink', label: `port ${port}`, forceClose: stop });
  closeAtEnd(scope, stop);

  const sink: SmtpSink = {
    url: `smtp://127.0.0.1:${port}`,
    port,
    received,
    get accepted() {
      return counters.accepted;
    },
    get dataStarted() {
      return counters.dataStarted;
    },
    byRecipient,
    firstAcceptedAt,
    get held() {
      return held.length;
    },
    transmissions,
    closedAt,
    get maxAwaitingReply() {
      return counters.maxAwaitingReply;
    },
    behaviour,
    duplicateMessageIds: () => [...byMessageId.values()].reduce((sum, n) => sum + n - 1, 0),
    stall: () => {
      stalled = true;
    },
    resume: () => {
      stalled = false;
      if (!stopped) for (const answer of held.splice(0)) answer();
    },
    to: (address) => received.filter((mail) => mail.envelopeTo.includes(address.toLowerCase()) || mail.envelopeTo.includes(address)),
    stop,
  };
  return sink;
}

/** The activation token in a welcome email's text part. */
export function tokenFrom(mail: ReceivedMail): string {
  const match = /"token":\s*"([A-Z2-7]{26})"/.exec(mail.parsed.text ?? '');
  assert.ok(match, 'welcome email carries an activation token');
  return match[1]!;
}
