//! `POST /api/webhooks/clerk`: deliveries built like Clerk's and signed
//! with `svix`'s `Webhook::sign`; each test checks the answer and what the
//! database holds afterwards.
#![cfg(feature = "ssr")]

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::{Reply, WEBHOOK_SECRET};
use knock::{jobs, server::state::AppState, webhooks::worker};
use serde_json::{Value, json};
use sqlx::PgPool;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A Clerk User object as Clerk's webhooks send it.
fn clerk_user(
    id: &str,
    updated_at: i64,
    username: Option<&str>,
    first_name: Option<&str>,
    email: &str,
) -> Value {
    json!({
        "id": id,
        "object": "user",
        "username": username,
        "first_name": first_name,
        "last_name": "Lovelace",
        "image_url": "https://img.clerk.com/preview.png",
        "has_image": true,
        "primary_email_address_id": "idn_primary",
        "email_addresses": [
            { "id": "idn_other", "object": "email_address", "email_address": "other@example.com",
              "verification": { "status": "verified", "strategy": "email_code" }, "linked_to": [] },
            { "id": "idn_primary", "object": "email_address", "email_address": email,
              "verification": { "status": "verified", "strategy": "email_code" }, "linked_to": [] }
        ],
        "phone_numbers": [],
        "web3_wallets": [],
        "external_accounts": [],
        "public_metadata": {},
        "private_metadata": {},
        "unsafe_metadata": {},
        "password_enabled": true,
        "two_factor_enabled": false,
        "banned": false,
        "locked": false,
        "created_at": 1_700_000_000_000_i64,
        "updated_at": updated_at,
        "last_sign_in_at": null
    })
}

/// The envelope of every Clerk event.
fn event(kind: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "data": data,
        "object": "event",
        "type": kind,
        "timestamp": 1_700_000_000_000_i64,
        "instance_id": "ins_2Knocktest"
    }))
    .unwrap()
}

/// Signs `body` as Svix does, with `secret`, at `timestamp` (seconds).
fn signed(svix_id: &str, timestamp: i64, body: &[u8], secret: &str) -> Request<Body> {
    signed_as("svix", svix_id, timestamp, body, secret)
}

/// [`signed`], with the headers named `{prefix}-id`, `{prefix}-timestamp`
/// and `{prefix}-signature` (`svix`, or Standard Webhooks' `webhook`).
fn signed_as(prefix: &str, id: &str, timestamp: i64, body: &[u8], secret: &str) -> Request<Body> {
    let signature = svix::webhooks::Webhook::new(secret)
        .unwrap()
        .sign(id, timestamp, body)
        .unwrap();
    Request::post("/api/webhooks/clerk")
        .header("content-type", "application/json")
        .header(format!("{prefix}-id"), id)
        .header(format!("{prefix}-timestamp"), timestamp.to_string())
        .header(format!("{prefix}-signature"), signature)
        .body(Body::from(body.to_vec()))
        .unwrap()
}

async fn deliver(state: &AppState, svix_id: &str, body: &[u8]) -> Reply {
    common::send(state.clone(), signed(svix_id, now(), body, WEBHOOK_SECRET)).await
}

