//! The HTTP surface of the foundation: `/healthz`, pages, limits, and
//! start-up refusing bad settings and failed migrations.
#![cfg(feature = "ssr")]

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use sqlx::{
    ConnectOptions, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

async fn get(pool: &PgPool, uri: &str) -> (StatusCode, String) {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    let reply = common::send(common::state(pool), request).await;
    (reply.status, reply.body)
}

#[sqlx::test]
async fn healthz_is_ok_while_the_database_answers(pool: PgPool) {
    let (status, body) = get(&pool, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"status":"ok"}"#);
}

#[sqlx::test]
async fn healthz_is_503_when_the_database_is_gone(pool: PgPool) {
    pool.close().await;
    let (status, body) = get(&pool, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, r#"{"status":"unavailable"}"#);
}

#[sqlx::test]
async fn the_home_page_has_the_sidebar_and_a_menu_button_disabled_until_hydration(pool: PgPool) {
    let (status, html) = get(&pool, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"aria-label="Conversations""#),
        "sidebar missing: {html}"
    );
    let button = html
        .split("<button")
        .nth(1)
        .expect("a button")
        .split("</button>")
        .next()
        .unwrap();
    assert!(
        button.contains("Menu") && button.contains("disabled"),
        "{button}"
    );
    assert!(
        html.contains("/pkg/knock.js"),
        "the hydration script is linked"
    );
}

#[sqlx::test]
async fn an_unknown_page_is_404(pool: PgPool) {
    let (status, html) = get(&pool, "/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(html.contains("Page not found"));
}

#[sqlx::test]
async fn a_body_over_the_limit_is_413(pool: PgPool) {
    let request = Request::post("/api/anything")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 5000)
        .body(Body::from(vec![b' '; 5000]))
        .unwrap();
    let reply = common::send(common::state(&pool), request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// Runs the real binary with `env` and returns (exit success, stderr).
fn run_knock(env: &[(&str, &str)]) -> (bool, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_knock"));
    command
        .env_remove("DATABASE_URL")
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "off");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run knock");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_malformed_setting_stops_start_up_with_one_line_naming_it() {
    let (ok, stderr) = run_knock(&[("KNOCK_REQUEST_TIMEOUT_SECS", "soon")]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("KNOCK_REQUEST_TIMEOUT_SECS"), "{stderr}");
}

#[test]
fn a_database_url_that_is_not_postgres_stops_start_up() {
    let (ok, stderr) = run_knock(&[("DATABASE_URL", "https://example.invalid/db")]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[sqlx::test(migrations = false)]
async fn a_failing_migration_stops_start_up_with_a_clear_error(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    // A type of the same name already exists, so the first migration fails.
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    sqlx::query("CREATE TYPE dm_status AS ENUM ('SOMETHING_ELSE')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let url = options.to_url_lossy().to_string();
    let (ok, stderr) = tokio::task::spawn_blocking(move || run_knock(&[("DATABASE_URL", &url)]))
        .await
        .unwrap();
    assert!(!ok, "start-up must stop");
    assert!(stderr.contains("migration failed"), "{stderr}");
    assert!(stderr.contains("dm_status"), "the cause is named: {stderr}");
}
