// PostgreSQL error codes (SQLSTATE) this service acts on. Errors are told apart by code and
// constraint name, never by message text, which varies with the server's language and version.
export const SQLSTATE = {
  serializationFailure: '40001',
  deadlockDetected: '40P01',
  tooManyConnections: '53300',
  queryCanceled: '57014',
  adminShutdown: '57P01',
  crashShutdown: '57P02',
  cannotConnectNow: '57P03',
} as const;

/** Class 08: connection exceptions. */
export const CONNECTION_EXCEPTION_CLASS = '08';
