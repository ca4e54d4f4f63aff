// Knock's session glue, loaded by every page (see the README, "Clerk
// sessions"). It defines `window.knockSession`, which the WASM app calls:
//
//   refresh()          -> Promise<{token} | {signedOut: true} | {error}>
//                         a fresh session token from ClerkJS; signedOut when
//                         Clerk says the session has ended (always in dev
//                         mode, where nothing can renew a session)
//   announceSignOut()  tells the other tabs that this one signed out
//   mountSignIn(el)    Clerk mode: Clerk's sign-in in `el`
//
// In Clerk mode (the script tag carries the publishable key) it loads
// ClerkJS from the key's Frontend API and calls `Clerk.load()`, after which
// ClerkJS keeps the `__session` cookie fresh while the tab is open. When the
// session ends, here or in another tab, it dispatches `knock:signed-out` on
// `window` in every tab of the browser (a BroadcastChannel).
(function () {
  "use strict";
  var script = document.currentScript;
  var key = script && script.getAttribute("data-clerk-publishable-key");
  var clerkJsUrl = script && script.getAttribute("data-clerk-js-url");
  var channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("knock-session") : null;
  var ended = false;

  function signedOut(tellOthers) {
    if (tellOthers && channel) channel.postMessage("signed-out");
    if (ended) return;
    ended = true;
    window.dispatchEvent(new Event("knock:signed-out"));
  }
  if (channel) {
    channel.onmessage = function (event) {
      if (event.data === "signed-out") signedOut(false);
    };
  }

  // Clerk mode: ClerkJS, loaded once per page.
  var clerk = null;
  if (key && clerkJsUrl) {
    clerk = new Promise(function (resolve, reject) {
      var tag = document.createElement("script");
      tag.async = true;
      tag.crossOrigin = "anonymous";
      tag.setAttribute("data-clerk-publishable-key", key);
      tag.src = clerkJsUrl;
      tag.onload = resolve;
      tag.onerror = function () {
        reject(new Error("ClerkJS could not be loaded from " + clerkJsUrl));
      };
      document.head.appendChild(tag);
    }).then(function () {
      return window.Clerk.load().then(function () {
        return window.Clerk;
      });
    });
    clerk.then(
      function (Clerk) {
        // A session that goes away (signed out in another tab, revoked,
        // expired at Clerk) ends this page's too.
        var had = !!Clerk.session;
        Clerk.addListener(function (resources) {
          if (resources.session) had = true;
          else if (had && resources.session === null) signedOut(true);
        });
      },
      function () {},
    );
  }

  function refresh() {
    if (!clerk) {
      signedOut(true);
      return Promise.resolve({ signedOut: true });
    }
    return clerk
      .then(function (Clerk) {
        if (!Clerk.session) return { signedOut: true };
        return Clerk.session.getToken({ skipCache: true }).then(function (token) {
          return token ? { token: token } : { signedOut: true };
        });
      })
      .catch(function (error) {
        // ClerkJS answers an ended session's token request with a 401 or
        // 404 from the Frontend API and drops the session; anything else
        // (offline, ClerkJS not loaded) may pass.
        var status = error && error.status;
        if (status === 401 || status === 404 || (window.Clerk && window.Clerk.loaded && !window.Clerk.session)) {
          return { signedOut: true };
        }
        return { error: String((error && error.message) || error) };
      })
      .then(function (answer) {
        if (answer.signedOut) signedOut(true);
        return answer;
      });
  }

  function mountSignIn(el) {
    if (!clerk || !el || el.getAttribute("data-mounted")) return;
    el.setAttribute("data-mounted", "1");
    clerk.then(
      function (Clerk) {
        var mount = function () {
          Clerk.mountSignIn(el, { fallbackRedirectUrl: "/" });
        };
        if (Clerk.session && /signed_out/.test(location.search)) {
          // Knock's sign-out cleared its cookie; Clerk's session ends too,
          // or ClerkJS would issue a new token.
          Clerk.signOut().then(mount);
        } else if (Clerk.session) {
          location.href = "/";
        } else {
          mount();
        }
      },
      function () {
        el.textContent = "Could not reach Clerk. Reload to try again.";
      },
    );
  }

  window.knockSession = {
    clerk: clerk,
    refresh: refresh,
    announceSignOut: function () {
      if (channel) channel.postMessage("signed-out");
    },
    mountSignIn: mountSignIn,
  };

  // The sign-in page, before (or without) the WASM app.
  function mountIfSignInPage() {
    mountSignIn(document.getElementById("clerk-sign-in"));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mountIfSignInPage);
  else mountIfSignInPage();
})();
