import { expect, test } from "@playwright/test";
import { activeDm, expectNoPageErrors, type Person, person, png, sendMessage } from "../support";

test.afterEach(expectNoPageErrors);

/** Replies and images between two people in an ACTIVE DM. */

const messagesOf = (who: Person) => who.page.getByRole("list", { name: "Messages" });
const messageOf = (who: Person, text: string) => messagesOf(who).getByRole("listitem").filter({ hasText: text });

/** The DM's id, from `who`'s chat page with the other person. */
async function dmId(who: Person): Promise<string> {
  const other = new URL(who.page.url()).pathname.split("/").pop();
  return (await (await who.page.request.post("/api/dm/get", { data: { other_user_id: other } })).json()).id;
}

test("a reply quotes its message, live on both sides, and shows it deleted later", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(bob, "Lunch at noon?");
  await sendMessage(bob, "Or later?");

  await messageOf(ada, "Lunch at noon?").getByRole("button", { name: "Reply" }).click();
  await expect(ada.page.getByText(`Replying to ${bob.username}: Lunch at noon?`)).toBeVisible();
  // The composer has the focus: typing answers at once.
  await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeFocused();
  await ada.page.keyboard.type("Noon works");
  await ada.page.keyboard.press("Enter");
  await expect(ada.page.getByText(/^Replying to/)).toBeHidden();

  const onBob = messageOf(bob, "Noon works");
  await expect(onBob.getByRole("button", { name: "Reply to You: Lunch at noon?" })).toBeVisible();
  await expect(messageOf(ada, "Noon works").getByRole("button", { name: `Reply to ${bob.username}: Lunch at noon?` })).toBeVisible();

  // Escape, or Cancel reply, drops a reply before it is sent.
  await messageOf(ada, "Or later?").getByRole("button", { name: "Reply" }).click();
  await ada.page.getByRole("button", { name: "Cancel reply" }).click();
  await expect(ada.page.getByText(/^Replying to/)).toBeHidden();

  // Bob deletes what was answered: the reply says so on both sides.
  await messageOf(bob, "Lunch at noon?").getByRole("button", { name: "Delete" }).click();
  for (const who of [ada, bob]) {
    await expect(messageOf(who, "Noon works").getByRole("button", { name: /: Message deleted$/ })).toBeVisible();
  }
  await ada.context.close();
  await bob.context.close();
});

test("pressing a quote shows the original, loading older history if needed", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  const dm = await dmId(bob);
  const send = async (who: Person, body: string, reply_to_id?: string) => {
    const data = { dm_id: dm, body, client_id: crypto.randomUUID(), reply_to_id };
    for (;;) {
      const response = await who.page.request.post("/api/messages/send", { data });
      // Past the burst, the rate limit answers 429: wait and send again.
      if (response.status() !== 429) return response.json();
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };
  const original = await send(bob, "The keys are under the blue flowerpot");
  for (let n = 0; n < 60; n++) await send(bob, `filler ${n}`);
  await send(ada, "Found them, thanks", original.id);

  await bob.page.reload();
  const messages = messagesOf(bob);
  const text = bob.page.getByRole("paragraph").filter({ hasText: "The keys are under the blue flowerpot" });
  await expect(messages.getByRole("listitem").filter({ has: text })).not.toBeAttached();
  await expect(bob.page.getByRole("button", { name: "Menu" })).toBeEnabled();
  await messageOf(bob, "Found them").getByRole("button", { name: /^Reply to You: The keys/ }).click();
  const found = messages.getByRole("listitem").filter({ has: text });
  await expect(found).toBeFocused();
  await expect(found).toBeInViewport();
  await ada.context.close();
  await bob.context.close();
});

