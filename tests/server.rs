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

/// Each request goes through a router of its own, so routers are built
/// while other pages are half-rendered (as when two instances share a
/// process): every page still arrives whole.
#[sqlx::test]
async fn pages_render_while_other_routers_are_built(pool: PgPool) {
    let rounds = (0..4).map(|task| {
        let pool = pool.clone();
        tokio::spawn(async move {
            for round in 0..25 {
                let (uri, expected, text) = if task % 2 == 0 {
                    (
                        "/",
                        StatusCode::OK,
                        "Every conversation starts with a knock",
                    )
                } else {
                    ("/no/such/page", StatusCode::NOT_FOUND, "Page not found")
                };
                let wait = std::time::Duration::from_secs(10);
                let (status, html) = tokio::time::timeout(wait, get(&pool, uri))
                    .await
                    .unwrap_or_else(|_| panic!("{uri} (task {task}, round {round}) never arrived"));
                assert_eq!(status, expected, "{uri}");
                assert!(
                    html.contains(text) && html.contains("</html>"),
                    "{uri}: {html}"
                );
            }
        })
    });
    for round in rounds.collect::<Vec<_>>() {
        round.await.unwrap();
    }
}

#[sqlx::test]
async fn a_body_over_the_limit_is_413(pool: PgPool) {
    let request = Request::post("/api/anything")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, 200_000)
        .body(Body::from(vec![b' '; 200_000]))
        .unwrap();
    let reply = common::send(common::state(&pool), request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
}

/// Runs the real binary with `args` and `env`: (exit success, stdout, stderr).
fn knock(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_knock"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "off");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run knock");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts the server binary with `env`: (exit success, stderr).
fn run_knock(env: &[(&str, &str)]) -> (bool, String) {
    let (ok, _, stderr) = knock(&[], env);
    (ok, stderr)
}

#[sqlx::test]
async fn the_operator_lists_failed_webhook_events_and_makes_them_due(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO webhook_events (svix_id, event_type, payload)
         VALUES ('msg_bad', 'user.created', '{}'), ('msg_ok', 'user.created', '{}');
         INSERT INTO jobs (kind, subject, status, attempts, max_attempts, last_error, run_at, finished_at)
         VALUES ('clerk_webhook', 'msg_bad', 'retrying', 3, 14, 'bad user object', now() + interval '1 hour', NULL),
                ('clerk_webhook', 'msg_ok', 'done', 1, 14, NULL, now(), now()),
                ('welcome_email', gen_random_uuid()::text, 'failed', 1, 8, 'refused for good: 550', now(), now());",
    )
    .execute(&pool)
    .await
    .unwrap();
    let url = options.to_url_lossy().to_string();
    let env = [("DATABASE_URL", url.as_str())];

    let (ok, stdout, stderr) = knock(&["webhooks", "failed"], &env);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("msg_bad") && stdout.contains("bad user object"),
        "{stdout}"
    );
    assert!(!stdout.contains("msg_ok"), "{stdout}");

    let (ok, stdout, stderr) = knock(&["webhooks", "retry", "msg_bad"], &env);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("1 event(s)"), "{stdout}");
    let due: bool =
        sqlx::query_scalar("SELECT run_at <= now() FROM jobs WHERE subject = 'msg_bad'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(due);

    // `knock jobs` sees every kind.
    let (ok, stdout, stderr) = knock(&["jobs", "failed"], &env);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("welcome_email") && stdout.contains("refused for good: 550"),
        "{stdout}"
    );
    assert!(stdout.contains("2 failed run(s)"), "{stdout}");
    let (ok, stdout, stderr) = knock(&["jobs", "retry"], &env);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("2 run(s)"), "{stdout}");
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'failed'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failed, 0);

    let (ok, _, stderr) = knock(&["webhooks", "explode"], &env);
    assert!(!ok && stderr.starts_with("usage:"), "{stderr}");
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

