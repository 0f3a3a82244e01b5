// The built-in mail catcher, used when SMTP_URL is unset: an smtp-server on a loopback port
// that saves each message as an .eml file, so `npm start` works with no mail server and a
// developer can read the welcome email a signup produced.
import { chmodSync, createWriteStream, mkdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Log } from '../logger.js';
import { SMTPServer } from 'smtp-server';

export interface MailCatcher {
  readonly url: string;
  readonly mailbox: string;
  stop(): Promise<void>;
}

export async function startMailCatcher(mailbox: string, log: Log): Promise<MailCatcher> {
  // Each saved email holds a live activation token: the folder is 0700 and each file 0600, so
  // no other user on the host can read one. Only the mailbox folder gets the mode (DATA_DIR
  // above it may have to stay open to the embedded PostgreSQL's user), and an existing
  // mailbox from an older version is closed too.
  mkdirSync(path.dirname(mailbox), { recursive: true });
  mkdirSync(mailbox, { recursive: true, mode: 0o700 });
  chmodSync(mailbox, 0o700);
  let sequence = 0;
  const server = new SMTPServer({
    // Loopback only, no TLS, no login: this is a development sink, not a relay.
    disabledCommands: ['STARTTLS', 'AUTH'],
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    size: 10 * 1024 * 1024,
    onData(stream, session, callback) {
      const file = path.join(mailbox, `${new Date().toISOString().replace(/[:.]/g, '-')}-${String(++sequence).padStart(6, '0')}.eml`);
      // Written under a temporary name and renamed when complete: whoever reads the newest
      // .eml (`ls -t .data/mailbox | head -1`) never sees half a message.
      const partial = `${file}.part`;
      pipeline(stream, createWriteStream(partial, { mode: 0o600 }))
        .then(() => renameSync(partial, file))
        .then(
          () => callback(),
          (error: Error) => {
            rmSync(partial, { force: true });
            callback(error);
          },
        );
    },
  });
  server.on('error', (err) => log.warn({ err }, 'mail catcher error'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.server.address() as { port: number };
  const url = `smtp://127.0.0.1:${port}`;
  log.info({ url, mailbox }, 'mail catcher listening: welcome emails are saved as .eml files');
  let stopping: Promise<void> | undefined;
  return {
    url,
    mailbox,
    stop: () => (stopping ??= new Promise((resolve) => server.close(() => resolve()))),
  };
}
