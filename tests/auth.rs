//! Sessions: Clerk session tokens minted here as Clerk mints them (RS256,
//! the instance key pair), checked through `POST /api/session`; and dev
//! sign-in through its server function.
#![cfg(feature = "ssr")]

mod common;

use std::sync::{Arc, OnceLock};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use knock::auth::server::SessionKeys;
use rsa::{
    RsaPrivateKey,
    pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding},
};
use serde_json::{Value, json};
use sqlx::PgPool;

const ORIGIN: &str = "http://localhost:3000";

/// A key pair standing in for a Clerk instance's: (private PEM, public PEM).
fn instance_keys() -> &'static (String, String) {
    static KEYS: OnceLock<(String, String)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        (
            key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            key.to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap(),
        )
    })
}

fn other_private_key() -> &'static String {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    })
}

fn clerk_state(pool: &PgPool) -> knock::server::state::AppState {
    let keys = SessionKeys::clerk(&instance_keys().1, vec![ORIGIN.to_owned()]).unwrap();
    common::state_with(pool, Arc::new(keys))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Claims as in a Clerk session token.
fn claims(sub: &str) -> Value {
    json!({
        "sub": sub,
        "azp": ORIGIN,
        "iss": "https://clerk.example.com",
        "sid": "sess_2test",
        "iat": now(),
        "nbf": now() - 1,
        "exp": now() + 60,
    })
}

fn sign(claims: &Value, private_pem: &str) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

fn clerk_token(claims: &Value) -> String {
    sign(claims, &instance_keys().0)
}

/// `POST /api/session` with the token in the `__session` cookie.
async fn session_with_cookie(state: knock::server::state::AppState, token: &str) -> Value {
    let request = Request::post("/api/session")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, format!("__session={token}"))
        .body(Body::empty())
        .unwrap();
    let reply = common::send(state, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json()
}

async fn users(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT clerk_id FROM users ORDER BY clerk_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn the_first_request_of_a_user_with_no_row_creates_the_row(pool: PgPool) {
    let session = session_with_cookie(clerk_state(&pool), &clerk_token(&claims("user_new"))).await;
    assert_eq!(session["user"]["username"], "user");
    assert_eq!(users(&pool).await, ["user_new"]);

    // The webhook arrives later and fills in the profile.
    knock::users::server::upsert_from_clerk(
        &pool,
        &knock::users::server::ClerkUser {
            id: "user_new".into(),
            username: Some("newton".into()),
            updated_at: 1_700_000_000_000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let session = session_with_cookie(clerk_state(&pool), &clerk_token(&claims("user_new"))).await;
    assert_eq!(session["user"]["username"], "newton");
    assert_eq!(users(&pool).await, ["user_new"], "still one row");
}

#[sqlx::test]
async fn a_bearer_token_is_accepted_too(pool: PgPool) {
    let request = Request::post("/api/session")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", clerk_token(&claims("user_b"))),
        )
        .body(Body::empty())
        .unwrap();
    let reply = common::send(clerk_state(&pool), request).await;
    assert_eq!(reply.json()["user"]["username"], "user");
    assert_eq!(users(&pool).await, ["user_b"]);
}

/// Each of these tokens is refused: the session is signed out and no row is made.
async fn assert_refused(pool: &PgPool, token: &str, why: &str) {
    let session = session_with_cookie(clerk_state(pool), token).await;
    assert_eq!(session["user"], Value::Null, "{why}");
    assert!(users(pool).await.is_empty(), "{why}: no row");
}

#[sqlx::test]
async fn an_expired_token_is_refused(pool: PgPool) {
    let mut c = claims("user_x");
    c["exp"] = json!(now() - 10);
    assert_refused(
        &pool,
        &clerk_token(&c),
        "expired 10 s ago (beyond the 5 s leeway)",
    )
    .await;
}

#[sqlx::test]
async fn a_token_accepted_once_is_refused_once_it_expires(pool: PgPool) {
    // One server state: its verified tokens are remembered between requests.
    let state = clerk_state(&pool);
    let mut c = claims("user_x");
    c["exp"] = json!(now() - 4);
    let token = clerk_token(&c);
    let session = session_with_cookie(state.clone(), &token).await;
    assert_ne!(session["user"], Value::Null, "within the 5 s leeway");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let session = session_with_cookie(state, &token).await;
    assert_eq!(session["user"], Value::Null, "expired since its first use");
}

#[sqlx::test]
async fn a_token_within_the_leeway_is_accepted(pool: PgPool) {
    let mut c = claims("user_x");
    c["exp"] = json!(now() - 2);
    let session = session_with_cookie(clerk_state(&pool), &clerk_token(&c)).await;
    assert_ne!(session["user"], Value::Null);
}

#[sqlx::test]
async fn a_token_not_yet_valid_is_refused(pool: PgPool) {
    let mut c = claims("user_x");
    c["nbf"] = json!(now() + 60);
    assert_refused(&pool, &clerk_token(&c), "nbf a minute ahead").await;
}

#[sqlx::test]
async fn a_token_signed_with_another_key_is_refused(pool: PgPool) {
    assert_refused(
        &pool,
        &sign(&claims("user_x"), other_private_key()),
        "wrong key",
    )
    .await;
}

#[sqlx::test]
async fn a_token_for_another_origin_is_refused(pool: PgPool) {
    let mut c = claims("user_x");
    c["azp"] = json!("https://evil.example");
    assert_refused(&pool, &clerk_token(&c), "azp not authorized").await;
}

#[sqlx::test]
async fn a_token_without_sub_is_refused(pool: PgPool) {
    let mut c = claims("user_x");
    c.as_object_mut().unwrap().remove("sub");
    assert_refused(&pool, &clerk_token(&c), "no sub").await;
}

#[sqlx::test]
async fn an_unsigned_alg_none_token_is_refused(pool: PgPool) {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let token = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "JWT" })),
        b64(&claims("user_x"))
    );
    assert_refused(&pool, &token, "alg none").await;
}

