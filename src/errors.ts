// Every error the API answers with, in one place: code, HTTP status and the JSON body, in
// Greenlight's shapes: {"error": "message"} or, for invalid fields, {"error": {field: message}}.

export class ApiError extends Error {
  constructor(
    readonly code: string,
    readonly statusCode: number,
    readonly body: { error: string | Record<string, string> },
  ) {
    super(typeof body.error === 'string' ? body.error : 'failed validation');
    this.name = 'ApiError';
  }
}

const simple = (code: string, statusCode: number, message: string) => () => new ApiError(code, statusCode, { error: message });

export const errors = {
  badRequest: (message: string) => new ApiError('BAD_REQUEST', 400, { error: message }),
  failedValidation: (fields: Record<string, string>) => new ApiError('FAILED_VALIDATION', 422, { error: fields }),
  emailTaken: () => errors.failedValidation({ email: 'a user with this email address already exists' }),
  invalidToken: () => errors.failedValidation({ token: 'invalid or expired activation token' }),
  notFound: simple('NOT_FOUND', 404, 'the requested resource could not be found'),
  methodNotAllowed: simple('METHOD_NOT_ALLOWED', 405, 'the method is not supported for this resource'),
  editConflict: simple('EDIT_CONFLICT', 409, 'unable to update the record due to an edit conflict, please try again'),
  payloadTooLarge: (limit: number) => new ApiError('PAYLOAD_TOO_LARGE', 413, { error: `body must not be larger than ${limit} bytes` }),
  unsupportedMediaType: simple('UNSUPPORTED_MEDIA_TYPE', 415, 'body must be JSON (Content-Type: application/json)'),
  rateLimited: (retryAfterSeconds: number) =>
    new ApiError('RATE_LIMITED', 429, { error: `rate limit exceeded, retry in ${retryAfterSeconds} seconds` }),
  serverError: simple('SERVER_ERROR', 500, 'the server encountered a problem and could not process your request'),
  databaseUnavailable: simple('DATABASE_UNAVAILABLE', 503, 'the database is unavailable, please try again shortly'),
  shuttingDown: simple('SHUTTING_DOWN', 503, 'the server is shutting down, please retry'),
} as const;
