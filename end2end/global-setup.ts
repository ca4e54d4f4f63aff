/**
 * Waits for the server to answer `/healthz` with 200: on first start the
 * embedded database is created, which takes a few seconds.
 */
export default async function globalSetup(): Promise<void> {
  const base = process.env.KNOCK_BASE_URL ?? "http://127.0.0.1:3000";
  const deadline = Date.now() + 120_000;
  let last = "no answer";
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${base}/healthz`);
      if (response.ok) return;
      last = `HTTP ${response.status}`;
    } catch (error) {
      last = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`Knock did not become healthy at ${base}: ${last}`);
}
