// The benchmarks' SMTP sink, run as a child process so that its CPU is not counted with the
// load generator's or the service's: the kit's sink keeping counts only, driven over IPC by
// startSmtpSinkProcess() (smtp-sink-process.ts). SINK_LATENCY_MS sets its latency.
import { CleanupStack } from './scope.js';
import { startSmtpSink } from './smtp.js';
import type { SinkCommand, SinkMessage } from './smtp-sink-process.js';

const send = (message: SinkMessage) => process.send!(message);
const cleanup = new CleanupStack();
const sink = await startSmtpSink(cleanup, {
  keepMessages: false,
  latencyMs: Number(process.env.SINK_LATENCY_MS ?? 0),
  server: { size: 1024 * 1024, maxClients: 10_000 },
});
send({ type: 'listening', port: sink.port });

process.on('message', (command: SinkCommand) => {
  switch (command.type) {
    case 'stall':
      sink.stall();
      break;
    case 'resume':
      sink.resume();
      break;
    case 'report':
      send({ type: 'report', id: command.id, total: sink.accepted, held: sink.held, duplicateMessageIds: sink.duplicateMessageIds(), byRecipient: [...sink.byRecipient] });
      break;
    case 'times':
      send({ type: 'times', id: command.id, firstAcceptedAt: [...sink.firstAcceptedAt] });
      break;
    case 'total':
      send({ type: 'total', id: command.id, total: sink.accepted });
      break;
  }
});
// The parent is gone (or stopped us): nothing is left to report to.
process.on('disconnect', () => void cleanup.run().finally(() => process.exit(0)));
