import { expect, test } from "@playwright/test";
import { activeDm, expectNoPageErrors, openChat, person, sendMessage } from "../support";

test.afterEach(expectNoPageErrors);

/**
 * Blocking from the chat page, with its confirmation; the blocked people
 * page; unblocking. With and without JavaScript (Ada's browser).
 */
for (const javaScriptEnabled of [true, false]) {
  test(`block with a confirmation, then unblock (${javaScriptEnabled ? "hydrated" : "without JavaScript"})`, async ({
    browser,
  }) => {
    const ada = await person(browser, "ada", { javaScriptEnabled });
    const bob = await person(browser, "bob");
    await activeDm(bob, ada);
    await sendMessage(bob, "before the block");
    // Stored before Ada's page is rendered: without JavaScript it never updates.
    await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("Sending…")).toHaveCount(0);
    await ada.page.reload();
    const adaMessages = ada.page.getByRole("list", { name: "Messages" });
    await expect(adaMessages.getByText("before the block")).toBeVisible();
    const composer = ada.page.getByRole("textbox", { name: "Message" });

    // The confirmation says what blocking does; Cancel changes nothing.
    await ada.page.getByRole("button", { name: "Block", exact: true }).click();
    const dialog = ada.page.getByRole("dialog");
    await expect(dialog).toContainText("They are not told");
    await dialog.getByRole("button", { name: "Cancel" }).click();
    await expect(ada.page.getByRole("dialog")).toHaveCount(0);
    await expect(composer).toBeVisible();

    await ada.page.getByRole("button", { name: "Block", exact: true }).click();
    await ada.page.getByRole("dialog").getByRole("button", { name: "Block", exact: true }).click();
    await expect(ada.page.getByText("You blocked this person")).toBeVisible();
    await expect(composer).toHaveCount(0);
    await expect(adaMessages).toHaveCount(0);
    await expect(ada.page.getByRole("button", { name: "Block", exact: true })).toHaveCount(0);
    // The sidebar no longer lists Bob, in conversations or people.
    await expect(ada.page.getByRole("complementary").getByText(bob.username)).toHaveCount(0);

    // What Bob writes now does not reach Ada.
    await sendMessage(bob, "after the block");
    await ada.page.goto("/");
    await expect(ada.page.getByRole("complementary").getByText("after the block")).toHaveCount(0);

    // The blocked people page lists Bob; unblocking there restores the DM.
    await ada.page.getByRole("link", { name: "Blocked people" }).click();
    const blocked = ada.page.getByRole("list", { name: "Blocked people" });
    await expect(blocked.getByText(bob.username, { exact: true })).toBeVisible();
    await blocked.getByRole("button", { name: "Unblock" }).click();
    await expect(ada.page.getByText("You have not blocked anyone.")).toBeVisible();
    await openChat(ada, bob);
    await expect(composer).toBeVisible();
    await expect(adaMessages.getByText("before the block")).toBeVisible();
    await expect(adaMessages.getByText("after the block")).toHaveCount(0);

    await ada.context.close();
    await bob.context.close();
  });
}

test("a muted conversation keeps its unread badge but leaves the tab title alone", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await ada.page.getByRole("button", { name: "Mute", exact: true }).click();
  await expect(ada.page.getByRole("button", { name: "Unmute" })).toBeVisible();

  await ada.page.goto("/");
  await sendMessage(bob, "quiet please");
  await expect(ada.page.getByLabel("1 unread, muted")).toBeVisible();
  await expect(ada.page).toHaveTitle("Knock");

  // Unmuted, what arrives counts in the title again.
  await openChat(ada, bob);
  await ada.page.getByRole("button", { name: "Unmute" }).click();
  await expect(ada.page.getByRole("button", { name: "Mute", exact: true })).toBeVisible();
  await ada.page.goto("/");
  await sendMessage(bob, "now you hear me");
  await expect(ada.page.getByLabel("1 unread", { exact: true })).toBeVisible();
  await expect(ada.page).toHaveTitle("(1) Knock");

  await ada.context.close();
  await bob.context.close();
});
