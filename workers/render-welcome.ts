// The welcome email, rendered from three templates (subject, text, HTML) compiled once per
// thread. Pure: no I/O, no settings beyond its arguments. The syntax is only `{{field}}`, with
// no logic and no unescaped form, so an edited template cannot execute anything or put raw
// user input into the HTML part: each part escapes every value for where it goes.
import type { WelcomeJob, WelcomeTemplates } from '../src/mail/contract.js';
import { ACTIVATION_TTL_MS } from '../src/tokens.js';

/** The files of MAIL_TEMPLATES_DIR, one per part: the extension says how values are escaped. */
export const WELCOME_TEMPLATE_FILES: Readonly<Record<keyof WelcomeTemplates, string>> = {
  subject: 'welcome.subject.txt',
  text: 'welcome.txt',
  html: 'welcome.html',
};

/** The fields a template may use. */
const FIELDS = ['userId', 'token', 'email', 'name', 'expiresIn'] as const;
type Field = (typeof FIELDS)[number];
const FIELD_LIST = `${FIELDS.slice(0, -1).map((field) => `{{${field}}}`).join(', ')} or {{${FIELDS.at(-1)}}}`;

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => HTML_ESCAPES[ch] ?? ch);
}

/** A header value on one line: CR, LF and other control characters become a space. */
export function headerSafe(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]+/g, ' ');
}

/** "3 days", "12 hours", "90 minutes": the largest whole unit of a duration. */
export function describeDuration(ms: number): string {
  const units: [string, number][] = [['day', 86_400_000], ['hour', 3_600_000], ['minute', 60_000]];
  for (const [unit, size] of units) {
    if (ms >= size && ms % size === 0) return `${ms / size} ${unit}${ms === size ? '' : 's'}`;
  }
  return `${Math.round(ms / 1000)} seconds`;
}

const EXPIRES_IN = describeDuration(ACTIVATION_TTL_MS);

export interface RenderedWelcome {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

export type WelcomeRenderer = (job: WelcomeJob) => RenderedWelcome;

/** A template that cannot be compiled: which part, which line, and why. */
export class TemplateError extends Error {
  constructor(readonly part: keyof WelcomeTemplates, readonly line: number, message: string) {
    super(message);
    this.name = 'TemplateError';
  }
}

/** Literal text and fields, alternating (text first and last): no parsing per email. */
type Compiled = readonly (string | Field)[];

function compilePart(part: keyof WelcomeTemplates, source: string): { chunks: Compiled; fields: Set<Field> } {
  const chunks: (string | Field)[] = [];
  const fields = new Set<Field>();
  const lineAt = (index: number) => source.slice(0, index).split('\n').length;
  let rest = 0;
  for (;;) {
    const open = source.indexOf('{{', rest);
    if (open < 0) break;
    const close = source.indexOf('}}', open + 2);
    const inner = close < 0 ? '' : source.slice(open + 2, close);
    // A field is on one line: a "}}" further on belongs to another field.
    if (close < 0 || inner.includes('\n') || inner.includes('{{')) throw new TemplateError(part, lineAt(open), '"{{" is never closed by "}}"');
    const name = inner.trim();
    if (!(FIELDS as readonly string[]).includes(name)) {
      throw new TemplateError(part, lineAt(open), `unknown field {{${name}}}: use ${FIELD_LIST}`);
    }
    chunks.push(source.slice(rest, open), name as Field);
    fields.add(name as Field);
    rest = close + 2;
  }
  chunks.push(source.slice(rest));
  return { chunks, fields };
}

/** A part's renderer: the literal text with each field passed through the part's escaping. */
function renderer(chunks: Compiled, escape: (value: string) => string): (values: Readonly<Record<Field, string>>) => string {
  return (values) => {
    let out = chunks[0] as string;
    for (let i = 1; i < chunks.length; i += 2) out += escape(values[chunks[i] as Field]) + (chunks[i + 1] as string);
    return out;
  };
}

const asIs = (value: string) => value;

/**
 * Compiles the three parts, or throws a TemplateError. Besides the syntax it refuses a subject
 * that is empty or longer than one line, and a body without {{token}}: such an email could not
 * activate the account.
 */
export function compileWelcome(templates: WelcomeTemplates): WelcomeRenderer {
  const subjectSource = templates.subject.replace(/\s+$/, '');
  if (subjectSource.trim() === '') throw new TemplateError('subject', 1, 'the subject is empty');
  if (/[\r\n]/.test(subjectSource)) throw new TemplateError('subject', 2, 'the subject must be one line');
  const subject = renderer(compilePart('subject', subjectSource).chunks, headerSafe);
  const text = compilePart('text', templates.text);
  const html = compilePart('html', templates.html);
  for (const [part, compiled] of [['text', text], ['html', html]] as const) {
    if (!compiled.fields.has('token')) throw new TemplateError(part, 1, 'never uses {{token}}: the email could not activate the account');
  }
  const renderText = renderer(text.chunks, asIs);
  const renderHtml = renderer(html.chunks, escapeHtml);

  return (job) => {
    const values: Record<Field, string> = { userId: String(job.userId), token: job.token, email: job.email, name: job.name, expiresIn: EXPIRES_IN };
    return { subject: subject(values), text: renderText(values), html: renderHtml(values) };
  };
}
