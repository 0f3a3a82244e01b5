// A JSON request to a running service, for tests that talk to a child process.

export async function postJson(baseUrl: string, route: string, body: unknown, method = 'POST'): Promise<{ status: number; body: any }> {
  const response = await fetch(`${baseUrl}${route}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : undefined };
}
