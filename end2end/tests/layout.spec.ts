import { expect, test } from "@playwright/test";

test.describe("hydrated", () => {
  test("the Menu button shows and hides the sidebar once the page has hydrated", async ({ page }) => {
    await page.goto("/");
    const menu = page.getByRole("button", { name: "Menu" });
    const sidebar = page.getByRole("complementary", { name: "Conversations" });

    // Server-rendered disabled; enabled only by the WASM bundle.
    await expect(menu).toBeEnabled();
    await expect(sidebar).toBeVisible();
    await expect(menu).toHaveAttribute("aria-expanded", "true");

    await menu.click();
    await expect(sidebar).toBeHidden();
    await expect(menu).toHaveAttribute("aria-expanded", "false");

    await menu.click();
    await expect(sidebar).toBeVisible();
    await expect(menu).toHaveAttribute("aria-expanded", "true");
  });
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("the server renders the layout and the Menu button stays disabled", async ({ page }) => {
    await page.goto("/");
    await expect(page.getByRole("heading", { name: "Every conversation starts with a knock" })).toBeVisible();
    await expect(page.getByRole("complementary", { name: "Conversations" })).toBeVisible();
    await expect(page.getByRole("button", { name: "Menu" })).toBeDisabled();
  });
});

test.describe("at phone width", () => {
  test.use({ viewport: { width: 390, height: 740 } });

  test("the sidebar is the home page, and a conversation covers it until Menu is pressed", async ({ page }) => {
    await page.goto("/sign-in");
    const menu = page.getByRole("button", { name: "Menu" });
    const sidebar = page.getByRole("complementary", { name: "Conversations" });
    await expect(menu).toBeEnabled();
    await expect(sidebar).toBeHidden();
    const username = `pia${Date.now().toString(36)}`;
    await page.getByLabel("Username").fill(username);
    await page.getByRole("button", { name: "Continue" }).click();
    await expect(page.getByLabel("Signed in as")).toHaveText(username);

    await page.goto("/");
    await expect(sidebar).toBeVisible();
    await expect(menu).toHaveAttribute("aria-expanded", "true");
    await sidebar.getByRole("link").first().click();
    await expect(page).toHaveURL(/\/chat\//);
    await expect(sidebar).toBeHidden();
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
    await menu.click();
    await expect(sidebar).toBeVisible();
    await expect(menu).toHaveAttribute("aria-expanded", "true");
  });
});
