import { expect, test } from "@playwright/test";
import { activeDm, audit, expectNoPageErrors, openChat, person, png, sendMessage } from "../support";

test.afterEach(expectNoPageErrors);

const layouts = [
  { name: "desktop", viewport: { width: 1280, height: 720 } },
  { name: "phone", viewport: { width: 390, height: 844 } },
] as const;

for (const layout of layouts) {
  for (const colorScheme of ["light", "dark"] as const) {
    test.describe(`${layout.name}, ${colorScheme}`, () => {
      test.use({ viewport: layout.viewport, colorScheme });
      // Two people through every state, with an audit of each: 40–60 s here.
      test.setTimeout(360_000);

      test("every page and handshake state passes the WCAG 2.1 AA audit", async ({ browser, page }) => {
        await page.goto("/");
        await audit(page, "signed out");
        await page.goto("/sign-in");
        await audit(page, "sign-in");

        const ada = await person(browser, "ada");
        const bob = await person(browser, "bob");
        for (const who of [ada, bob]) {
          await who.page.setViewportSize(layout.viewport);
          await who.page.emulateMedia({ colorScheme });
        }
        await ada.page.goto("/");
        await expect(ada.page.getByText("No conversations yet.")).toBeVisible();
        await audit(ada.page, "home without conversations");
        await ada.page.goto(`/?q=${bob.username}`);
        await expect(ada.page.getByRole("list", { name: "People" }).getByText(bob.username, { exact: true })).toBeVisible();
        await audit(ada.page, "people search with results");

        // The handshake, each side.
        await openChat(ada, bob);
        await audit(ada.page, "chat page, no DM");
        await ada.page.getByLabel("Note").fill("Hello from the audit");
        await ada.page.getByRole("button", { name: "Start chat" }).click();
        await expect(ada.page.getByRole("button", { name: "Invite sent" })).toBeDisabled();
        await audit(ada.page, "chat page, invite sent");
        await openChat(bob, ada);
        await expect(bob.page.getByRole("button", { name: "Accept" })).toBeVisible();
        await audit(bob.page, "chat page, invited (with Requests)");
        await bob.page.getByRole("button", { name: "Decline" }).click();
        await expect(bob.page.getByRole("main").getByText("You declined")).toBeVisible();
        await audit(bob.page, "chat page, you declined");
        await expect(ada.page.getByRole("main").getByText("Invite declined")).toBeVisible();
        await audit(ada.page, "chat page, invite declined");

        // A conversation with a day separator, an edited, a pending and a
        // failed message.
        await ada.page.getByRole("button", { name: "Re-invite" }).click();
        await expect(bob.page.getByRole("button", { name: "Accept" })).toBeVisible();
        await bob.page.getByRole("button", { name: "Accept" }).click();
        await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeVisible();
        await sendMessage(ada, "first message");
        await sendMessage(ada, "to be edited");
        const mine = ada.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "to be edited" });
        await mine.getByRole("button", { name: "Edit" }).click();
        const edit = ada.page.getByRole("textbox", { name: "Edit message" });
        await edit.fill("edited once");
        await ada.page.getByRole("button", { name: "Save" }).click();
        const edited = ada.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "edited once" });
        await expect(edited.getByText("edited", { exact: true })).toBeVisible();
        let release: () => void = () => {};
        const held = new Promise<void>((resolve) => (release = resolve));
        await ada.page.route("**/api/messages/send", async (route) => {
          await held;
          await route.abort();
        });
        await sendMessage(ada, "still pending");
        await audit(ada.page, "conversation with an edited and a pending message");
        release();
        await expect(ada.page.getByRole("button", { name: "Retry" })).toBeVisible();
        await audit(ada.page, "conversation with a failed message");
        await ada.page.unroute("**/api/messages/send");
        await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("edited once")).toBeVisible();
        // A reaction, and the reaction picker open.
        const first = bob.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "first message" });
        await first.getByLabel("React", { exact: true }).click();
        await first.getByRole("button", { name: "React with 😂" }).click();
        await expect(first.getByRole("button", { name: "😂 1: you" })).toBeVisible();
        await first.getByLabel("React", { exact: true }).click();
        await audit(bob.page, "conversation, the other side, with a reaction and the picker");
        // A reply with an image, and another reply being written.
        await first.getByRole("button", { name: "Reply" }).click();
        await bob.page.getByLabel("Attach image").setInputFiles({
          name: "dot.png",
          mimeType: "image/png",
          buffer: await png(bob.page, 120, 80),
        });
        await expect(bob.page.getByRole("button", { name: "Remove image" })).toBeVisible();
        await bob.page.getByRole("button", { name: "Send" }).click();
        await expect(ada.page.getByRole("link", { name: "Open image full size (120 × 80)" })).toBeVisible();
        const reply = bob.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "edited once" });
        await reply.getByRole("button", { name: "Reply" }).click();
        await audit(bob.page, "conversation with a reply, an image and a reply being written");

        await bob.page.goto("/?find=message");
        await expect(bob.page.getByRole("list", { name: "Search results" }).getByRole("link")).toHaveCount(1);
        await audit(bob.page, "message search results");
        await bob.page.goBack();

        await ada.page.goto("/");
        await expect(ada.page.getByRole("list", { name: "Conversations" }).getByText(bob.username)).toBeVisible();
        await audit(ada.page, "home with conversations");

        // The block confirmation, a blocked person, the blocked people page.
        await bob.page.getByRole("button", { name: "Block", exact: true }).click();
        await expect(bob.page.getByRole("dialog")).toBeVisible();
        await audit(bob.page, "block confirmation");
        await bob.page.getByRole("dialog").getByRole("button", { name: "Block", exact: true }).click();
        await expect(bob.page.getByRole("main").getByText("You blocked this person")).toBeVisible();
        await audit(bob.page, "chat page, blocked");
        await bob.page.goto("/blocked");
        await expect(bob.page.getByRole("list", { name: "Blocked people" })).toBeVisible();
        await audit(bob.page, "blocked people");

        await ada.context.close();
        await bob.context.close();
      });
    });
  }
}

