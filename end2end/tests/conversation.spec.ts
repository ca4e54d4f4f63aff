import { expect, type Page, test } from "@playwright/test";
import {
  activeDm,
  expectNoPageErrors,
  messageTexts,
  OwnServer,
  openChat,
  person,
  sendMessage,
  watchErrors,
} from "../support";

test.afterEach(expectNoPageErrors);

/**
 * Two people in an ACTIVE DM, each in a browser context of their own:
 * what one does shows up in the other browser without a reload.
 */

test("unread counts in the sidebar and the title, Seen, typing and presence", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  const main = ada.page.getByRole("main");
  await expect(main.getByText("online", { exact: true })).toBeVisible();

  // Bob is elsewhere: the sidebar and the tab title count what he missed.
  await bob.page.goto("/");
  await expect(bob.page).toHaveTitle("Knock");
  await sendMessage(ada, "First");
  await sendMessage(ada, "Second");
  await expect(bob.page.getByLabel("2 unread")).toBeVisible();
  await expect(bob.page).toHaveTitle("(2) Knock");
  await expect(ada.page.getByText("Seen", { exact: true })).toHaveCount(0);

  // Reading clears both, and Ada sees **Seen** under her last message.
  await openChat(bob, ada);
  await expect.poll(() => messageTexts(bob)).toEqual(["First", "Second"]);
  await expect(bob.page).toHaveTitle("Knock");
  await expect(bob.page.getByLabel(/unread/)).toHaveCount(0);
  const seen = ada.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "Second" }).getByText("Seen", { exact: true });
  await expect(seen).toBeVisible();

  // Shift+Enter makes a new line; Enter sends.
  const box = bob.page.getByRole("textbox", { name: "Message" });
  await box.pressSequentially("line one");
  await expect(main.getByText(/is typing/)).toBeVisible();
  await box.press("Shift+Enter");
  await box.pressSequentially("line two");
  await expect(box).toHaveValue("line one\nline two");
  await box.press("Enter");
  await expect(box).toHaveValue("");
  await expect.poll(() => messageTexts(ada)).toEqual(["First", "Second", "line one\nline two"]);
  // The hint goes when the message arrives, and does not come back by itself.
  await expect(main.getByText(/is typing/)).toHaveCount(0);

  // Typing shows, then expires when Bob stops.
  // (Typing notices are throttled: Bob keeps typing until one goes out.)
  await expect(async () => {
    await box.pressSequentially("h");
    await expect(main.getByText(`${bob.username} is typing…`)).toBeVisible({ timeout: 1_000 });
  }).toPass({ timeout: 10_000 });
  await expect(main.getByText(/is typing/)).toHaveCount(0, { timeout: 12_000 });

  await ada.context.close();
  await bob.context.close();
});

test("a message arriving at the bottom scrolls into view; scrolled up, New messages jumps down", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  const list = bob.page.getByRole("list", { name: "Messages" });
  const distanceFromBottom = () => list.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  // A message taller than the view: a reader at the bottom is taken to its
  // end.
  const tall = Array.from({ length: 30 }, (_, i) => `line ${i + 1}`).join("\n");
  await sendMessage(ada, tall);
  await expect(list.getByText("line 30")).toBeVisible();
  await expect.poll(distanceFromBottom).toBeLessThan(2);
  await expect(bob.page.getByRole("button", { name: "New messages" })).toHaveCount(0);

  // Scrolled up, Bob is not moved; a control tells him and takes him down.
  await list.hover();
  await bob.page.mouse.wheel(0, -5_000);
  await expect.poll(distanceFromBottom).toBeGreaterThan(100);
  await sendMessage(ada, "while you were up there");
  const jump = bob.page.getByRole("button", { name: "New messages" });
  await expect(jump).toBeVisible();
  await expect(list.getByText("while you were up there")).not.toBeInViewport();
  await jump.click();
  await expect(list.getByText("while you were up there")).toBeInViewport();
  await expect(jump).toHaveCount(0);

  await ada.context.close();
  await bob.context.close();
});

