// bench:mail's SMTP sink, run as its own child process so that its CPU is not counted with the
// sender's. It accepts everything at once (no latency) and only counts. The parent learns the
// port from the first IPC message and asks for the count with {type: 'count'}.
import { SMTPServer } from 'smtp-server';

let accepted = 0;
const server = new SMTPServer({
  disabledCommands: ['STARTTLS', 'AUTH'],
  authOptional: true,
  // No DNS here, and smtp-server's 100 ms greeting delay would only slow new connections.
  disableReverseLookup: true,
  logger: false,
  maxClients: 10_000,
  onData(stream, _session, callback) {
    stream.on('data', () => undefined);
    stream.on('end', () => {
      accepted++;
      callback();
    });
  },
});
server.on('error', (err) => console.error('sink error', err));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.server.address() as { port: number };
  process.send!({ type: 'ready', port });
});
process.on('message', (message: { type: string }) => {
  if (message.type === 'count') process.send!({ type: 'count', accepted });
});
// The parent going away (even killed) closes the IPC channel: leave with it.
process.on('disconnect', () => server.close(() => process.exit(0)));