#[sqlx::test]
async fn an_hs256_token_keyed_with_the_public_key_is_refused(pool: PgPool) {
    let key = EncodingKey::from_secret(instance_keys().1.as_bytes());
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims("user_x"), &key).unwrap();
    assert_refused(&pool, &token, "algorithm confusion").await;
}

#[sqlx::test]
async fn a_deleted_user_is_signed_out(pool: PgPool) {
    knock::users::server::tombstone(&pool, "user_gone")
        .await
        .unwrap();
    let session = session_with_cookie(clerk_state(&pool), &clerk_token(&claims("user_gone"))).await;
    assert_eq!(session["user"], Value::Null);
}

#[sqlx::test]
async fn dev_sign_in_sets_an_http_only_session_cookie_for_the_user(pool: PgPool) {
    let state = common::state(&pool);
    let request = Request::post("/api/session/dev-sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=Ada"))
        .unwrap();
    let reply = common::send(state.clone(), request).await;
    assert!(
        reply.status.is_redirection() || reply.status.is_success(),
        "{}",
        reply.status
    );
    let cookie = reply
        .headers
        .get(header::SET_COOKIE)
        .expect("a cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("__session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let token = cookie
        .trim_start_matches("__session=")
        .split(';')
        .next()
        .unwrap();

    let session = session_with_cookie(state.clone(), token).await;
    assert_eq!(session["user"]["username"], "ada");
    assert_eq!(users(&pool).await, ["dev_ada"]);

    // Signing in again as ADA is the same user.
    let again = Request::post("/api/session/dev-sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=ADA"))
        .unwrap();
    common::send(state, again).await;
    assert_eq!(users(&pool).await, ["dev_ada"]);
}

#[sqlx::test]
async fn dev_sign_in_refuses_a_username_without_letters_or_digits(pool: PgPool) {
    let request = Request::post("/api/session/dev-sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=%21%21%21"))
        .unwrap();
    let reply = common::send(common::state(&pool), request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "bad_request");
    assert!(users(&pool).await.is_empty());
}

#[sqlx::test]
async fn dev_sign_in_refuses_a_username_with_a_control_character(pool: PgPool) {
    for name in ["ada%00", "a%1Bda", "ada%0D%0Abob"] {
        let request = Request::post("/api/session/dev-sign-in")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("username={name}")))
            .unwrap();
        let reply = common::send(common::state(&pool), request).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            reply.body
        );
    }
    assert!(users(&pool).await.is_empty());
}

#[sqlx::test]
async fn dev_sign_in_is_not_there_in_clerk_mode(pool: PgPool) {
    let request = Request::post("/api/session/dev-sign-in")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("username=ada"))
        .unwrap();
    let reply = common::send(clerk_state(&pool), request).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(users(&pool).await.is_empty());
}