test("seven tabs of one person share one stream; closing its tab hands it on, losing nothing", async ({ browser }) => {
  test.setTimeout(90_000);
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  // The event streams Bob's tabs ask for from now on, in order.
  const streams: { page: Page; url: string }[] = [];
  bob.context.on("request", (request) => {
    const frame = request.frame();
    if (new URL(request.url()).pathname === "/api/events") streams.push({ page: frame.page(), url: request.url() });
  });
  const chatUrl = bob.page.url();
  const tabs = [bob.page];
  for (let i = 1; i < 7; i++) {
    const tab = await bob.context.newPage();
    watchErrors(tab, `${bob.username} (tab ${i + 1})`);
    await tab.goto(chatUrl);
    await expect(tab.getByRole("textbox", { name: "Message" })).toBeVisible();
    tabs.push(tab);
  }

  await sendMessage(ada, "to every tab");
  for (const tab of tabs) {
    await expect(tab.getByRole("list", { name: "Messages" }).getByText("to every tab")).toBeVisible();
  }
  // Bob's first tab held the stream before the others opened; none of them
  // opened one of its own.
  expect(streams.map((s) => s.url)).toEqual([]);

  // The tab holding the stream closes: another takes it over and resumes
  // where it left off.
  await bob.page.close();
  await sendMessage(ada, "after the hand-over");
  for (const tab of tabs.slice(1)) {
    const list = tab.getByRole("list", { name: "Messages" });
    await expect(list.getByText("after the hand-over")).toBeVisible();
    await expect(list.getByText("to every tab")).toHaveCount(1);
  }
  expect(streams.length).toBeGreaterThan(0);
  expect(streams[0].page).not.toBe(bob.page);
  expect(streams[0].url).toContain("last_event_id=");

  await ada.context.close();
  await bob.context.close();
});

test("a message shown live costs no fetch of it; requests per message are counted", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(ada, "warm up");
  await expect.poll(() => messageTexts(bob)).toEqual(["warm up"]);
  // Let the warm-up's requests settle, then count both browsers' API calls.
  await bob.page.waitForTimeout(1_000);
  const calls: string[] = [];
  for (const who of [ada, bob]) {
    who.context.on("request", (request) => {
      const path = new URL(request.url()).pathname;
      if (path.startsWith("/api/") && path !== "/api/typing" && path !== "/api/events") {
        calls.push(`${who.username.startsWith("ada") ? "sender" : "receiver"} ${path}`);
      }
    });
  }
  const messages = 5;
  for (let i = 1; i <= messages; i++) {
    await sendMessage(ada, `counted ${i}`);
    await expect(bob.page.getByRole("list", { name: "Messages" }).getByText(`counted ${i}`)).toBeVisible();
  }
  await bob.page.waitForTimeout(1_000);
  console.log(`API requests per message, both browsers: ${(calls.length / messages).toFixed(1)} (${calls.join(", ")})`);
  // The receiver is handed each message by the event stream; the sender's
  // send already moved her read position.
  expect(calls.filter((c) => c === "receiver /api/messages/list")).toEqual([]);
  expect(calls.filter((c) => c === "sender /api/messages/read")).toEqual([]);
  expect(calls.filter((c) => c === "sender /api/messages/send")).toHaveLength(messages);
  // The budget: the send, and the receiver's read position.
  expect(calls.length).toBeLessThanOrEqual(2 * messages);

  await ada.context.close();
  await bob.context.close();
});

