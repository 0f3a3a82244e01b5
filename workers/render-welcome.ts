// Pure rendering of the welcome email: no I/O, no settings beyond its arguments.
import type { WelcomeJob } from '../src/mail/contract.js';
import { ACTIVATION_TTL_MS } from '../src/tokens.js';

export const WELCOME_SUBJECT = 'Welcome to Mailoffload!';

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch] ?? ch);
}

export interface RenderedWelcome {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

/** "3 days", from the token's lifetime, so the text cannot disagree with the expiry. */
export const VALIDITY_TEXT = describeDuration(ACTIVATION_TTL_MS);

function describeDuration(ms: number): string {
  const hours = ms / 3_600_000;
  if (hours % 24 === 0) return hours === 24 ? '1 day' : `${hours / 24} days`;
  return hours === 1 ? '1 hour' : `${hours} hours`;
}

export function renderWelcome(job: WelcomeJob): RenderedWelcome {
  const activation = `{"token": "${job.token}"}`;
  const text = [
    `Hi ${job.name},`,
    '',
    // Lines stay under 76 characters: an ASCII text part then goes out as 7bit, readable as it
    // is in a saved .eml, instead of quoted-printable with soft line breaks.
    'Thanks for signing up for a Mailoffload account.',
    'We are excited to have you on board!',
    '',
    `For future reference, your user ID number is ${job.userId}.`,
    '',
    'Please send a request to the `PUT /v1/users/activated` endpoint',
    'with the following JSON body to activate your account:',
    '',
    activation,
    '',
    `Please note that this is a one-time use token and it will expire in ${VALIDITY_TEXT}.`,
    '',
    'Thanks,',
    '',
    'The Mailoffload Team',
    '',
  ].join('\n');
  const html = `<!doctype html>
<html>
<head><meta name="viewport" content="width=device-width" /><meta http-equiv="Content-Type" content="text/html; charset=UTF-8" /></head>
<body>
<p>Hi ${escapeHtml(job.name)},</p>
<p>Thanks for signing up for a Mailoffload account. We are excited to have you on board!</p>
<p>For future reference, your user ID number is ${job.userId}.</p>
<p>Please send a request to the <code>PUT /v1/users/activated</code> endpoint with the following JSON body to activate your account:</p>
<pre><code>${escapeHtml(activation)}</code></pre>
<p>Please note that this is a one-time use token and it will expire in ${VALIDITY_TEXT}.</p>
<p>Thanks,</p>
<p>The Mailoffload Team</p>
</body>
</html>
`;
  return { subject: WELCOME_SUBJECT, text, html };
}
