import { expect, test } from "@playwright/test";
import { expectNoPageErrors, openChat, person } from "../support";

test.afterEach(expectNoPageErrors);

test("a failed load shows an alert with Try again, which loads afresh", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await openChat(ada, bob);
  // From now on the server fails Ada's conversation list, as Knock's own
  // errors look on the wire.
  const failing = "**/api/dm/list";
  await ada.page.route(failing, (route) =>
    route.fulfill({
      status: 500,
      contentType: "application/json",
      body: JSON.stringify({ error: { code: "internal", message: "something went wrong on our side" } }),
    }),
  );
  // Inviting makes the sidebar fetch the list again.
  await ada.page.getByRole("button", { name: "Start chat" }).click();
  const alert = ada.page.getByRole("alert").filter({ hasText: "Your conversations could not be loaded." });
  await expect(alert).toBeVisible();
  await expect(ada.page.getByText("No conversations yet.")).toHaveCount(0);

  await ada.page.unroute(failing);
  await alert.getByRole("button", { name: "Try again" }).click();
  await expect(ada.page.getByRole("list", { name: "Conversations" }).getByText("Invite sent")).toBeVisible();
  await expect(ada.page.getByRole("alert")).toHaveCount(0);

  await ada.context.close();
  await bob.context.close();
});
