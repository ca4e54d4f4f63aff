import { expect, type Locator, type Page, test } from "@playwright/test";
import { expectNoPageErrors, person } from "../support";

test.afterEach(expectNoPageErrors);

/** Presses Tab (or `key`, e.g. Shift+Tab) until `target` has the focus, at
 * most `max` times: it must be reachable, and focus must not get stuck on
 * the way. Each stop shows a focus ring (`:focus-visible`). */
async function tabTo(page: Page, target: Locator, key = "Tab", max = 60): Promise<void> {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(key);
    const visible = await page.evaluate(() => {
      const el = document.activeElement;
      return !el || el === document.body || el.matches(":focus-visible");
    });
    expect(visible, "the focused element shows it").toBe(true);
    if (await target.evaluate((el) => el === document.activeElement)) return;
  }
  throw new Error(`Tab never reached ${target}`);
}

/** Waits until the page has hydrated (the Menu button works only then). */
async function hydrated(page: Page): Promise<void> {
  await expect(page.getByRole("button", { name: "Menu" })).toBeEnabled();
}

test("the handshake and a conversation with the keyboard alone", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");

  // The first stop is the skip link; it leads into the main pane.
  await ada.page.goto("/");
  await hydrated(ada.page);
  await ada.page.keyboard.press("Tab");
  const skip = ada.page.getByRole("link", { name: "Skip to conversation" });
  await expect(skip).toBeFocused();
  await ada.page.keyboard.press("Enter");
  await expect(ada.page.getByRole("main")).toBeFocused();

  // Ada finds Bob with the people search and knocks, with a note.
  await tabTo(ada.page, ada.page.getByRole("searchbox", { name: "Search people" }));
  await ada.page.keyboard.type(bob.username);
  await ada.page.keyboard.press("Enter");
  await hydrated(ada.page);
  const bobLink = ada.page.getByRole("list", { name: "People" }).getByRole("link", { name: new RegExp(bob.username) });
  await expect(bobLink).toBeVisible();
  await tabTo(ada.page, bobLink);
  await ada.page.keyboard.press("Enter");
  await expect(ada.page.getByRole("heading", { level: 1 })).toHaveText(bob.username);
  await tabTo(ada.page, ada.page.getByRole("textbox", { name: "Note" }));
  await ada.page.keyboard.type("Hello from the keyboard");
  await ada.page.keyboard.press("Enter");
  await expect(ada.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();

  // Bob opens the request and accepts: the focus lands in the composer.
  await bob.page.goto("/");
  await hydrated(bob.page);
  const request = bob.page.getByRole("list", { name: "Requests" }).getByRole("link", { name: new RegExp(ada.username) });
  await tabTo(bob.page, request);
  await bob.page.keyboard.press("Enter");
  await tabTo(bob.page, bob.page.getByRole("button", { name: "Accept" }));
  await bob.page.keyboard.press("Enter");
  const bobComposer = bob.page.getByRole("textbox", { name: "Message" });
  await expect(bobComposer).toBeFocused();
  // The accept's own event reaches the sidebar too, and the page settles
  // (it renders the conversation again, keeping the focus in the composer).
  await expect(bob.page.getByRole("list", { name: "Conversations" }).getByText(ada.username)).toBeVisible();
  await expect(bobComposer).toBeFocused();
  await bob.page.keyboard.type("Hi Ada, typed without a mouse");
  await bob.page.keyboard.press("Enter");
  await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("typed without a mouse")).toBeVisible();

  // Ada's page opened the conversation live; she answers from the composer.
  const adaComposer = ada.page.getByRole("textbox", { name: "Message" });
  await expect(ada.page.getByRole("list", { name: "Messages" }).getByText("typed without a mouse")).toBeVisible();
  await expect(adaComposer).toBeFocused();
  await ada.page.keyboard.type("Hello Bob");
  await ada.page.keyboard.press("Shift+Enter");
  await ada.page.keyboard.type("on two lines");
  await ada.page.keyboard.press("Enter");
  await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("on two lines")).toBeVisible();

  // The block confirmation takes the focus, Escape closes it, and the
  // focus returns to the Block button that opened it.
  const opener = ada.page.getByRole("button", { name: "Block", exact: true });
  await tabTo(ada.page, opener, "Shift+Tab");
  await ada.page.keyboard.press("Enter");
  const dialog = ada.page.getByRole("dialog");
  await expect(dialog.getByRole("button", { name: "Cancel" })).toBeFocused();
  await ada.page.keyboard.press("Escape");
  await expect(dialog).toHaveCount(0);
  await expect(opener).toBeFocused();

  await ada.context.close();
  await bob.context.close();
});
