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