#[sqlx::test]
async fn an_identicon_is_a_png_made_from_the_id_alone(pool: PgPool) {
    let fetch = |uri: String| {
        let pool = pool.clone();
        async move {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            common::send(common::state(&pool), request).await
        }
    };
    let id = uuid::Uuid::new_v4();
    let first = fetch(format!("/api/avatars/{id}")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.headers[header::CONTENT_TYPE], "image/png");
    assert!(
        first.headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(first.body.starts_with("\u{FFFD}PNG"), "a PNG signature");
    let again = fetch(format!("/api/avatars/{id}")).await;
    assert_eq!(again.body, first.body, "the same id, the same picture");
    let other = fetch(format!("/api/avatars/{}", uuid::Uuid::new_v4())).await;
    assert_ne!(other.body, first.body);
    let bad = fetch("/api/avatars/not-a-uuid".into()).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn malformed_arguments_are_400_with_the_json_error_and_change_nothing(pool: PgPool) {
    let state = common::state(&pool);
    let ada = common::person(&pool, "ada").await;
    let bob = common::person(&pool, "bob").await;
    let cases = [
        ("dm/invite", "not json".to_owned()),
        ("dm/invite", r#"{"other_user_id": 5}"#.to_owned()),
        ("dm/invite", "{}".to_owned()),
        ("dm/invite", format!(r#"{{"other_user_id": "{}""#, bob.id)),
        (
            "messages/send",
            r#"{"dm_id": [], "body": {}, "client_id": null}"#.to_owned(),
        ),
        (
            "messages/list",
            r#"{"dm_id": "x", "limit": -1e400}"#.to_owned(),
        ),
    ];
    for (endpoint, body) in cases {
        let request = Request::post(format!("/api/{endpoint}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = common::send(state.clone(), request).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{endpoint} {body}: {}",
            reply.body
        );
        assert_eq!(
            reply.json()["error"]["code"],
            "bad_request",
            "{endpoint} {body}"
        );
    }
    let dms: i64 = sqlx::query_scalar("SELECT count(*) FROM dms")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dms, 0, "nothing was created");
}

#[sqlx::test]
async fn an_unknown_path_under_api_is_a_json_404(pool: PgPool) {
    for (method, uri) in [
        ("GET", "/api/nope"),
        ("POST", "/api/dm/nope"),
        ("GET", "/api/"),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let reply = common::send(common::state(&pool), request).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(reply.json()["error"]["code"], "not_found", "{method} {uri}");
    }
}

#[sqlx::test]
async fn pages_forbid_sniffing_framing_and_cross_site_referrers(pool: PgPool) {
    for uri in [
        "/",
        "/sign-in",
        "/chat/00000000-0000-0000-0000-000000000001",
    ] {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let reply = common::send(common::state(&pool), request).await;
        let h = |name: header::HeaderName| {
            reply
                .headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{uri}");
        assert_eq!(
            h(header::CONTENT_SECURITY_POLICY),
            "frame-ancestors 'none'",
            "{uri}"
        );
        assert_eq!(h(header::X_FRAME_OPTIONS), "DENY", "{uri}");
        assert_eq!(h(header::REFERRER_POLICY), "same-origin", "{uri}");
    }
}

/// A real server on `options`' database with the given `[knock]` settings,
/// its address, and the sender that stops it.
async fn serving(
    options: &PgConnectOptions,
    data_dir: &std::path::Path,
    knock: &[(&str, serde_json::Value)],
) -> (String, tokio::sync::oneshot::Sender<()>) {
    use figment::providers::Serialized;
    use knock::server::{config::Settings, startup::Application};
    let mut figment = Settings::defaults()
        .merge(Serialized::default(
            "knock.database_url",
            options.to_url_lossy().to_string(),
        ))
        .merge(Serialized::default("knock.data_dir", data_dir))
        .merge(Serialized::default("leptos.site-addr", "127.0.0.1:0"));
    for (key, value) in knock {
        figment = figment.merge(Serialized::default(&format!("knock.{key}"), value));
    }
    let settings = Settings::from_figment(figment).unwrap();
    let app = Application::build(settings).await.expect("start");
    let addr = app.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// The connection settings: header-read timeout (s) and connection bound.
fn limits(
    header_read_timeout_secs: u64,
    max_connections: usize,
) -> [(&'static str, serde_json::Value); 2] {
    [
        (
            "header_read_timeout_secs",
            serde_json::json!(header_read_timeout_secs),
        ),
        ("max_connections", serde_json::json!(max_connections)),
    ]
}

/// `GET /healthz` on a fresh connection: the status line.
async fn healthz_over_tcp(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads until the server closes `tcp` (end of stream or reset), discarding
/// whatever it sent.
async fn until_closed(tcp: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

#[sqlx::test]
async fn request_heads_that_never_finish_are_closed_while_healthz_answers(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = serving(&options, dir.path(), &limits(2, 1000)).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        slow.push(tcp);
    }
    // A slowloris trickles a header line now and then to look alive.
    for tcp in &mut slow {
        let _ = tcp.write_all(b"X-Slow: 1\r\n").await;
    }
    assert_eq!(healthz_over_tcp(&addr).await, "HTTP/1.1 200 OK");
    let closed = tokio::time::timeout(std::time::Duration::from_secs(45), async {
        for tcp in &mut slow {
            until_closed(tcp).await;
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "some never-ending request heads stayed open"
    );
    assert_eq!(healthz_over_tcp(&addr).await, "HTTP/1.1 200 OK");
}

#[sqlx::test]
async fn an_idle_keep_alive_connection_is_closed(_: PgPoolOptions, options: PgConnectOptions) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = serving(&options, dir.path(), &limits(1, 1000)).await;
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    // The response keeps the connection open; with no next request the
    // server closes it.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(30), until_closed(&mut tcp));
    assert!(closed.await.is_ok(), "the idle connection stayed open");
}

#[sqlx::test]
async fn past_the_connection_bound_a_new_connection_waits_for_one_to_close(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = serving(&options, dir.path(), &limits(2, 1)).await;
    // A plain socket, read without tokio: its state is the kernel's, not
    // what a task has been scheduled to notice.
    let mut idle = std::net::TcpStream::connect(&addr).unwrap();
    idle.set_nonblocking(true).unwrap();
    // Give the server time to take the idle connection's only slot.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(healthz_over_tcp(&addr).await, "HTTP/1.1 200 OK");
    let closed = match std::io::Read::read(&mut idle, &mut [0u8; 16]) {
        Ok(0) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        Ok(_) => panic!("the idle connection got bytes it did not ask for"),
    };
    assert!(
        closed,
        "the second connection was served while the first held the only slot"
    );
}

#[sqlx::test]
async fn a_statement_past_the_timeout_is_cancelled_and_the_request_gets_503(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = serving(
        &options,
        dir.path(),
        &[("statement_timeout_secs", serde_json::json!(1))],
    )
    .await;
    let keys =
        knock::auth::server::SessionKeys::dev_blocking(&dir.path().join("dev-session-key.pem"))
            .unwrap();
    let user = knock::users::server::ClerkUser {
        id: "user_ada".into(),
        username: Some("ada".into()),
        updated_at: 1,
        ..Default::default()
    };
    knock::users::server::upsert_from_clerk(&pool, &user)
        .await
        .unwrap();
    let token = keys.mint_dev_token("user_ada").unwrap();
    let list = || {
        reqwest::Client::new()
            .post(format!("http://{addr}/api/users/list"))
            .bearer_auth(&token)
            .json(&serde_json::json!({}))
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);
    // Something else holds the users table: the server's statement waits
    // for a second, then Postgres cancels it.
    let mut held = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *held)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let reply = list().await.unwrap();
    assert_eq!(reply.status(), 503);
    let body: serde_json::Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    held.rollback().await.unwrap();
    assert_eq!(list().await.unwrap().status(), 200);
}

/// What a field of an endpoint holds, for [`every_endpoint_answers_malformed_payloads_with_a_4xx`].
#[derive(Clone, Copy)]
enum Field {
    Uuid,
    Text,
    Number,
}

/// One argument of an endpoint: its name, its kind and a valid value (JSON).
type Arg = (&'static str, Field, String);

/// Values that are wrong for a field of kind `field`, as JSON text.
fn wrong_values(field: Field) -> Vec<String> {
    let mut values = vec![
        "true".to_owned(),
        "[]".to_owned(),
        "{}".to_owned(),
        r#""\u0000""#.to_owned(),
        // A lone surrogate: not a Unicode scalar value.
        r#""\ud800""#.to_owned(),
        format!("\"{}\"", "a".repeat(1_000_000)),
    ];
    match field {
        Field::Uuid => values.extend(["123", r#""not-a-uuid""#, r#""""#].map(str::to_owned)),
        Field::Text => values.extend(["123", "-1e400"].map(str::to_owned)),
        Field::Number => values.extend(
            [
                "-1",
                "1.5",
                "1e400",
                "99999999999999999999",
                "-9223372036854775809",
                r#""12""#,
            ]
            .map(str::to_owned),
        ),
    }
    values
}

#[sqlx::test]
async fn every_endpoint_answers_malformed_payloads_with_a_4xx(pool: PgPool) {
    let state = common::state(&pool);
    let ada = common::person(&pool, "ada").await;
    let bob = common::person(&pool, "bob").await;
    let dm = common::call(
        &state,
        Some(&ada),
        "dm/invite",
        serde_json::json!({ "other_user_id": bob.id }),
    )
    .await
    .json()["id"]
        .clone();
    common::call(
        &state,
        Some(&bob),
        "dm/accept",
        serde_json::json!({ "dm_id": dm }),
    )
    .await;
    let message = common::call(
        &state,
        Some(&ada),
        "messages/send",
        serde_json::json!({ "dm_id": dm, "body": "hi", "client_id": uuid::Uuid::new_v4() }),
    )
    .await
    .json()["id"]
        .clone();
    let (dm, bob_id, message) = (
        dm.to_string(),
        format!("\"{}\"", bob.id),
        message.to_string(),
    );
    let client_id = format!("\"{}\"", uuid::Uuid::new_v4());
    // Every JSON endpoint of DESIGN §6 that exists, with valid arguments.
    let endpoints: Vec<(&str, Vec<Arg>)> = vec![
        ("users/list", vec![("query", Field::Text, "\"a\"".into())]),
        ("users/get", vec![("user_id", Field::Uuid, bob_id.clone())]),
        (
            "dm/get",
            vec![("other_user_id", Field::Uuid, bob_id.clone())],
        ),
        (
            "dm/invite",
            vec![
                ("other_user_id", Field::Uuid, bob_id.clone()),
                ("note", Field::Text, "\"hello\"".into()),
            ],
        ),
        ("users/blocked", vec![]),
        ("dm/accept", vec![("dm_id", Field::Uuid, dm.clone())]),
        ("dm/decline", vec![("dm_id", Field::Uuid, dm.clone())]),
        ("dm/list", vec![]),
        (
            "users/block",
            vec![("user_id", Field::Uuid, bob_id.clone())],
        ),
        (
            "users/unblock",
            vec![("user_id", Field::Uuid, bob_id.clone())],
        ),
        (
            "messages/send",
            vec![
                ("dm_id", Field::Uuid, dm.clone()),
                ("body", Field::Text, "\"hello\"".into()),
                ("client_id", Field::Uuid, client_id.clone()),
            ],
        ),
        (
            "messages/list",
            vec![
                ("dm_id", Field::Uuid, dm.clone()),
                ("before_seq", Field::Number, "5".into()),
                ("after_seq", Field::Number, "0".into()),
                ("limit", Field::Number, "10".into()),
            ],
        ),
        (
            "messages/read",
            vec![
                ("dm_id", Field::Uuid, dm.clone()),
                ("seq", Field::Number, "1".into()),
            ],
        ),
        (
            "messages/edit",
            vec![
                ("message_id", Field::Uuid, message.clone()),
                ("body", Field::Text, "\"edited\"".into()),
            ],
        ),
        (
            "messages/delete",
            vec![("message_id", Field::Uuid, message.clone())],
        ),
        (
            "messages/react",
            vec![
                ("message_id", Field::Uuid, message.clone()),
                ("emoji", Field::Text, "\"👍\"".into()),
            ],
        ),
        (
            "messages/search",
            vec![("query", Field::Text, "\"hello\"".into())],
        ),
        ("messages/seen", vec![("dm_id", Field::Uuid, dm.clone())]),
        ("typing", vec![("dm_id", Field::Uuid, dm.clone())]),
    ];
    let documents = |fields: &[Arg]| {
        let mut documents: Vec<String> = [
            "", "{", "null", "\"text\"", "12", "{\"a\":", "\u{0}", "{}{}",
        ]
        .map(str::to_owned)
        .to_vec();
        // serde reads a struct from a JSON array too: `[]` is the empty
        // argument list of an endpoint that takes none.
        if !fields.is_empty() {
            documents.push("[]".to_owned());
        }
        documents.push(format!("{{\"x\": \"{}\"}}", "b".repeat(1_000_000)));
        for (at, (_, kind, _)) in fields.iter().enumerate() {
            let with = |value: &str| {
                let pairs: Vec<String> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, (name, _, valid))| {
                        format!("\"{name}\": {}", if i == at { value } else { valid })
                    })
                    .collect();
                format!("{{{}}}", pairs.join(", "))
            };
            for value in wrong_values(*kind) {
                documents.push(with(&value));
            }
        }
        documents
    };
    let mut checked = 0;
    for (endpoint, fields) in &endpoints {
        for document in documents(fields) {
            for content_type in ["application/json", "text/plain"] {
                let request = Request::post(format!("/api/{endpoint}"))
                    .header(header::CONTENT_TYPE, content_type)
                    .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
                    .body(Body::from(document.clone()))
                    .unwrap();
                let reply = common::send(state.clone(), request).await;
                let shown: String = document.chars().take(120).collect();
                assert!(
                    reply.status.is_client_error(),
                    "{endpoint} ({content_type}) {shown}: {} {}",
                    reply.status,
                    reply.body.chars().take(200).collect::<String>()
                );
                checked += 1;
            }
        }
    }
    // The forms the pages post before (or without) WASM, and the session.
    for endpoint in [
        "dm/form",
        "messages/send-form",
        "session/dev-sign-in",
        "session/sign-out",
        "session",
    ] {
        for document in [
            "%".to_owned(),
            "dm_id=%ZZ&body=x".to_owned(),
            "dm_id=not-a-uuid&other_user_id=1&body=x&client_id=2&action=accept".to_owned(),
            format!("dm_id={dm}&body=%00&client_id=x"),
            "username=%00".to_owned(),
            "username=".to_owned(),
            format!("username={}", "a".repeat(1_000_000)),
            "\u{0}\u{ff}".to_owned(),
        ] {
            let request = Request::post(format!("/api/{endpoint}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
                .body(Body::from(document.clone()))
                .unwrap();
            let reply = common::send(state.clone(), request).await;
            let shown: String = document.chars().take(120).collect();
            assert!(
                !reply.status.is_server_error(),
                "{endpoint} {shown}: {} {}",
                reply.status,
                reply.body.chars().take(200).collect::<String>()
            );
            checked += 1;
        }
    }
    assert!(checked > 500, "{checked}");
    // Nothing that was refused changed anything.
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM messages")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(bodies, ["hi"]);
}
