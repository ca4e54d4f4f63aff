import { type Browser, type BrowserContext, expect, type Page, test } from "@playwright/test";
import { createHmac, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { OwnServer, expectNoPageErrors, messageTexts, sendMessage, watchErrors } from "../support";

/**
 * Knock in Clerk mode, with a key pair standing in for a Clerk instance's:
 * this file starts its own server (the binary cargo-leptos built) with
 * CLERK_* settings, signs session tokens as Clerk does, and delivers a
 * webhook signed as Svix does.
 */
const port = 3011;
const origin = `http://127.0.0.1:${port}`; // OwnServer.origin, needed before it
const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const publicPem = publicKey.export({ type: "spki", format: "pem" }).toString();
const webhookSecret = `whsec_${randomBytes(24).toString("base64")}`;
const publishableKey = `pk_test_${Buffer.from("clerk.knock.test$").toString("base64")}`;

const b64url = (data: string) => Buffer.from(data).toString("base64url");

/** A Clerk session token (RS256) for `sub`, valid for `seconds` from `issued`. */
function sessionToken(sub: string, seconds = 60, issued = Math.floor(Date.now() / 1000)): string {
  const header = b64url(JSON.stringify({ alg: "RS256", typ: "JWT", kid: "ins_e2e" }));
  const payload = b64url(
    JSON.stringify({
      sub,
      azp: origin,
      iss: "https://clerk.knock.test",
      sid: "sess_e2e",
      iat: issued,
      nbf: issued - 5,
      exp: issued + seconds,
    }),
  );
  const signature = sign("RSA-SHA256", Buffer.from(`${header}.${payload}`), privateKey).toString("base64url");
  return `${header}.${payload}.${signature}`;
}

/** Delivers a Clerk event signed as Svix signs it. */
async function deliver(type: string, data: object): Promise<Response> {
  const body = JSON.stringify({ data, object: "event", type, timestamp: Date.now(), instance_id: "ins_e2e" });
  const id = `msg_${randomBytes(8).toString("hex")}`;
  const timestamp = Math.floor(Date.now() / 1000);
  const key = Buffer.from(webhookSecret.slice("whsec_".length), "base64");
  const signature = createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
  return fetch(`${origin}/api/webhooks/clerk`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "svix-id": id,
      "svix-timestamp": String(timestamp),
      "svix-signature": `v1,${signature}`,
    },
    body,
  });
}

const server = new OwnServer(port, {
  CLERK_PUBLISHABLE_KEY: publishableKey,
  CLERK_JWT_KEY: publicPem,
  CLERK_AUTHORIZED_PARTIES: origin,
  CLERK_WEBHOOK_SIGNING_SECRET: webhookSecret,
});

test.describe.configure({ mode: "serial" });
test.beforeAll(() => server.start());
test.afterAll(() => server.dispose());

test("a Clerk session token renders the signed-in page with the webhook's profile", async ({ page, context }) => {
  const clerkId = `user_${randomBytes(6).toString("hex")}`;
  const username = `grace${randomBytes(3).toString("hex")}`;
  const delivered = await deliver("user.created", {
    id: clerkId,
    object: "user",
    username,
    first_name: "Grace",
    last_name: "Hopper",
    image_url: "https://img.clerk.com/g.png",
    primary_email_address_id: "idn_1",
    email_addresses: [{ id: "idn_1", object: "email_address", email_address: `${username}@example.com` }],
    created_at: Date.now(),
    updated_at: Date.now(),
  });
  expect(delivered.status).toBe(200);

  await context.addCookies([{ name: "__session", value: sessionToken(clerkId), url: origin }]);
  // The webhook is applied in the background, within moments.
  await expect(async () => {
    await page.goto(`${origin}/`);
    await expect(page.getByLabel("Signed in as")).toHaveText(username, { timeout: 1_000 });
  }).toPass({ timeout: 15_000 });
});

test("an expired token of a browser Clerk still signs in is refreshed, not shown signed out", async ({
  page,
  context,
}) => {
  const issued = Math.floor(Date.now() / 1000) - 120;
  await context.addCookies([
    { name: "__session", value: sessionToken("user_expired", 60, issued), url: origin },
    { name: "__client_uat", value: String(issued), url: origin },
  ]);
  await page.goto(`${origin}/`);
  // ClerkJS cannot be reached from the test machine, so the refresh page
  // ends by saying so; what matters is that it is not the signed-out app.
  await expect(page.getByRole("status")).toHaveText(/Signing you in|Could not reach Clerk/);
  await expect(page.getByRole("link", { name: "Sign in" })).toHaveCount(0);
});

