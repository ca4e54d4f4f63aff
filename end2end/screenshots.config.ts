import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

/**
 * Takes the README's screenshots (`docs/screenshots/*.png`) against a
 * server of its own on a fresh embedded database, so that the names in
 * them are always the same. Run by `scripts/screenshots.sh`; not part of
 * the test command.
 */
export default defineConfig({
  ...base,
  testDir: "./screenshots",
  globalSetup: undefined,
  fullyParallel: false,
  workers: 1,
  timeout: 120_000,
  use: { ...base.use, baseURL: "http://127.0.0.1:3200" },
});
