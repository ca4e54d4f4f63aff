import { expect, test } from "@playwright/test";
import { createHmac, generateKeyPairSync, randomBytes, sign } from "node:crypto";
import { OwnServer } from "../support";

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
