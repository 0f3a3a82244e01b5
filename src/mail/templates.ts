// Reading the welcome email's templates from MAIL_TEMPLATES_DIR on the main thread, once at
// boot. They are compiled here too, only to check them: a missing or broken template stops the
// boot naming its file, instead of failing every email later in a worker thread.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileWelcome, TemplateError, WELCOME_TEMPLATE_FILES } from '../../workers/render-welcome.js';
import type { WelcomeTemplates } from './contract.js';

/**
 * The checkout's own templates/ folder, found from this module (dist/src/mail/) rather than
 * from the working directory, so the default works wherever the service is started from.
 */
export const DEFAULT_TEMPLATES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../templates');

/** A template that cannot be used: the message names its file. */
export class TemplateFileError extends Error {
  constructor(readonly file: string, message: string) {
    super(message);
    this.name = 'TemplateFileError';
  }
}

/** The source text of each part, checked by compiling it; throws a TemplateFileError. */
export function loadWelcomeTemplates(dir: string = DEFAULT_TEMPLATES_DIR): WelcomeTemplates {
  const fileOf = (part: keyof WelcomeTemplates) => path.join(dir, WELCOME_TEMPLATE_FILES[part]);
  const read = (part: keyof WelcomeTemplates): string => {
    const file = fileOf(part);
    try {
      // A byte order mark some editors add would otherwise start the subject.
      return readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      throw new TemplateFileError(file, `cannot read ${file} (${code})`);
    }
  };
  const templates: WelcomeTemplates = { subject: read('subject'), text: read('text'), html: read('html') };
  try {
    compileWelcome(templates);
  } catch (error) {
    if (!(error instanceof TemplateError)) throw error;
    throw new TemplateFileError(fileOf(error.part), `${fileOf(error.part)} line ${error.line}: ${error.message}`);
  }
  return templates;
}