test("a sender edits and deletes a message, and the other side sees it", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(ada, "Helo Bob");
  await expect.poll(() => messageTexts(bob)).toEqual(["Helo Bob"]);

  const mine = ada.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "Helo Bob" });
  await mine.hover();
  await mine.getByRole("button", { name: "Edit" }).click();
  const editBox = ada.page.getByRole("textbox", { name: "Edit message" });
  await editBox.fill("Hello Bob");
  await ada.page.getByRole("button", { name: "Save" }).click();
  await expect.poll(() => messageTexts(bob)).toEqual(["Hello Bob"]);
  await expect(bob.page.getByRole("main").getByText("edited", { exact: true })).toBeVisible();

  const edited = ada.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "Hello Bob" });
  await edited.hover();
  await edited.getByRole("button", { name: "Delete" }).click();
  await expect.poll(() => messageTexts(bob)).toEqual(["Message deleted"]);
  // Bob cannot edit Ada's message: he has no such buttons.
  await expect(bob.page.getByRole("button", { name: "Edit" })).toHaveCount(0);

  await ada.context.close();
  await bob.context.close();
});

test("messages sent in quick succession keep their order when the first send is slow", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);

  // Ada's first send takes 1.5 s to reach the server; the second would be
  // quicker if it went at once.
  let held = false;
  await ada.page.route("**/api/messages/send", async (route) => {
    if (!held) {
      held = true;
      await new Promise((resolve) => setTimeout(resolve, 1_500));
    }
    await route.continue();
  });
  await sendMessage(ada, "first");
  await sendMessage(ada, "second");
  await expect.poll(() => messageTexts(bob)).toEqual(["first", "second"]);
  await expect(ada.page.getByText("Sending…")).toHaveCount(0);
  expect(await messageTexts(ada)).toEqual(["first", "second"]);
  // A reload shows the order the server keeps.
  await bob.page.reload();
  await expect.poll(() => messageTexts(bob)).toEqual(["first", "second"]);

  await ada.context.close();
  await bob.context.close();
});

test("a reaction shows up live on the other side, with who reacted, and toggles", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(bob, "Pizza tonight?");
  const messageOf = (who: typeof ada) =>
    who.page.getByRole("list", { name: "Messages" }).getByRole("listitem").filter({ hasText: "Pizza tonight?" });
  await expect(messageOf(ada)).toBeVisible();

  await messageOf(ada).getByLabel("React", { exact: true }).click();
  await messageOf(ada).getByRole("button", { name: "React with 👍" }).click();
  await expect(messageOf(ada).getByRole("button", { name: "👍 1: you" })).toHaveAttribute("aria-pressed", "true");
  // The focus stays on what was chosen, though the row is drawn anew.
  await expect(messageOf(ada).getByRole("button", { name: "👍 1: you" })).toBeFocused();
  // Bob's page shows it at once, with who it was.
  const onBob = messageOf(bob).getByRole("button", { name: `👍 1: ${ada.username}` });
  await expect(onBob).toHaveAttribute("aria-pressed", "false");

  // Bob adds his own by pressing it; Ada sees both.
  await onBob.click();
  await expect(messageOf(ada).getByRole("button", { name: `👍 2: you and ${bob.username}` })).toBeVisible();
  // Ada takes hers back; Bob's count drops.
  await messageOf(ada).getByRole("button", { name: /^👍 2/ }).click();
  await expect(messageOf(bob).getByRole("button", { name: "👍 1: you" })).toHaveAttribute("aria-pressed", "true");

  // A reload shows what is stored.
  await ada.page.reload();
  await expect(messageOf(ada).getByRole("button", { name: `👍 1: ${bob.username}` })).toBeVisible();
  await ada.context.close();
  await bob.context.close();
});

