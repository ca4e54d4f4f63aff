//! Helpers shared by the integration tests: the app's state on a test
//! database, requests through the real router, and Clerk-shaped fixtures.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use figment::providers::Serialized;
use http_body_util::BodyExt;
use knock::{
    auth::server::SessionKeys,
    server::{config::Settings, startup::router, state::AppState, tasks::BackgroundTasks},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

/// The webhook signing secret the tests sign with (`whsec_` + base64).
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Settings for tests: defaults with a 128 KiB body limit, and a data
/// directory of this test process's own (where the email outbox is).
pub fn settings() -> Settings {
    Settings::from_figment(
        Settings::defaults()
            .merge(Serialized::default("knock.body_limit_bytes", 128 * 1024))
            .merge(Serialized::default("knock.data_dir", data_dir())),
    )
    .expect("test settings")
}

/// This test process's data directory, removed by nobody (it is under the
/// system's temporary directory).
pub fn data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("knock-tests-{}", std::process::id()))
}

/// The jobs' context as the test settings make it: email to the outbox in
/// [`data_dir`].
pub fn jobs() -> Arc<knock::jobs::server::Jobs> {
    static JOBS: OnceLock<Arc<knock::jobs::server::Jobs>> = OnceLock::new();
    JOBS.get_or_init(|| {
        Arc::new(knock::jobs::server::Jobs::new(
            settings().knock.mailer().expect("the outbox mailer"),
        ))
    })
    .clone()
}

/// Dev-mode keys, made once per test binary.
pub fn dev_keys() -> Arc<SessionKeys> {
    static KEYS: OnceLock<Arc<SessionKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = SessionKeys::dev_blocking(&dir.path().join("key.pem")).expect("dev keys");
        Arc::new(keys)
    })
    .clone()
}

/// The app's state on `pool`, in dev mode, with the test webhook secret.
pub fn state(pool: &PgPool) -> AppState {
    state_with(pool, dev_keys())
}

/// The app's state on `pool` with the given session keys, built as the
/// server builds it (without the webhook worker and the other background
/// work, which tests start themselves where they need it).
pub fn state_with(pool: &PgPool, auth: Arc<SessionKeys>) -> AppState {
    AppState::new(
        &settings(),
        pool.clone(),
        auth,
        Some(Arc::new(
            svix::webhooks::Webhook::new(WEBHOOK_SECRET).unwrap(),
        )),
        None,
        &BackgroundTasks::default(),
    )
}

/// A response as the tests read it.
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    /// The body as text (lossy for binary bodies; see `bytes`).
    pub body: String,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `request` through the whole router (all layers) for `state`.
pub async fn send(state: AppState, request: Request<Body>) -> Reply {
    let settings = settings();
    let response = router(state, &settings.knock)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body.to_vec(),
    }
}

/// A signed-in test user: Knock id and dev session token.
#[derive(Clone)]
pub struct Person {
    pub id: knock::ids::UserId,
    pub token: String,
}

/// Creates the user `name` (Clerk id `user_{name}`, address
/// `{name}@example.com`) through the user sync.
pub async fn person(pool: &PgPool, name: &str) -> Person {
    use knock::users::server::{ClerkEmailAddress, ClerkUser, upsert_from_clerk};
    let clerk_id = format!("user_{name}");
    let user = ClerkUser {
        id: clerk_id.clone(),
        username: Some(name.into()),
        primary_email_address_id: Some("idn_1".into()),
        email_addresses: vec![ClerkEmailAddress {
            id: "idn_1".into(),
            email_address: format!("{name}@example.com"),
        }],
        updated_at: 1,
        ..Default::default()
    };
    let id = upsert_from_clerk(pool, &user).await.unwrap().user_id();
    Person {
        id,
        token: dev_keys().mint_dev_token(&clerk_id).unwrap(),
    }
}

/// `POST /api/{endpoint}` with a JSON body, as `who` (or signed out).
pub async fn call(
    state: &AppState,
    who: Option<&Person>,
    endpoint: &str,
    body: serde_json::Value,
) -> Reply {
    let mut request = Request::post(format!("/api/{endpoint}"))
        .header(axum::http::header::CONTENT_TYPE, "application/json");
    if let Some(who) = who {
        request = request.header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", who.token),
        );
    }
    send(
        state.clone(),
        request.body(Body::from(body.to_string())).unwrap(),
    )
    .await
}

/// `inviter` invites `invitee`, who accepts; returns the DM's id.
pub async fn accepted_dm(state: &AppState, inviter: &Person, invitee: &Person) -> Value {
    let dm = call(
        state,
        Some(inviter),
        "dm/invite",
        json!({ "other_user_id": invitee.id }),
    )
    .await
    .json();
    call(
        state,
        Some(invitee),
        "dm/accept",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    dm["id"].clone()
}

/// Ada and Bob with an ACTIVE DM; returns its id.
pub async fn active(pool: &PgPool) -> (AppState, Person, Person, Value) {
    let state = state(pool);
    let (ada, bob) = (person(pool, "ada").await, person(pool, "bob").await);
    let dm = accepted_dm(&state, &ada, &bob).await;
    (state, ada, bob, dm)
}

/// `POST /api/messages/send` as `who`.
pub async fn send_message(
    state: &AppState,
    who: &Person,
    dm: &Value,
    body: &str,
    client_id: Uuid,
) -> Reply {
    call(
        state,
        Some(who),
        "messages/send",
        json!({ "dm_id": dm, "body": body, "client_id": client_id }),
    )
    .await
}
