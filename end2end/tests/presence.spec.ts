import { expect, test } from "@playwright/test";
import { activeDm, expectNoPageErrors, openChat, person } from "../support";

test.afterEach(expectNoPageErrors);

test("the chat page says Active now, then how long ago the other left", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  const header = ada.page.getByRole("region", { name: bob.username });
  await expect(header.getByText("Active now")).toBeVisible();

  // Bob closes Knock: once his stream's grace period is over, Ada reads
  // when he was last there.
  await bob.context.close();
  await expect(header.getByText("Active just now")).toBeVisible({ timeout: 30_000 });
  await expect(header.getByText("Active now")).toHaveCount(0);
  await ada.context.close();
});

test("a pending invite shows nothing of the other's presence", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const cat = await person(browser, "cat");
  await openChat(cat, ada);
  await cat.page.getByRole("button", { name: "Start chat" }).click();
  await expect(cat.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();
  // Ada is online, but Cat's page does not say so until she accepts.
  await openChat(ada, cat);
  await expect(cat.page.getByText(/^Active /)).toHaveCount(0);
  await ada.page.getByRole("button", { name: "Accept" }).click();
  await expect(cat.page.getByText("Active now")).toBeVisible();
  await ada.context.close();
  await cat.context.close();
});
