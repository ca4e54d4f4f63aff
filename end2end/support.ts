import AxeBuilder from "@axe-core/playwright";
import { type Browser, type BrowserContext, expect, type Page } from "@playwright/test";
import { type ChildProcess, spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** Helpers shared by the browser tests: people, chats, and own servers. */

export function freshName(prefix: string): string {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

export interface Person {
  context: BrowserContext;
  page: Page;
  username: string;
  /** False for a browser without JavaScript (the page never hydrates). */
  javaScriptEnabled?: boolean;
}

/** Uncaught errors in the pages of `person` since the last check: a
 * panic in the WASM app shows up here ("panicked at …", then the trap). */
const pageErrors: string[] = [];

/** Fails the test if a page of one of its people threw (call in
 * `test.afterEach`): a panic stops the app, so later steps would fail for
 * a reason the test does not name, or pass by luck. */
export function expectNoPageErrors(): void {
  expect(pageErrors.splice(0), "uncaught errors in the browser").toEqual([]);
}

/** Collects uncaught errors of `page` (shown as `name`) for `expectNoPageErrors`. */
export function watchErrors(page: Page, name: string): void {
  page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && message.text().includes("panicked at")) {
      pageErrors.push(`${name}: ${message.text().split("\n\nStack")[0]}`);
    }
  });
}

/** A new user (`prefix` and a random suffix, or `username`), signed in
 * (dev mode) in a browser context of their own. */
export async function person(
  browser: Browser,
  prefix: string,
  {
    javaScriptEnabled = true,
    baseURL,
    username = freshName(prefix),
  }: { javaScriptEnabled?: boolean; baseURL?: string; username?: string } = {},
): Promise<Person> {
  const context = await browser.newContext({ javaScriptEnabled, ...(baseURL ? { baseURL } : {}) });
  const page = await context.newPage();
  watchErrors(page, username);
  await page.goto("/sign-in");
  await page.getByLabel("Username").fill(username);
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByLabel("Signed in as")).toHaveText(username);
  return { context, page, username, javaScriptEnabled };
}

/** Opens the chat page with `other`, found through the people search. */
export async function openChat(me: Person, other: Person): Promise<void> {
  await me.page.goto(`/?q=${other.username}`);
  await me.page.getByRole("list", { name: "People" }).getByRole("link", { name: new RegExp(other.username) }).click();
  await expect(me.page.getByRole("heading", { level: 1 })).toHaveText(other.username);
}

/** `a` invites `b`, `b` accepts: both end on their chat page with the composer. */
export async function activeDm(a: Person, b: Person): Promise<void> {
  await openChat(a, b);
  await a.page.getByRole("button", { name: "Start chat" }).click();
  await expect(a.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();
  await openChat(b, a);
  await b.page.getByRole("button", { name: "Accept" }).click();
  for (const who of [a, b]) {
    await expect(who.page.getByRole("textbox", { name: "Message" })).toBeVisible();
  }
}

/** Sends `text` from the composer with the Enter key. */
export async function sendMessage(who: Person, text: string): Promise<void> {
  // Enter sends once the page has hydrated (the Menu button is enabled
  // then); before, it types a new line, as in any text area.
  if (who.javaScriptEnabled !== false) {
    await expect(who.page.getByRole("button", { name: "Menu" })).toBeEnabled();
  }
  const box = who.page.getByRole("textbox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
  await expect(box).toHaveValue("");
}

/** A `width` × `height` PNG drawn by the browser, as bytes. */
export async function png(page: Page, width: number, height: number): Promise<Buffer> {
  const dataUrl = await page.evaluate(
    ([w, h]) => {
      const canvas = document.createElement("canvas");
      canvas.width = w;
      canvas.height = h;
      const g = canvas.getContext("2d")!;
      g.fillStyle = "#4f46e5";
      g.fillRect(0, 0, w, h);
      g.fillStyle = "#fbbf24";
      g.fillRect(w / 4, h / 4, w / 2, h / 2);
      return canvas.toDataURL("image/png");
    },
    [width, height],
  );
  return Buffer.from(dataUrl.split(",")[1], "base64");
}

/** The texts of the message bubbles in `who`'s open conversation, in order. */
export async function messageTexts(who: Person): Promise<string[]> {
  return who.page.getByRole("list", { name: "Messages" }).getByRole("paragraph").allInnerTexts();
}

/** A Knock server of a test's own (the binary cargo-leptos built). */
export class OwnServer {
  process?: ChildProcess;
  readonly origin: string;
  /** Its temporary directory (the data dir is `data` inside): made at the
   * first start, kept across restarts, removed by `dispose`. */
  private dir?: string;

  constructor(
    readonly port: number,
    readonly env: NodeJS.ProcessEnv = {},
  ) {
    this.origin = `http://127.0.0.1:${port}`;
  }

  /** Starts it and waits until `/healthz` answers. */
  async start(): Promise<void> {
    if (!this.dir) {
      this.dir = mkdtempSync(path.join(tmpdir(), "knock-e2e-"));
      chmodSync(this.dir, 0o755);
    }
    const root = path.resolve(__dirname, "..");
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      LEPTOS_SITE_ADDR: `127.0.0.1:${this.port}`,
      KNOCK_DATA_DIR: path.join(this.dir, "data"),
      ...this.env,
    };
    delete env.DATABASE_URL;
    this.process = spawn(process.env.KNOCK_BIN ?? path.join(root, "target/debug/knock"), [], {
      cwd: root,
      env,
      stdio: "inherit",
    });
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      try {
        if ((await fetch(`${this.origin}/healthz`)).ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    throw new Error(`the server on port ${this.port} did not start`);
  }

  /** Stops it with SIGTERM (a graceful shutdown) and waits for the exit. */
  async stop(): Promise<void> {
    const server = this.process;
    if (!server || server.exitCode !== null) return;
    const exited = new Promise((resolve) => server.once("exit", resolve));
    server.kill("SIGTERM");
    await exited;
  }

  /** Stops it and removes its directory with the embedded cluster. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}

/** The rule sets of WCAG 2.0 and 2.1, levels A and AA. */
const WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/**
 * Runs axe-core on `page` as it is now: fails on any violation of impact
 * serious or critical, and lists the others in the test output.
 */
export async function audit(page: Page, state: string): Promise<void> {
  const { violations } = await new AxeBuilder({ page }).withTags(WCAG_AA).analyze();
  const describe = (v: (typeof violations)[number]) =>
    `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`;
  for (const minor of violations.filter((v) => v.impact !== "serious" && v.impact !== "critical")) {
    console.log(`[${state}] ${describe(minor)}`);
  }
  const blocking = violations.filter((v) => v.impact === "serious" || v.impact === "critical").map(describe);
  expect(blocking, `serious or critical accessibility violations: ${state}`).toEqual([]);
}