/**
 * A stand-in for ClerkJS, served in place of the Frontend API's bundle.
 * Like ClerkJS it loads the browser's client (one session) from the
 * Frontend API, and `session.getToken()` asks the Frontend API for a fresh
 * session token and puts it in the `__session` cookie; when the Frontend
 * API answers 401 (the session has ended), the session becomes `null` and
 * listeners hear of it, and `getToken` fails with that status. Unlike
 * ClerkJS it renews nothing in the background, as in a tab whose timers the
 * browser throttled: the page must renew on its own when a token expired.
 */
const clerkStub = `
(function () {
  var api = "https://clerk.knock.test";
  var listeners = [];
  var Clerk = { loaded: false, session: null };
  function emit() {
    listeners.forEach(function (listener) { listener({ session: Clerk.session }); });
  }
  function ended(status) {
    Clerk.session = null;
    emit();
    var error = new Error("the session has ended");
    error.status = status;
    throw error;
  }
  function session(id) {
    return {
      id: id,
      getToken: function () {
        return fetch(api + "/v1/client/sessions/" + id + "/tokens", { method: "POST" }).then(function (response) {
          if (response.status === 401 || response.status === 404) ended(response.status);
          return response.json();
        }).then(function (body) {
          document.cookie = "__session=" + body.jwt + "; path=/; SameSite=Lax";
          return body.jwt;
        });
      },
    };
  }
  Clerk.load = function () {
    return fetch(api + "/v1/client").then(function (response) { return response.json(); }).then(function (client) {
      Clerk.session = client.session ? session(client.session) : null;
      Clerk.loaded = true;
    });
  };
  Clerk.addListener = function (listener) { listeners.push(listener); };
  Clerk.signOut = function () {
    Clerk.session = null;
    document.cookie = "__session=; path=/; max-age=0";
    emit();
    return Promise.resolve();
  };
  Clerk.mountSignIn = function (el) { el.textContent = "Clerk's sign-in"; };
  window.Clerk = Clerk;
})();
`;

/** A Clerk user in a browser context of their own, with ClerkJS stubbed. */
interface ClerkPerson {
  context: BrowserContext;
  page: Page;
  clerkId: string;
  /** Knock's id for them. */
  id: string;
  /** Session tokens the Frontend API stub issued. */
  tokensIssued: number;
  /** Set: the Frontend API says the session has ended. */
  sessionEnded: boolean;
}

/** Calls a Knock endpoint as `clerkId` with a fresh token (JSON in and out). */
async function api(clerkId: string, endpoint: string, body: object | null): Promise<any> {
  const response = await fetch(`${origin}/api/${endpoint}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${sessionToken(clerkId)}`,
      "content-type": body ? "application/json" : "application/x-www-form-urlencoded",
    },
    body: body ? JSON.stringify(body) : "",
  });
  expect(response.status, `${endpoint} answers`).toBe(200);
  return response.json();
}

/** A new Clerk user signed in with a first token that lives `firstTokenSeconds`. */
async function clerkPerson(browser: Browser, firstTokenSeconds: number): Promise<ClerkPerson> {
  const clerkId = `user_${randomBytes(6).toString("hex")}`;
  const { user } = await api(clerkId, "session", null);
  const context = await browser.newContext();
  const who: ClerkPerson = { context, page: await context.newPage(), clerkId, id: user.id, tokensIssued: 0, sessionEnded: false };
  watchErrors(who.page, clerkId);
  const issued = Math.floor(Date.now() / 1000);
  await context.addCookies([
    { name: "__session", value: sessionToken(clerkId, firstTokenSeconds, issued), url: origin },
    { name: "__client_uat", value: String(issued), url: origin },
  ]);
  const cors = { "access-control-allow-origin": "*" };
  await context.route("https://clerk.knock.test/**", async (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path.endsWith("/clerk.browser.js")) {
      await route.fulfill({ contentType: "text/javascript", headers: cors, body: clerkStub });
    } else if (path === "/v1/client") {
      await route.fulfill({ json: { session: "sess_e2e" }, headers: cors });
    } else if (path.endsWith("/tokens")) {
      if (who.sessionEnded) {
        await route.fulfill({ status: 401, json: { errors: [{ code: "authentication_invalid" }] }, headers: cors });
      } else {
        who.tokensIssued += 1;
        await route.fulfill({ json: { jwt: sessionToken(clerkId) }, headers: cors });
      }
    } else {
      await route.fulfill({ status: 404, headers: cors, body: "" });
    }
  });
  return who;
}

