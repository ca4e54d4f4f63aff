import { expect, test, type Page } from "@playwright/test";

/** A fresh username per test, so tests never share a user. */
function freshName(prefix: string): string {
  return `${prefix}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}

async function signIn(page: Page, username: string): Promise<void> {
  await page.goto("/sign-in");
  await page.getByLabel("Username").fill(username);
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByLabel("Signed in as")).toHaveText(username);
}

for (const javaScriptEnabled of [true, false]) {
  test.describe(javaScriptEnabled ? "hydrated" : "without JavaScript", () => {
    test.use({ javaScriptEnabled });

    test("dev sign-in shows who is signed in, and sign-out signs out", async ({ page, context }) => {
      const username = freshName("ada");
      await signIn(page, username);

      const cookie = (await context.cookies()).find((c) => c.name === "__session");
      expect(cookie?.httpOnly).toBe(true);
      expect(cookie?.sameSite).toBe("Lax");

      // The session survives a reload.
      await page.reload();
      await expect(page.getByLabel("Signed in as")).toHaveText(username);

      await page.getByRole("button", { name: "Sign out" }).click();
      await expect(page).toHaveURL(/\/sign-in$/);
      await expect(page.getByRole("link", { name: "Sign in" })).toBeVisible();
      expect((await context.cookies()).find((c) => c.name === "__session")).toBeUndefined();
    });
  });
}

test("signing out in one tab signs out every tab of the browser", async ({ context }) => {
  const first = await context.newPage();
  const username = freshName("ada");
  await signIn(first, username);
  const second = await context.newPage();
  await second.goto("/");
  await expect(second.getByLabel("Signed in as")).toHaveText(username);
  // Both tabs run the app (the Menu button is enabled once hydrated).
  for (const page of [first, second]) {
    await expect(page.getByRole("button", { name: "Menu" })).toBeEnabled();
  }

  await first.getByRole("button", { name: "Sign out" }).click();
  await expect(first).toHaveURL(/\/sign-in$/);
  await expect(second.getByRole("alert")).toContainText("You are signed out");
  await expect(second.getByRole("link", { name: "Sign in again" })).toBeVisible();
  await expect(second.getByLabel("Signed in as")).toHaveCount(0);
});

test("a username without letters or digits is refused with a message", async ({ page }) => {
  await page.goto("/sign-in");
  await expect(page.getByRole("button", { name: "Menu" })).toBeEnabled();
  await page.getByLabel("Username").fill("!!!");
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByRole("alert")).toContainText("letters or digits");
  await expect(page.getByRole("link", { name: "Sign in" })).toBeVisible();
});