#[sqlx::test]
async fn sign_out_clears_the_cookie(pool: PgPool) {
    let request = Request::post("/api/session/sign-out")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::empty())
        .unwrap();
    let reply = common::send(common::state(&pool), request).await;
    let cookie = reply
        .headers
        .get(header::SET_COOKIE)
        .expect("a cookie")
        .to_str()
        .unwrap();
    assert!(
        cookie.starts_with("__session=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
}

/// A local stand-in for a Clerk endpoint: serves `router` on loopback.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The public half of `private_pem` as a JWK with `kid`.
fn jwk(private_pem: &str, kid: &str) -> Value {
    use base64::Engine;
    use rsa::{pkcs8::DecodePrivateKey, traits::PublicKeyParts};
    let key = RsaPrivateKey::from_pkcs8_pem(private_pem).unwrap();
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be()) })
}

fn sign_with_kid(claims: &Value, private_pem: &str, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

#[sqlx::test]
async fn jwks_keys_are_fetched_and_refetched_when_clerk_rotates_them(pool: PgPool) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let served = Arc::new(Mutex::new(
        json!({ "keys": [jwk(&instance_keys().0, "ins_1")] }),
    ));
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = {
        let (served, fetches) = (served.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }
            }),
        );
        format!("{}/.well-known/jwks.json", serve(router).await)
    };
    let keys = Arc::new(SessionKeys::clerk_jwks(
        &url,
        vec![],
        std::time::Duration::ZERO,
    ));
    let state = common::state_with(&pool, keys);

    let token = sign_with_kid(&claims("user_j"), &instance_keys().0, "ins_1");
    assert_ne!(
        session_with_cookie(state.clone(), &token).await["user"],
        Value::Null
    );
    assert_ne!(
        session_with_cookie(state.clone(), &token).await["user"],
        Value::Null
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the key set is cached");

    // Clerk rotates to a new key.
    *served.lock().unwrap() = json!({ "keys": [jwk(other_private_key(), "ins_2")] });
    let rotated = sign_with_kid(&claims("user_j"), other_private_key(), "ins_2");
    assert_ne!(
        session_with_cookie(state.clone(), &rotated).await["user"],
        Value::Null
    );
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "an unknown kid refetches"
    );

    // A kid the JWKS does not have is refused.
    let unknown = sign_with_kid(&claims("user_j"), other_private_key(), "ins_9");
    assert_eq!(
        session_with_cookie(state, &unknown).await["user"],
        Value::Null
    );
}

#[sqlx::test]
async fn with_the_secret_key_a_missing_user_is_created_from_the_backend_api(pool: PgPool) {
    let router = axum::Router::new().route(
        "/v1/users/{id}",
        axum::routing::get(
            |path: axum::extract::Path<String>, headers: axum::http::HeaderMap| async move {
                let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                    == Some("Bearer sk_test_knock");
                if !authorized {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({}))).into_response();
                }
                axum::Json(json!({
                    "id": path.0, "object": "user", "username": "grace", "first_name": "Grace",
                    "last_name": "Hopper", "image_url": "https://img.clerk.com/g.png",
                    "primary_email_address_id": "idn_1",
                    "email_addresses": [{ "id": "idn_1", "email_address": "grace@example.com" }],
                    "updated_at": 1_700_000_000_000_i64
                }))
                .into_response()
            },
        ),
    );
    use axum::response::IntoResponse;
    let base = serve(router).await;
    let api = knock::auth::server::ClerkApi::new(&base, "sk_test_knock".to_owned().into());
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let fetched = api
        .user("user_grace")
        .await
        .expect("the Backend API answers");
    assert_eq!(fetched.username.as_deref(), Some("grace"));
    let mut state = clerk_state(&pool);
    state.clerk_api = Some(api);

    let session = session_with_cookie(state, &clerk_token(&claims("user_grace"))).await;
    assert_eq!(session["user"]["username"], "grace");
    assert_eq!(session["user"]["last_name"], "Hopper");
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE clerk_id = 'user_grace'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(email.as_deref(), Some("grace@example.com"));
}