test("search finds an old message and opens the conversation at it", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  // Bob writes the message to find, then more than a page of others.
  const adaId = new URL(bob.page.url()).pathname.split("/").pop();
  const dm = await (await bob.page.request.post("/api/dm/get", { data: { other_user_id: adaId } })).json();
  const send = async (body: string) => {
    const data = { dm_id: dm.id, body, client_id: crypto.randomUUID() };
    // Past the burst, the rate limit answers 429: wait and send again.
    while ((await bob.page.request.post("/api/messages/send", { data })).status() === 429) {
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  };
  await send("The keys are under the blue flowerpot");
  for (let n = 0; n < 60; n++) await send(`filler ${n}`);

  await ada.page.goto("/");
  const box = ada.page.getByRole("searchbox", { name: "Search messages" });
  await box.fill("FLOWERPOT");
  await box.press("Enter");
  const results = ada.page.getByRole("list", { name: "Search results" });
  await expect(results.getByRole("link")).toHaveCount(1);
  await expect(results.locator("mark")).toHaveText("flowerpot");
  await results.getByRole("link").click();
  const messages = ada.page.getByRole("list", { name: "Messages" });
  const found = messages.getByRole("listitem").filter({ hasText: "blue flowerpot" });
  await expect(found).toBeFocused();
  await expect(found).toBeInViewport();
  // The history between it and the newest message is there too.
  await expect(messages.getByText("filler 0", { exact: true })).toBeAttached();
  await expect(messages.getByText("filler 59", { exact: true })).toBeAttached();

  await box.fill("nothing like this");
  await box.press("Enter");
  await expect(ada.page.getByText("No messages found.")).toBeVisible();
  await ada.context.close();
  await bob.context.close();
});

test("search this conversation finds only its messages and shows the one chosen", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  const cy = await person(browser, "cy");
  await activeDm(ada, bob);
  await sendMessage(bob, "The spare key is with the neighbour");
  for (let n = 0; n < 8; n++) await sendMessage(bob, `later ${n}`);
  // The same word in another of Ada's DMs is not found here.
  await activeDm(ada, cy);
  await sendMessage(cy, "My key is lost");

  await openChat(ada, bob);
  const box = ada.page.getByRole("searchbox", { name: "Search this conversation" });
  await box.fill("key");
  await box.press("Enter");
  const results = ada.page.getByRole("list", { name: "Results in this conversation" });
  await expect(results.getByRole("link")).toHaveCount(1);
  await expect(results.getByRole("link")).toContainText(`${bob.username}The spare key is with the neighbour`);
  await expect(results.locator("mark")).toHaveText("key");
  await results.getByRole("link").click();
  await expect(results).toBeHidden();
  const found = ada.page
    .getByRole("list", { name: "Messages" })
    .getByRole("listitem")
    .filter({ hasText: "The spare key is with the neighbour" });
  await expect(found).toBeFocused();
  await expect(found).toBeInViewport();

  await box.fill("nothing like this");
  await box.press("Enter");
  await expect(ada.page.getByText("No messages found.")).toBeVisible();
  await ada.page.getByRole("link", { name: "Close search" }).click();
  await expect(ada.page.getByText("No messages found.")).toBeHidden();
  for (const who of [ada, bob, cy]) await who.context.close();
});

test("a web address in a message is a link that opens in a new tab", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(ada, "the flat: https://example.test/flat?id=7 and <b>not bold</b> javascript:alert(1)");
  const link = bob.page.getByRole("list", { name: "Messages" }).getByRole("link", {
    name: "https://example.test/flat?id=7",
  });
  await expect(link).toHaveAttribute("href", "https://example.test/flat?id=7");
  await expect(link).toHaveAttribute("target", "_blank");
  await expect(link).toHaveAttribute("rel", "noopener noreferrer");
  // Everything else is text: no markup, no other link.
  await expect(bob.page.getByRole("list", { name: "Messages" }).getByRole("link")).toHaveCount(1);
  await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("<b>not bold</b>")).toBeVisible();

  await bob.context.route("https://example.test/**", (route) =>
    route.fulfill({ contentType: "text/html", body: "<title>The flat</title>" }),
  );
  const [tab] = await Promise.all([bob.context.waitForEvent("page"), link.click()]);
  await expect(tab).toHaveTitle("The flat");
  expect(tab.url()).toBe("https://example.test/flat?id=7");
  // The chat stays where it was.
  await expect(bob.page.getByRole("textbox", { name: "Message" })).toBeVisible();
  await ada.context.close();
  await bob.context.close();
});