test("an image is attached, seen on both sides at its size, and opens full size", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await expect(ada.page.getByRole("button", { name: "Menu" })).toBeEnabled();
  const picture = await png(ada.page, 640, 480);

  await ada.page.getByLabel("Attach image").setInputFiles({ name: "flat.png", mimeType: "image/png", buffer: picture });
  await expect(ada.page.getByRole("button", { name: "Remove image" })).toBeVisible();
  await ada.page.getByRole("textbox", { name: "Message" }).fill("Our new flat");
  await ada.page.getByRole("textbox", { name: "Message" }).press("Enter");

  for (const who of [ada, bob]) {
    const link = messageOf(who, "Our new flat").getByRole("link", { name: "Open image full size (640 × 480)" });
    const thumbnail = link.getByRole("img", { name: "Image" });
    // Its place is reserved before it loads: the thumbnail's size.
    await expect(thumbnail).toHaveAttribute("width", "320");
    await expect(thumbnail).toHaveAttribute("height", "240");
    await expect.poll(() => thumbnail.evaluate((img: HTMLImageElement) => img.naturalWidth)).toBe(320);
  }
  await expect(ada.page.getByRole("button", { name: "Remove image" })).toBeHidden();

  const link = messageOf(bob, "Our new flat").getByRole("link", { name: /^Open image full size/ });
  await expect(link).toHaveAttribute("target", "_blank");
  const [tab] = await Promise.all([bob.context.waitForEvent("page"), link.click()]);
  await tab.waitForLoadState();
  expect(new URL(tab.url()).pathname).toMatch(/^\/api\/attachments\/[0-9a-f-]{36}$/);
  expect(await tab.evaluate(() => (document.querySelector("img") as HTMLImageElement).naturalWidth)).toBe(640);
  await ada.context.close();
  await bob.context.close();
});

test("an image dropped or pasted is uploaded; an upload can be cancelled; a non-image is refused", async ({
  browser,
}) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await expect(ada.page.getByRole("button", { name: "Menu" })).toBeEnabled();
  const picture = (await png(ada.page, 200, 100)).toString("base64");
  const give = (how: "drop" | "paste") =>
    ada.page.evaluate(
      ([base64, how]) => {
        const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], "dot.png", { type: "image/png" }));
        if (how === "drop") {
          document.querySelector(".thread")!.dispatchEvent(
            new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }),
          );
        } else {
          document.querySelector("textarea[name=body]")!.dispatchEvent(
            new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }),
          );
        }
      },
      [picture, how] as const,
    );

  // Dropped on the conversation, then sent without a caption.
  await give("drop");
  await expect(ada.page.getByRole("button", { name: "Remove image" })).toBeVisible();
  await ada.page.getByRole("button", { name: "Send" }).click();
  await expect(
    messagesOf(bob).getByRole("link", { name: "Open image full size (200 × 100)" }),
  ).toBeVisible();

  // Pasted, then removed again: nothing is sent.
  await give("paste");
  await ada.page.getByRole("button", { name: "Remove image" }).click();
  await expect(ada.page.getByRole("button", { name: "Remove image" })).toBeHidden();

  // An upload held up on its way can be cancelled.
  let release = () => {};
  await ada.page.route("**/api/attachments", (route) => {
    release = () => void route.continue().catch(() => {});
  });
  await give("drop");
  await expect(ada.page.getByRole("status").filter({ hasText: "Uploading dot.png" })).toBeVisible();
  await ada.page.getByRole("button", { name: "Cancel upload" }).click();
  await expect(ada.page.getByRole("status").filter({ hasText: "Uploading" })).toBeHidden();
  release();
  await ada.page.unroute("**/api/attachments");

  // A text file named like a picture is refused, and said why.
  await ada.page
    .getByLabel("Attach image")
    .setInputFiles({ name: "notes.png", mimeType: "image/png", buffer: Buffer.from("not a picture") });
  await expect(ada.page.getByRole("alert")).toHaveText(
    "Could not upload notes.png: The file is not a JPEG, PNG, WebP or GIF image.",
  );
  await ada.page.getByRole("button", { name: "Dismiss" }).click();
  // Bob got the one image and nothing else.
  await expect(messagesOf(bob).getByRole("link", { name: /^Open image full size/ })).toHaveCount(1);
  await ada.context.close();
  await bob.context.close();
});
