import { defineConfig, devices } from "@playwright/test";

/**
 * Knock's browser tests. `cargo leptos end-to-end` builds and starts the
 * server (on its embedded database) and runs them; `global-setup.ts` waits
 * until the server answers `/healthz`. The browser is Debian's Chromium.
 */
const baseURL = process.env.KNOCK_BASE_URL ?? "http://127.0.0.1:3000";

export default defineConfig({
  testDir: "./tests",
  globalSetup: "./global-setup.ts",
  // A whole test. The longest take 15–28 s on two cores shared by two
  // workers (each with up to two signed-in users) and a debug server, and
  // two of them ran out of 30 s in a slow hour.
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: true,
  workers: 2,
  forbidOnly: !!process.env.CI,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL,
    trace: "retain-on-failure",
  },
  projects: [
    {
      name: "chromium",
      use: {
        ...devices["Desktop Chrome"],
        launchOptions: {
          executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
          args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
          ],
        },
      },
    },
  ],
});
