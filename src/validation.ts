// Greenlight's field rules. The JSON schema on each route checks shape and types (400);
// these check the values (422 with one message per field). Lengths are in bytes, as
// Greenlight counts them, which JSON schema's maxLength (characters) cannot express.

// The WHATWG HTML "valid e-mail address" pattern, as Greenlight's validator.EmailRX.
const EMAIL_RX = /^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export type FieldErrors = Record<string, string>;

const bytes = (value: string) => Buffer.byteLength(value, 'utf8');

export function validateName(errors: FieldErrors, name: string | undefined): void {
  if (name === undefined || name.trim() === '') errors.name = 'must be provided';
  else if (bytes(name) > 500) errors.name = 'must not be more than 500 bytes long';
  // A name ends up in a mail header (the To: display name): no line breaks or other controls.
  else if (CONTROL_CHARS.test(name)) errors.name = 'must not contain control characters';
}

/** The address rule alone, for the mail worker's second check before it sends. */
export function isValidEmail(email: string): boolean {
  return bytes(email) <= 254 && EMAIL_RX.test(email);
}

export function validateEmail(errors: FieldErrors, email: string | undefined): void {
  if (email === undefined || email === '') errors.email = 'must be provided';
  else if (bytes(email) > 254 || !EMAIL_RX.test(email)) errors.email = 'must be a valid email address';
}

export function validatePassword(errors: FieldErrors, password: string | undefined): void {
  if (password === undefined || password === '') errors.password = 'must be provided';
  else if (bytes(password) < 8) errors.password = 'must be at least 8 bytes long';
  else if (bytes(password) > 72) errors.password = 'must not be more than 72 bytes long';
}

export function validateTokenPlaintext(errors: FieldErrors, token: string | undefined, length: number): void {
  if (token === undefined || token === '') errors.token = 'must be provided';
  else if (bytes(token) !== length) errors.token = `must be ${length} bytes long`;
}
