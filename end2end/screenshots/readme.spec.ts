import { type Browser, expect, test } from "@playwright/test";
import path from "node:path";
import { activeDm, openChat, OwnServer, type Person, sendMessage } from "../support";

/** The README's "Using Knock" pictures, taken as a person would get there. */
const server = new OwnServer(3200);
const shot = (name: string) => path.resolve(__dirname, "../../docs/screenshots", `${name}.png`);

test.beforeAll(async () => {
  await server.start();
});
test.afterAll(async () => {
  await server.dispose();
});

/** Signs `username` in (dev mode). The database is new, so plain names
 * are free, unlike in the tests. */
async function signIn(browser: Browser, username: string): Promise<Person> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto("/sign-in");
  await page.getByLabel("Username").fill(username);
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByLabel("Signed in as")).toHaveText(username);
  return { context, page, username };
}

test("README screenshots", async ({ browser }) => {
  const ada = await signIn(browser, "ada");
  const bob = await signIn(browser, "bob");
  const cat = await signIn(browser, "cat");
  await activeDm(bob, ada);
  await sendMessage(bob, "Are we still on for the climbing wall on Saturday?");
  await sendMessage(ada, "Yes! 10 am at the usual place?");
  await sendMessage(bob, "Perfect, see you there!");

  await openChat(cat, ada);
  await cat.page.getByLabel("Note").fill("Hi! We met at the Rust meetup. Up for a coffee chat?");
  await cat.page.getByRole("button", { name: "Start chat" }).click();
  await expect(cat.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();

  // Requests apart from conversations.
  await ada.page.goto("/");
  await expect(ada.page.getByRole("list", { name: "Requests" })).toBeVisible();
  await ada.page.screenshot({ path: shot("requests") });

  // The invitee reads the note, then answers.
  await openChat(ada, cat);
  await expect(ada.page.getByRole("button", { name: "Accept" })).toBeVisible();
  await ada.page.screenshot({ path: shot("invite") });

  // A conversation, with presence and the safety buttons.
  await openChat(ada, bob);
  await expect(ada.page.getByRole("list", { name: "Messages" }).getByText("Perfect, see you there")).toBeVisible();
  await expect(ada.page.getByText("Active now")).toBeVisible();
  await ada.page.screenshot({ path: shot("conversation") });

  // Blocking asks first.
  await ada.page.getByRole("button", { name: "Block", exact: true }).click();
  await expect(ada.page.getByRole("dialog")).toBeVisible();
  await ada.page.screenshot({ path: shot("block") });

  for (const who of [ada, bob, cat]) await who.context.close();
});