test("a message sent while the page was still connecting shows up and is announced", async ({ browser }) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  // Ada's next page renders, but its event stream waits to connect.
  let connect = () => {};
  const connecting = new Promise<void>((resolve) => (connect = resolve));
  await ada.page.route("**/api/events*", async (route) => {
    await connecting;
    await route.continue();
  });
  await ada.page.reload();
  await expect(ada.page.getByRole("textbox", { name: "Message" })).toBeVisible();
  await sendMessage(bob, "while you were connecting");
  connect();
  await expect.poll(() => messageTexts(ada)).toEqual(["while you were connecting"]);
  await expect(ada.page.getByRole("status", { name: "Announcements" })).toHaveText(
    `${bob.username}: while you were connecting`,
  );
  await ada.context.close();
  await bob.context.close();
});

test("offline and back: what was sent meanwhile arrives once, in order, and a failed send is retried", async ({
  browser,
}) => {
  const ada = await person(browser, "ada");
  const bob = await person(browser, "bob");
  await activeDm(ada, bob);
  await sendMessage(ada, "before");
  await expect.poll(() => messageTexts(bob)).toEqual(["before"]);

  await bob.context.setOffline(true);
  await expect(bob.page.getByRole("status").filter({ hasText: "Reconnecting…" })).toBeVisible();
  for (const text of ["one", "two", "three"]) {
    await sendMessage(ada, text);
  }
  // Bob writes while offline: it cannot go, and says so.
  await sendMessage(bob, "sent offline");
  await expect(bob.page.getByText("Not sent")).toBeVisible();

  await bob.context.setOffline(false);
  await expect.poll(() => messageTexts(bob), { timeout: 15_000 }).toEqual(["before", "one", "two", "three", "sent offline"]);
  // What arrived meanwhile is announced, as it would have been live (one by
  // one as the stream replays it, or counted as a reload brings it).
  await expect(bob.page.getByRole("status", { name: "Announcements" })).toHaveText(
    new RegExp(`^(${ada.username}: three|[23] new messages from ${ada.username})$`),
  );
  await expect(bob.page.getByRole("status").filter({ hasText: "Reconnecting…" })).toHaveCount(0);
  await bob.page.getByRole("button", { name: "Retry" }).click();
  await expect(bob.page.getByText("Not sent")).toHaveCount(0);
  await expect.poll(() => messageTexts(ada)).toEqual(["before", "one", "two", "three", "sent offline"]);
  expect(await messageTexts(bob)).toEqual(["before", "one", "two", "three", "sent offline"]);

  await ada.context.close();
  await bob.context.close();
});

test.describe("with a server of its own", () => {
  const server = new OwnServer(3012, { KNOCK_SHUTDOWN_GRACE_SECS: "2" });
  test.beforeAll(() => server.start());
  test.afterAll(() => server.dispose());

  test("a server restart mid-conversation loses and doubles nothing", async ({ browser }) => {
    test.setTimeout(90_000);
    const ada = await person(browser, "ada", { baseURL: server.origin });
    const bob = await person(browser, "bob", { baseURL: server.origin });
    await activeDm(ada, bob);
    await sendMessage(ada, "before the restart");
    await expect.poll(() => messageTexts(bob)).toEqual(["before the restart"]);

    await server.stop();
    await expect(bob.page.getByRole("status").filter({ hasText: "Reconnecting…" })).toBeVisible();
    await server.start();
    // Ada goes on writing; Bob's browser reconnects by itself and catches up.
    for (const text of ["after one", "after two"]) {
      await sendMessage(ada, text);
    }
    await expect
      .poll(() => messageTexts(bob), { timeout: 20_000 })
      .toEqual(["before the restart", "after one", "after two"]);
    await expect(bob.page.getByRole("status").filter({ hasText: "Reconnecting…" })).toHaveCount(0);
    await sendMessage(bob, "welcome back");
    await expect.poll(() => messageTexts(ada)).toEqual(["before the restart", "after one", "after two", "welcome back"]);

    await ada.context.close();
    await bob.context.close();
  });
});