test("handshake steps and new messages are announced once in the live region", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  const said = (who: typeof ada) => who.page.getByRole("status", { name: "Announcements" });
  await ada.page.goto("/");
  await expect(ada.page.getByRole("button", { name: "Menu" })).toBeEnabled();

  await openChat(bob, ada);
  await bob.page.getByRole("button", { name: "Start chat" }).click();
  await expect(said(ada)).toHaveText(`${bob.username} wants to chat with you`);

  await openChat(ada, bob);
  await expect(ada.page.getByRole("button", { name: "Menu" })).toBeEnabled();
  await ada.page.getByRole("button", { name: "Accept" }).click();
  await expect(said(bob)).toHaveText(`${ada.username} accepted your invite`);
  // My own step is not read back to me.
  await expect(said(ada)).not.toHaveText(/accepted/);

  await sendMessage(bob, "hello there");
  await expect(said(ada)).toHaveText(`${bob.username}: hello there`);
  // The message list itself is not a live region, so a list that renders
  // again (a resync, a reload) is not read out again.
  await expect(ada.page.getByRole("list", { name: "Messages" })).not.toHaveAttribute("aria-live", /.*/);

  await ada.context.close();
  await bob.context.close();
});

test("no horizontal scrolling at 320 px wide or at 200 % zoom", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(bob, "a-long-word-without-spaces-".repeat(8));
  const fits = async (state: string) => {
    const overflow = await ada.page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    expect(overflow, `horizontal overflow in px: ${state}`).toBeLessThanOrEqual(0);
  };
  // 320 CSS px (WCAG 1.4.10 reflow), and a 1280 px window at 200 % zoom.
  for (const width of [320, 640]) {
    await ada.page.setViewportSize({ width, height: 640 });
    await ada.page.goto("/");
    await fits(`${width} px, home`);
    await openChat(ada, bob);
    await expect(ada.page.getByRole("list", { name: "Messages" }).getByText("a-long-word")).toBeVisible();
    await fits(`${width} px, conversation`);
    await ada.page.getByRole("button", { name: "Block", exact: true }).click();
    await expect(ada.page.getByRole("dialog")).toBeVisible();
    await fits(`${width} px, block confirmation`);
  }
  await ada.context.close();
  await bob.context.close();
});
