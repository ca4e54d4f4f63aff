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

test("a username without letters or digits is refused with a message", async ({ page }) => {
  await page.goto("/sign-in");
  await expect(page.getByRole("button", { name: "Menu" })).toBeEnabled();
  await page.getByLabel("Username").fill("!!!");
  await page.getByRole("button", { name: "Continue" }).click();
  await expect(page.getByRole("alert")).toContainText("letters or digits");
  await expect(page.getByRole("link", { name: "Sign in" })).toBeVisible();
});
