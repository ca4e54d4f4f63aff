import { expect, test } from "@playwright/test";
import { expectNoPageErrors, openChat, person } from "../support";

test.afterEach(expectNoPageErrors);

/**
 * The DM handshake between two people, each in a browser context of their
 * own, with and without JavaScript.
 */

for (const javaScriptEnabled of [true, false]) {
  test(`invite and accept (${javaScriptEnabled ? "hydrated" : "without JavaScript"})`, async ({ browser }) => {
    const ada = await person(browser, "ada", { javaScriptEnabled });
    const bob = await person(browser, "bob", { javaScriptEnabled });

    await openChat(ada, bob);
    await ada.page.getByLabel("Note").fill("Ada here, from the meetup");
    await ada.page.getByRole("button", { name: "Start chat" }).click();
    await expect(ada.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();

    await openChat(bob, ada);
    // The note shows with the invite, above the buttons.
    await expect(bob.page.getByRole("main").getByText("Ada here, from the meetup")).toBeVisible();
    await expect(bob.page.getByRole("button", { name: "Decline" })).toBeVisible();
    await bob.page.getByRole("button", { name: "Accept" }).click();
    await expect(bob.page.getByRole("textbox", { name: "Message" })).toBeVisible();

    await ada.page.reload();
    await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeVisible();
    await expect(ada.page.getByRole("button", { name: "Invite sent" })).toHaveCount(0);

    // The DM is open: Ada writes, Bob reads it after a reload.
    await ada.page.getByRole("textbox", { name: "Message" }).fill("Hello Bob");
    await ada.page.getByRole("button", { name: "Send" }).click();
    const adaMessages = ada.page.getByRole("list", { name: "Messages" });
    await expect(adaMessages.getByRole("listitem").filter({ hasText: "Hello Bob" })).toHaveCount(1);
    await expect(ada.page.getByRole("textbox", { name: "Message" })).toHaveValue("");
    await bob.page.reload();
    await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("Hello Bob")).toBeVisible();

    await ada.context.close();
    await bob.context.close();
  });
}

test("a decline and a re-invite by the decliner show up live, with the roles swapped", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");

  await openChat(ada, bob);
  await ada.page.getByRole("button", { name: "Start chat" }).click();
  await expect(ada.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();

  await openChat(bob, ada);
  await bob.page.getByRole("button", { name: "Decline" }).click();
  await expect(bob.page.getByRole("main").getByText("You declined")).toBeVisible();

  // Ada's page follows without a reload.
  await expect(ada.page.getByRole("main").getByText("Invite declined")).toBeVisible();
  await expect(ada.page.getByRole("button", { name: "Re-invite" })).toBeVisible();

  await bob.page.getByRole("button", { name: "Re-invite" }).click();
  await expect(bob.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();

  await expect(ada.page.getByRole("button", { name: "Accept" })).toBeVisible();
  await expect(ada.page.getByRole("button", { name: "Decline" })).toBeVisible();

  await ada.context.close();
  await bob.context.close();
});

test("an accept and a message show up in the other browser without a reload", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");

  await bob.page.goto("/");
  await expect(bob.page.getByText("No conversations yet.")).toBeVisible();
  await openChat(ada, bob);
  await ada.page.getByLabel("Note").fill("About the flat");
  await ada.page.getByRole("button", { name: "Start chat" }).click();
  await expect(ada.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();
  // Ada's own invite waits among her conversations.
  await expect(ada.page.getByRole("list", { name: "Conversations" }).getByText("Invite sent")).toBeVisible();

  // Bob's open sidebar learns of the invite by itself, under Requests
  // with its note, apart from his conversations.
  await expect(bob.page.getByLabel("1 waiting")).toHaveText("1");
  await expect(bob.page.getByRole("list", { name: "Requests" }).getByText("About the flat")).toBeVisible();
  await expect(bob.page.getByRole("list", { name: "Conversations" })).toHaveCount(0);
  await openChat(bob, ada);
  const adaCalls: string[] = [];
  ada.context.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/api/") && path !== "/api/events") adaCalls.push(path);
  });
  const bobCalls: string[] = [];
  bob.context.on("request", (request) => {
    const path = new URL(request.url()).pathname;
    if (path.startsWith("/api/") && path !== "/api/events") bobCalls.push(path);
  });
  await bob.page.getByRole("button", { name: "Accept" }).click();
  // Accepted, the row moves from Requests to Conversations.
  await expect(bob.page.getByRole("list", { name: "Requests" })).toHaveCount(0);
  await expect(bob.page.getByRole("list", { name: "Conversations" }).getByRole("link")).toHaveCount(1);

  // Ada's page turns into the conversation without a reload, and without
  // a request: the `dm` event carries the DM.
  await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeVisible();
  expect(adaCalls).toEqual([]);
  await ada.page.getByRole("textbox", { name: "Message" }).fill("Live hello");
  await ada.page.getByRole("button", { name: "Send" }).click();
  await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("Live hello")).toBeVisible();
  // Bob's page takes the DM from his accept's answer (or its `dm` event,
  // whichever comes first) instead of fetching it again.
  expect(bobCalls).toContain("/api/dm/form");
  expect(bobCalls).not.toContain("/api/dm/get");

  // Away from the conversation, Bob sees an unread count that reading clears.
  await bob.page.goto("/");
  await ada.page.getByRole("textbox", { name: "Message" }).fill("Are you there?");
  await ada.page.getByRole("button", { name: "Send" }).click();
  await expect(bob.page.getByLabel("1 unread")).toBeVisible();
  await openChat(bob, ada);
  await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("Are you there?")).toBeVisible();
  await expect(bob.page.getByLabel("1 unread")).toHaveCount(0);

  await ada.context.close();
  await bob.context.close();
});