/** `a` and `b` in an ACTIVE DM (through the API), each on the chat page. */
async function chatting(a: ClerkPerson, b: ClerkPerson): Promise<void> {
  const dm = await api(a.clerkId, "dm/invite", { other_user_id: b.id });
  await api(b.clerkId, "dm/accept", { dm_id: dm.id });
  for (const [me, other] of [
    [a, b],
    [b, a],
  ]) {
    await me.page.goto(`${origin}/chat/${other.id}`);
    await expect(me.page.getByRole("textbox", { name: "Message" })).toBeVisible();
    // Hydrated: the Menu button is enabled by the app.
    await expect(me.page.getByRole("button", { name: "Menu" })).toBeEnabled();
  }
}

test.describe("a page left open past its session token", () => {
  test.afterEach(expectNoPageErrors);

  test("a message written after the token expired is renewed and sent once", async ({ browser }) => {
    test.setTimeout(120_000);
    const ada = await clerkPerson(browser, 20);
    const bob = await clerkPerson(browser, 600);
    await chatting(ada, bob);
    // Ada's event stream and typing hints do not get through, so that the
    // send is the first request to meet the expired token; Bob's stream is
    // live.
    for (const path of ["**/api/events**", "**/api/typing"]) {
      await ada.context.route(path, (route) => route.abort());
    }
    const sends: number[] = [];
    ada.page.on("response", (response) => {
      if (response.url().endsWith("/api/messages/send")) sends.push(response.status());
    });

    await ada.page.waitForTimeout(35_000);
    await sendMessage(ada, "written after a minute");
    await expect.poll(() => messageTexts(bob)).toEqual(["written after a minute"]);
    await expect(ada.page.getByText("Not sent")).toHaveCount(0);
    expect(sends, "refused with the expired token, then sent with a fresh one").toEqual([401, 200]);
    expect(ada.tokensIssued).toBe(1);
    // The retry reused the message's client_id: it exists once.
    const messages = await api(bob.clerkId, "messages/list", { dm_id: (await api(bob.clerkId, "dm/get", { other_user_id: ada.id })).id });
    expect(messages.map((m: { body: string }) => m.body)).toEqual(["written after a minute"]);
    await expect(bob.page.getByRole("list", { name: "Messages" }).getByText("written after a minute")).toHaveCount(1);

    await ada.context.close();
    await bob.context.close();
  });

  test("the event stream reconnects with a fresh token and delivers what was sent meanwhile", async ({ browser }) => {
    test.setTimeout(120_000);
    const ada = await clerkPerson(browser, 20);
    const bob = await clerkPerson(browser, 600);
    await chatting(ada, bob);

    // Ada's stream ends when her first token expires; her browser renews
    // the token and reconnects by itself.
    await ada.page.waitForTimeout(35_000);
    await sendMessage(bob, "one");
    await expect.poll(() => messageTexts(ada)).toEqual(["one"]);
    expect(ada.tokensIssued).toBeGreaterThan(0);

    // A dropped connection: what Bob sends meanwhile arrives once.
    await ada.context.setOffline(true);
    await sendMessage(bob, "two");
    await ada.context.setOffline(false);
    await expect.poll(() => messageTexts(ada), { timeout: 15_000 }).toEqual(["one", "two"]);

    await ada.context.close();
    await bob.context.close();
  });

  test("a session Clerk ended shows as signed out in every tab and keeps the draft", async ({ browser }) => {
    const ada = await clerkPerson(browser, 600);
    const bob = await clerkPerson(browser, 600);
    await chatting(ada, bob);
    const second = await ada.context.newPage();
    watchErrors(second, `${ada.clerkId} (second tab)`);
    await second.goto(`${origin}/`);
    await expect(second.getByRole("button", { name: "Menu" })).toBeEnabled();
    const draft = ada.page.getByRole("textbox", { name: "Message" });
    await draft.fill("a draft worth keeping");

    // ClerkJS renews the token (here: the first tab, as Clerk's poller
    // would) and the Frontend API says the session has ended.
    ada.sessionEnded = true;
    await ada.page.evaluate(() => (window as any).Clerk.session.getToken().catch(() => null));

    for (const page of [ada.page, second]) {
      await expect(page.getByRole("alert")).toContainText("You are signed out");
      await expect(page.getByRole("link", { name: "Sign in again" })).toBeVisible();
    }
    await expect(draft).toHaveValue("a draft worth keeping");
    expect(ada.tokensIssued).toBe(0);

    await ada.context.close();
    await bob.context.close();
  });
});
