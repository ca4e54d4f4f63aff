import { expect, test } from "@playwright/test";
import { createServer, type Server } from "node:net";
import { OwnServer, audit, expectNoPageErrors, freshName, person } from "../support";

/**
 * The operator's runs page, on a server of this file's own: email goes to a
 * small SMTP server in this test that refuses every recipient (550) until
 * told otherwise, and one user is the operator (KNOCK_ADMIN_USER_IDS).
 */
const port = 3013;
const operatorName = freshName("operator");
let refusing = true;
const received: string[] = [];

/** Answers SMTP as a mail server would; `RCPT TO` gets 550 while `refusing`. */
function smtpServer(): Server {
  return createServer((socket) => {
    let buffer = "";
    let data: string[] | null = null;
    const reply = (line: string) => socket.write(`${line}\r\n`);
    reply("220 test ESMTP");
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      let end: number;
      while ((end = buffer.indexOf("\r\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (data) {
          if (line === ".") {
            received.push(data.join("\n"));
            data = null;
            reply("250 2.0.0 queued");
          } else {
            data.push(line);
          }
          continue;
        }
        const command = line.toUpperCase();
        if (command.startsWith("RCPT TO")) reply(refusing ? "550 5.1.1 no such mailbox" : "250 ok");
        else if (command === "DATA") {
          data = [];
          reply("354 go ahead");
        } else if (command === "QUIT") {
          reply("221 bye");
          socket.end();
        } else reply("250 ok");
      }
    });
    socket.on("error", () => {});
  });
}

const smtp = smtpServer();
let server: OwnServer;

test.describe.configure({ mode: "serial" });
test.beforeAll(async () => {
  await new Promise<void>((resolve) => smtp.listen(0, "127.0.0.1", resolve));
  const address = smtp.address();
  if (!address || typeof address === "string") throw new Error("the SMTP server has no port");
  server = new OwnServer(port, {
    KNOCK_ADMIN_USER_IDS: operatorName,
    KNOCK_SMTP_URL: `smtp://127.0.0.1:${address.port}`,
    KNOCK_MAIL_FROM: "Knock <hello@knock.test>",
  });
  await server.start();
});
test.afterAll(async () => {
  await server.dispose();
  smtp.close();
});
test.afterEach(() => expectNoPageErrors());

test("an operator sees a failed welcome email with its error and retries it", async ({ browser }) => {
  const newcomer = await person(browser, "newcomer", { baseURL: server.origin });
  const operator = await person(browser, "operator", { baseURL: server.origin, username: operatorName });
  const page = operator.page;

  await page.goto("/admin/jobs?status=failed");
  await expect(page.getByRole("heading", { name: "Background jobs" })).toBeVisible();
  const run = page.getByRole("row").filter({ hasText: `@${newcomer.username}` });
  // The page follows the runs as they change: the email fails moments
  // after sign-up.
  await expect(run).toContainText("failed");
  await expect(run).toContainText("refused for good");
  await expect(run).toContainText("no such mailbox");
  await expect(run).toContainText("1 of 8");
  await audit(page, "runs page with a failed run");

  refusing = false;
  await run.getByRole("button", { name: /^Retry run/ }).click();
  // Done, it leaves the failed runs without a reload.
  await expect(run).toHaveCount(0);
  await page.getByRole("link", { name: "All" }).click();
  const done = page.getByRole("row").filter({ hasText: `@${newcomer.username}` });
  await expect(done).toContainText("done");
  await expect(done).toContainText("2 of 8");
  await expect(done).toContainText("accepted by the SMTP server: 250 2.0.0 queued");
  await expect(done.getByRole("button", { name: /^Retry/ })).toHaveCount(0);
  expect(received.filter((mail) => mail.includes(`To: ${newcomer.username}@knock.localhost`))).toHaveLength(1);
  await newcomer.context.close();
  await operator.context.close();
});

test("anyone but an operator gets 404 from the runs page and the metrics", async ({ browser }) => {
  const someone = await person(browser, "someone", { baseURL: server.origin });
  const page = await someone.page.goto("/admin/jobs");
  expect(page?.status()).toBe(404);
  await expect(someone.page.getByRole("heading", { name: "Page not found" })).toBeVisible();
  await expect(someone.page.getByRole("table")).toHaveCount(0);
  expect((await someone.page.request.get("/metrics")).status()).toBe(404);
  expect((await someone.page.request.post("/api/admin/jobs", { data: {} })).status()).toBe(404);

  const operator = await person(browser, "operator", { baseURL: server.origin, username: operatorName });
  const metrics = await operator.page.request.get("/metrics");
  expect(metrics.status()).toBe(200);
  expect(await metrics.text()).toContain('knock_job_runs{kind="welcome_email",status="done"}');
  await someone.context.close();
  await operator.context.close();
});