async fn stored_events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs every due job (webhook deliveries and the welcome emails they
/// queue), as the job worker does.
async fn process_all(pool: &PgPool) {
    while jobs::server::run_one(pool, &common::jobs()).await.unwrap() {}
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    username: String,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    image_url: Option<String>,
    deleted: bool,
}

async fn user_row(pool: &PgPool, clerk_id: &str) -> Option<Row> {
    sqlx::query_as(
        "SELECT username, email, first_name, last_name, image_url, deleted_at IS NOT NULL AS deleted
         FROM users WHERE clerk_id = $1",
    )
    .bind(clerk_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// The status, attempts and last error of the delivery's run.
async fn event_status(pool: &PgPool, svix_id: &str) -> (String, i32, Option<String>) {
    sqlx::query_as(
        "SELECT status, attempts, last_error FROM jobs WHERE kind = 'clerk_webhook' AND subject = $1",
    )
        .bind(svix_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn user_created_is_stored_before_the_answer_then_applied(pool: PgPool) {
    let state = common::state(&pool);
    let body = event(
        "user.created",
        clerk_user(
            "user_ada",
            1000,
            Some("ada"),
            Some("Ada"),
            "ada@example.com",
        ),
    );
    let reply = deliver(&state, "msg_1", &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json(), json!({ "received": true }));
    assert_eq!(
        event_status(&pool, "msg_1").await.0,
        "pending",
        "stored before the 2xx"
    );

    process_all(&pool).await;
    assert_eq!(event_status(&pool, "msg_1").await.0, "done");
    let row = user_row(&pool, "user_ada").await.expect("user row");
    assert_eq!(row.username, "ada");
    assert_eq!(
        row.email.as_deref(),
        Some("ada@example.com"),
        "the primary address, not the first"
    );
    assert_eq!(row.first_name.as_deref(), Some("Ada"));
    assert_eq!(row.last_name.as_deref(), Some("Lovelace"));
    assert_eq!(
        row.image_url.as_deref(),
        Some("https://img.clerk.com/preview.png")
    );
}

#[sqlx::test]
async fn user_updated_changes_the_profile(pool: PgPool) {
    let state = common::state(&pool);
    deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user(
                "user_ada",
                1000,
                Some("ada"),
                Some("Ada"),
                "ada@example.com",
            ),
        ),
    )
    .await;
    deliver(
        &state,
        "msg_2",
        &event(
            "user.updated",
            clerk_user(
                "user_ada",
                2000,
                Some("countess"),
                Some("Augusta"),
                "augusta@example.com",
            ),
        ),
    )
    .await;
    process_all(&pool).await;
    let row = user_row(&pool, "user_ada").await.unwrap();
    assert_eq!(
        (row.username.as_str(), row.first_name.as_deref()),
        ("countess", Some("Augusta"))
    );
    assert_eq!(row.email.as_deref(), Some("augusta@example.com"));
}

#[sqlx::test]
async fn user_deleted_tombstones_and_scrubs_the_profile(pool: PgPool) {
    let state = common::state(&pool);
    deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user(
                "user_ada",
                1000,
                Some("ada"),
                Some("Ada"),
                "ada@example.com",
            ),
        ),
    )
    .await;
    process_all(&pool).await;
    let reply = deliver(
        &state,
        "msg_2",
        &event(
            "user.deleted",
            json!({ "id": "user_ada", "object": "user", "deleted": true }),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    process_all(&pool).await;
    let row = user_row(&pool, "user_ada").await.expect("the row stays");
    assert!(row.deleted);
    assert_eq!(
        (row.email, row.first_name, row.last_name, row.image_url),
        (None, None, None, None)
    );
    assert_ne!(row.username, "ada", "the username is released");
}

#[sqlx::test]
async fn the_same_svix_id_twice_is_acknowledged_and_applied_once(pool: PgPool) {
    let state = common::state(&pool);
    let body = event(
        "user.created",
        clerk_user(
            "user_ada",
            1000,
            Some("ada"),
            Some("Ada"),
            "ada@example.com",
        ),
    );
    assert_eq!(deliver(&state, "msg_1", &body).await.status, StatusCode::OK);
    process_all(&pool).await;
    assert_eq!(deliver(&state, "msg_1", &body).await.status, StatusCode::OK);
    assert_eq!(stored_events(&pool).await, 1);
    let (status, attempts, _) = event_status(&pool, "msg_1").await;
    assert_eq!(
        (status.as_str(), attempts),
        ("done", 1),
        "the repeat changed nothing"
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[sqlx::test]
async fn user_updated_before_user_created_keeps_the_newer_data(pool: PgPool) {
    let state = common::state(&pool);
    deliver(
        &state,
        "msg_2",
        &event(
            "user.updated",
            clerk_user(
                "user_ada",
                2000,
                Some("countess"),
                Some("Augusta"),
                "new@example.com",
            ),
        ),
    )
    .await;
    process_all(&pool).await;
    deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user(
                "user_ada",
                1000,
                Some("ada"),
                Some("Ada"),
                "old@example.com",
            ),
        ),
    )
    .await;
    process_all(&pool).await;
    let row = user_row(&pool, "user_ada").await.unwrap();
    assert_eq!(row.username, "countess");
    assert_eq!(row.email.as_deref(), Some("new@example.com"));
    assert_eq!(
        event_status(&pool, "msg_1").await.0,
        "done",
        "the stale event is processed, not failed"
    );
}

#[sqlx::test]
async fn user_created_after_user_deleted_does_not_revive_the_user(pool: PgPool) {
    let state = common::state(&pool);
    deliver(
        &state,
        "msg_2",
        &event(
            "user.deleted",
            json!({ "id": "user_ada", "object": "user", "deleted": true }),
        ),
    )
    .await;
    process_all(&pool).await;
    deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user(
                "user_ada",
                1000,
                Some("ada"),
                Some("Ada"),
                "ada@example.com",
            ),
        ),
    )
    .await;
    process_all(&pool).await;
    let row = user_row(&pool, "user_ada").await.expect("a tombstone row");
    assert!(row.deleted);
    assert_eq!(row.email, None);
}

#[sqlx::test]
async fn a_tampered_body_is_400_and_nothing_is_stored(pool: PgPool) {
    let state = common::state(&pool);
    let body = event(
        "user.created",
        clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
    );
    let mut request = signed("msg_1", now(), &body, WEBHOOK_SECRET);
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("ada@example.com", "eve@example.com");
    *request.body_mut() = Body::from(tampered);
    let reply = common::send(state, request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], "bad_signature");
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn a_signature_made_with_another_secret_is_400(pool: PgPool) {
    let body = event(
        "user.created",
        clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
    );
    let request = signed(
        "msg_1",
        now(),
        &body,
        "whsec_c29tZSBvdGhlciBzZWNyZXQgYWx0b2dldGhlcg==",
    );
    let reply = common::send(common::state(&pool), request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn timestamps_six_minutes_old_or_ahead_are_400(pool: PgPool) {
    let body = event(
        "user.created",
        clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
    );
    for (id, timestamp) in [("msg_old", now() - 360), ("msg_ahead", now() + 360)] {
        let reply = common::send(
            common::state(&pool),
            signed(id, timestamp, &body, WEBHOOK_SECRET),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{id}");
    }
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn each_missing_svix_header_is_400(pool: PgPool) {
    let body = event(
        "user.created",
        clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
    );
    for header in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut request = signed("msg_1", now(), &body, WEBHOOK_SECRET);
        request.headers_mut().remove(header);
        let reply = common::send(common::state(&pool), request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "without {header}");
    }
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn a_signed_body_that_is_not_json_is_400(pool: PgPool) {
    let reply = deliver(
        &common::state(&pool),
        "msg_1",
        b"{\"type\": \"user.created\", ",
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], "malformed_json");
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn user_deleted_without_data_id_is_400(pool: PgPool) {
    let reply = deliver(
        &common::state(&pool),
        "msg_1",
        &event("user.deleted", json!({ "object": "user", "deleted": true })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn an_oversize_body_is_413(pool: PgPool) {
    let huge = "x".repeat(knock::webhooks::MAX_BODY_BYTES + 1);
    let body = event("user.created", json!({ "id": "user_ada", "padding": huge }));
    let reply = deliver(&common::state(&pool), "msg_1", &body).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn an_unknown_event_type_is_stored_acknowledged_and_ignored(pool: PgPool) {
    let state = common::state(&pool);
    let reply = deliver(
        &state,
        "msg_1",
        &event("session.created", json!({ "id": "sess_1" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    process_all(&pool).await;
    assert_eq!(event_status(&pool, "msg_1").await.0, "done");
    let outcome: String = sqlx::query_scalar(
        "SELECT steps -> 'apply' ->> 'outcome' FROM jobs WHERE subject = 'msg_1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(outcome, "ignored: Knock does not use session.created");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[sqlx::test]
async fn without_a_signing_secret_the_endpoint_is_503(pool: PgPool) {
    let mut state = common::state(&pool);
    state.webhook = None;
    let body = event(
        "user.created",
        clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
    );
    let reply = common::send(state, signed("msg_1", now(), &body, WEBHOOK_SECRET)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stored_events(&pool).await, 0);
}

#[sqlx::test]
async fn a_failed_event_stays_visible_and_a_retry_applies_it(pool: PgPool) {
    let state = common::state(&pool);
    // The database refuses new users for a while.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'users are read-only'; END $$;
         CREATE TRIGGER refuse BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .execute(&pool)
    .await
    .unwrap();
    deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
        ),
    )
    .await;
    process_all(&pool).await;
    let (status, attempts, error) = event_status(&pool, "msg_1").await;
    assert_eq!((status.as_str(), attempts), ("retrying", 1));
    assert!(error.unwrap_or_default().contains("users are read-only"));
    let failed = worker::failed(&pool).await.unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|e| e.svix_id.as_str())
            .collect::<Vec<_>>(),
        ["msg_1"]
    );
    assert!(
        !jobs::server::run_one(&pool, &common::jobs()).await.unwrap(),
        "the retry waits for its backoff"
    );

    sqlx::query("DROP TRIGGER refuse ON users")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(worker::retry_now(&pool, Some("msg_1")).await.unwrap(), 1);
    process_all(&pool).await;
    let (status, attempts, error) = event_status(&pool, "msg_1").await;
    assert_eq!((status.as_str(), attempts, error), ("done", 2, None));
    assert!(user_row(&pool, "user_ada").await.is_some());
    assert!(worker::failed(&pool).await.unwrap().is_empty());
}

#[sqlx::test]
async fn usernames_are_derived_and_clashes_get_a_numeric_suffix(pool: PgPool) {
    let state = common::state(&pool);
    // No username: the first name; then the email's local part; then `user`.
    deliver(
        &state,
        "m1",
        &event(
            "user.created",
            clerk_user("user_1", 1000, None, Some("Ada"), "a1@example.com"),
        ),
    )
    .await;
    deliver(
        &state,
        "m2",
        &event(
            "user.created",
            clerk_user("user_2", 1000, None, Some("ADA"), "a2@example.com"),
        ),
    )
    .await;
    deliver(
        &state,
        "m3",
        &event(
            "user.created",
            clerk_user("user_3", 1000, None, None, "Grace.Hopper@example.com"),
        ),
    )
    .await;
    deliver(
        &state,
        "m4",
        &event(
            "user.created",
            clerk_user("user_4", 1000, None, Some("  "), "!!!@example.com"),
        ),
    )
    .await;
    // A later Clerk username that another user already holds.
    deliver(
        &state,
        "m5",
        &event(
            "user.created",
            clerk_user("user_5", 1000, Some("Ada"), None, "a5@example.com"),
        ),
    )
    .await;
    process_all(&pool).await;
    let names: Vec<String> =
        futures_names(&pool, &["user_1", "user_2", "user_3", "user_4", "user_5"]).await;
    assert_eq!(names, ["ada", "ada2", "gracehopper", "user", "ada3"]);

    // The same data again resolves the same way.
    deliver(
        &state,
        "m6",
        &event(
            "user.updated",
            clerk_user("user_5", 2000, Some("Ada"), None, "a5@example.com"),
        ),
    )
    .await;
    process_all(&pool).await;
    assert_eq!(user_row(&pool, "user_5").await.unwrap().username, "ada3");
}

async fn futures_names(pool: &PgPool, ids: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for id in ids {
        names.push(user_row(pool, id).await.unwrap().username);
    }
    names
}

#[sqlx::test]
async fn deliveries_signed_with_webhook_id_headers_are_keyed_by_that_id(pool: PgPool) {
    let state = common::state(&pool);
    let ada = event(
        "user.created",
        json!({ "id": "user_ada", "username": "ada" }),
    );
    let bob = event(
        "user.created",
        json!({ "id": "user_bob", "username": "bob" }),
    );
    for (id, body) in [("msg_ada", &ada), ("msg_bob", &bob), ("msg_ada", &ada)] {
        let reply = common::send(
            state.clone(),
            signed_as("webhook", id, now(), body, WEBHOOK_SECRET),
        )
        .await;
        assert!(
            reply.status.is_success(),
            "{id}: {} {}",
            reply.status,
            reply.body
        );
    }
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM webhook_events ORDER BY svix_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        ids,
        ["msg_ada", "msg_bob"],
        "two deliveries, the repeat stored once"
    );
}

/// How many rows of any table of the schema mention `needle` anywhere.
async fn rows_mentioning(pool: &PgPool, needle: &str) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "webhook_events"), "{tables:?}");
    let mut found = Vec::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{table}\" t WHERE strpos(lower(t::text), lower($1)) > 0"
        ))
        .bind(needle)
        .fetch_one(pool)
        .await
        .unwrap();
        if n > 0 {
            found.push((table, n));
        }
    }
    found
}

#[sqlx::test]
async fn user_deleted_leaves_no_personal_data_in_any_table(pool: PgPool) {
    let state = common::state(&pool);
    let mut ada = clerk_user(
        "user_ada",
        1000,
        Some("ada"),
        Some("Augusta"),
        "ada.byron@example.com",
    );
    ada["image_url"] = json!("https://img.example/ada-portrait.png");
    deliver(&state, "msg_1", &event("user.created", ada.clone())).await;
    ada["updated_at"] = json!(2000);
    deliver(&state, "msg_2", &event("user.updated", ada)).await;
    process_all(&pool).await;
    // Bob and Ada talk, so the event log shows Ada to Bob.
    let bob = common::person(&pool, "bob").await;
    let ada_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE clerk_id = 'user_ada'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let dm = common::call(
        &state,
        Some(&bob),
        "dm/invite",
        json!({ "other_user_id": ada_id }),
    )
    .await;
    assert_eq!(dm.status, StatusCode::OK);
    let personal = [
        "ada.byron@example.com",
        "Augusta",
        "Lovelace",
        "img.example/ada-portrait",
    ];
    for needle in personal {
        assert!(
            !rows_mentioning(&pool, needle).await.is_empty(),
            "{needle} is stored before the deletion"
        );
    }

    deliver(
        &state,
        "msg_3",
        &event(
            "user.deleted",
            json!({ "id": "user_ada", "object": "user", "deleted": true }),
        ),
    )
    .await;
    process_all(&pool).await;
    for needle in personal {
        assert_eq!(rows_mentioning(&pool, needle).await, [], "{needle}");
    }
    // A delivery repeated after the deletion is still recognised.
    let repeat = deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user("user_ada", 1000, None, None, "x@example.com"),
        ),
    )
    .await;
    assert_eq!(repeat.status, StatusCode::OK);
    assert_eq!(rows_mentioning(&pool, "x@example.com").await, []);
}

#[sqlx::test]
async fn nobody_can_take_a_tombstone_username_ahead_of_time(pool: PgPool) {
    let state = common::state(&pool);
    // md5("user_ada"): the name Ada's tombstone will take.
    let tombstone: String = sqlx::query_scalar("SELECT 'deleted-' || md5('user_ada')")
        .fetch_one(&pool)
        .await
        .unwrap();
    deliver(
        &state,
        "msg_1",
        &event(
            "user.created",
            clerk_user(
                "user_mallory",
                1000,
                Some(&tombstone),
                None,
                "m@example.com",
            ),
        ),
    )
    .await;
    deliver(
        &state,
        "msg_2",
        &event(
            "user.created",
            clerk_user("user_ada", 1000, Some("ada"), None, "ada@example.com"),
        ),
    )
    .await;
    process_all(&pool).await;
    let mallory = user_row(&pool, "user_mallory").await.unwrap();
    assert!(
        !mallory.username.starts_with("deleted-"),
        "{}",
        mallory.username
    );
    deliver(
        &state,
        "msg_3",
        &event(
            "user.deleted",
            json!({ "id": "user_ada", "object": "user", "deleted": true }),
        ),
    )
    .await;
    process_all(&pool).await;
    let ada = user_row(&pool, "user_ada").await.unwrap();
    assert!(ada.deleted, "the deletion went through");
    assert_eq!(ada.username, tombstone);
    // Nor can anyone rename into it directly.
    let direct =
        sqlx::query("UPDATE users SET username = 'deleted-x' WHERE clerk_id = 'user_mallory'")
            .execute(&pool)
            .await
            .expect_err("the schema refuses a live tombstone name");
    assert_eq!(
        direct.as_database_error().and_then(|e| e.constraint()),
        Some("users_live_username_not_tombstone")
    );
}

#[sqlx::test]
async fn processed_deliveries_are_pruned_after_the_retention_and_failed_ones_stay(pool: PgPool) {
    sqlx::raw_sql(
        "INSERT INTO webhook_events (svix_id, event_type, payload, processed_at)
         SELECT 'old_' || n, 'user.updated', '{}'::jsonb, now() - interval '8 days'
           FROM generate_series(1, 2500) n
         UNION ALL SELECT 'recent', 'user.updated', '{}', now() - interval '6 days'
         UNION ALL SELECT 'failed', 'user.updated', '{}', NULL;
         INSERT INTO jobs (kind, subject, status, max_attempts, finished_at, last_error)
         SELECT 'clerk_webhook', svix_id,
                CASE WHEN processed_at IS NULL THEN 'failed' ELSE 'done' END, 14,
                COALESCE(processed_at, now() - interval '8 days'),
                CASE WHEN processed_at IS NULL THEN 'boom' END
           FROM webhook_events;
         INSERT INTO jobs (kind, subject, status, max_attempts, finished_at)
         VALUES ('welcome_email', gen_random_uuid()::text, 'done', 8, now() - interval '30 days');",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(worker::prune(&pool, 7).await.unwrap(), 2500);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM webhook_events ORDER BY svix_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, ["failed", "recent"]);
    let runs: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, subject FROM jobs WHERE kind = 'clerk_webhook' ORDER BY subject",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        runs.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["failed", "recent"],
        "the runs of pruned deliveries go too"
    );
    let welcomes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'welcome_email'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        welcomes, 1,
        "a welcome email's run stays: it keeps the email once per user"
    );
}