#[sqlx::test]
async fn an_expired_session_of_a_browser_still_signed_in_at_clerk_gets_the_refresh_page(
    pool: PgPool,
) {
    let mut state = clerk_state(&pool);
    state.clerk_publishable_key = Some("pk_test_Y2xlcmsuZXhhbXBsZS5jb20k".to_owned());
    let mut c = claims("user_x");
    c["iat"] = json!(now() - 90);
    c["nbf"] = json!(now() - 90);
    c["exp"] = json!(now() - 30);
    let token = clerk_token(&c);
    let page = |cookies: String| {
        Request::get("/")
            .header(header::ACCEPT, "text/html,application/xhtml+xml")
            .header(header::COOKIE, cookies)
            .body(Body::empty())
            .unwrap()
    };

    let reply = common::send(
        state.clone(),
        page(format!("__session={token}; __client_uat=1700000000")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("Signing you in"), "{}", reply.body);
    assert!(
        reply
            .body
            .contains("https://clerk.example.com/npm/@clerk/clerk-js@5/dist/clerk.browser.js")
    );
    assert_eq!(
        reply.headers.get(header::CACHE_CONTROL).unwrap(),
        "no-store"
    );
    assert!(
        !reply.body.contains("Sign in</a>"),
        "not rendered as signed out"
    );

    // Signed out at Clerk (`__client_uat=0`): the app itself, signed out.
    let reply = common::send(state, page(format!("__session={token}; __client_uat=0"))).await;
    assert!(!reply.body.contains("Signing you in"));
    assert!(reply.body.contains("Sign in</a>"), "{}", reply.body);
    assert!(users(&pool).await.is_empty());
}

#[sqlx::test]
async fn many_first_requests_at_once_each_get_their_own_username(
    _: sqlx::postgres::PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(40)
        .connect_with(options)
        .await
        .unwrap();
    // Forty new users sign in before any webhook: all derive "user".
    let created = futures_join(
        (0..40)
            .map(|n| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let clerk = knock::users::server::ClerkUser {
                        id: format!("user_crowd{n}"),
                        ..Default::default()
                    };
                    knock::users::server::upsert_from_clerk(&pool, &clerk).await
                })
            })
            .collect(),
    )
    .await;
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT lower(username) FROM users WHERE clerk_id LIKE 'user_crowd%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(names.len(), 40);
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[sqlx::test]
async fn an_event_stream_ends_when_its_session_token_expires(pool: PgPool) {
    let stream = |seconds: i64| {
        let mut c = claims("user_streaming");
        c["exp"] = json!(now() + seconds);
        let request = Request::get("/api/events")
            .header(header::AUTHORIZATION, format!("Bearer {}", clerk_token(&c)))
            .body(Body::empty())
            .unwrap();
        let state = clerk_state(&pool);
        async move {
            let started = std::time::Instant::now();
            let reply = tokio::time::timeout(
                std::time::Duration::from_secs(12),
                common::send(state, request),
            )
            .await;
            (reply, started.elapsed())
        }
    };
    let ((expiring, lived), (lasting, _)) = tokio::join!(stream(1), stream(60));
    let expiring = expiring.expect("the stream of an expiring token ends by itself");
    assert_eq!(expiring.status, StatusCode::OK);
    assert!(
        lived >= std::time::Duration::from_secs(4),
        "open until the token expired, with the leeway: {lived:?}"
    );
    assert!(lasting.is_err(), "a stream with a live token stays open");
}

#[sqlx::test]
async fn dev_mode_answers_only_loopback_host_names(pool: PgPool) {
    let request = |host: &str| {
        Request::post("/api/session/dev-sign-in")
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("username=ada"))
            .unwrap()
    };
    // A rebinding site's name that resolves to 127.0.0.1: refused, nobody made.
    for host in [
        "evil.example",
        "evil.example:3000",
        "127.0.0.1.evil.example:3000",
    ] {
        let reply = common::send(common::state(&pool), request(host)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{host}: {}",
            reply.body
        );
    }
    assert!(users(&pool).await.is_empty());
    for host in [
        "127.0.0.1:3000",
        "localhost:3000",
        "[::1]:3000",
        "knock.localhost",
    ] {
        let reply = common::send(common::state(&pool), request(host)).await;
        assert!(
            reply.status.is_success() || reply.status.is_redirection(),
            "{host}: {}",
            reply.status
        );
    }
    // Clerk mode has no such sign-in to protect.
    let page = Request::get("/")
        .header(header::HOST, "knock.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        common::send(clerk_state(&pool), page).await.status,
        StatusCode::OK
    );
}
