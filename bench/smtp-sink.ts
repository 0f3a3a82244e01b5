// The benches' SMTP server, run as a child process so that its CPU is not counted with the
// load generator's or the service's. It counts messages per recipient and per Message-ID, can
// add latency, and can stall: messages are received but not answered until resumed.
// The parent talks to it over IPC: see startSink() in bench/common.ts.
import { SMTPServer } from 'smtp-server';

interface Command {
  readonly type: 'stall' | 'resume' | 'report' | 'latency';
  readonly id?: number;
  readonly latencyMs?: number;
}

let latencyMs = Number(process.env.SINK_LATENCY_MS ?? 0);
let stalled = false;
const held: (() => void)[] = [];
const byRecipient = new Map<string, number>();
const byMessageId = new Map<string, number>();
let total = 0;

const server = new SMTPServer({
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  // No DNS here; and the 100 ms greeting delay would only slow new connections.
  disableReverseLookup: true,
  logger: false,
  size: 1024 * 1024,
  maxClients: 10_000,
  onData(stream, session, callback) {
    // Only the header block is needed; the body is drained.
    let head = '';
    stream.on('data', (chunk: Buffer) => {
      if (head.length < 16_384 && !head.includes('\r\n\r\n')) head += chunk.toString('latin1');
    });
    stream.on('end', () => {
      const accept = () => {
        const messageId = /^message-id:\s*(<[^>]+>)/im.exec(head)?.[1] ?? '(none)';
        for (const rcpt of session.envelope.rcptTo) {
          const address = rcpt.address.toLowerCase();
          byRecipient.set(address, (byRecipient.get(address) ?? 0) + 1);
        }
        byMessageId.set(messageId, (byMessageId.get(messageId) ?? 0) + 1);
        total++;
        callback();
      };
      const answer = () => (latencyMs > 0 ? setTimeout(accept, latencyMs) : accept());
      if (stalled) held.push(answer);
      else answer();
    });
  },
});
server.on('error', () => undefined);
server.listen(Number(process.env.SINK_PORT ?? 0), '127.0.0.1', () => {
  const { port } = server.server.address() as { port: number };
  process.send!({ type: 'listening', port });
});

process.on('message', (command: Command) => {
  switch (command.type) {
    case 'stall':
      stalled = true;
      break;
    case 'resume':
      stalled = false;
      for (const answer of held.splice(0)) answer();
      break;
    case 'latency':
      latencyMs = command.latencyMs ?? 0;
      break;
    case 'report': {
      let duplicateIds = 0;
      for (const count of byMessageId.values()) if (count > 1) duplicateIds += count - 1;
      process.send!({ type: 'report', id: command.id, total, held: held.length, duplicateMessageIds: duplicateIds, byRecipient: [...byRecipient] });
      break;
    }
  }
});
process.on('disconnect', () => process.exit(0));
