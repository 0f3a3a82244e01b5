// The service's version, read once from package.json so there is one place to bump it.
import { readFileSync } from 'node:fs';

const packageJson = new URL('../../package.json', import.meta.url);

export const VERSION: string = (JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string }).version;
