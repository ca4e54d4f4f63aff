//! Background jobs: the welcome email (outbox and SMTP), retries, permanent
//! failures, a dead worker's run, and the operator's runs page and metrics.
#![cfg(feature = "ssr")]

mod common;

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use common::{Person, WEBHOOK_SECRET};
use knock::{
    jobs::{
        JobStatus, Kind,
        server::{Filter, Jobs, claim, list, run_one},
    },
    mail::Mailer,
    server::state::AppState,
    users::server::{ClerkEmailAddress, ClerkUser, tombstone, upsert_from_clerk},
};
use serde_json::json;
use sqlx::PgPool;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// Jobs that write email to an outbox in `dir`.
fn outbox_jobs(dir: &Path) -> Jobs {
    Jobs::new(Mailer::new(None, None, dir).unwrap())
}

/// The `.eml` files in `{dir}/outbox`, read.
fn outbox(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("outbox")) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

async fn run_all(pool: &PgPool, jobs: &Jobs) {
    while run_one(pool, jobs).await.unwrap() {}
}

/// The status, attempts and last error of the welcome email run of `user`.
async fn welcome_run(pool: &PgPool, user: &str) -> (String, i32, Option<String>) {
    sqlx::query_as(
        "SELECT j.status, j.attempts, j.last_error FROM jobs j JOIN users u ON u.id::text = j.subject
         WHERE j.kind = 'welcome_email' AND u.clerk_id = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Seconds until the welcome email run's next attempt.
async fn next_attempt_in(pool: &PgPool) -> f64 {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at - now())::float8 FROM jobs WHERE kind = 'welcome_email'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Makes every waiting run due now (instead of waiting out its backoff).
async fn make_due(pool: &PgPool) {
    sqlx::query("UPDATE jobs SET run_at = now() WHERE status IN ('pending', 'retrying')")
        .execute(pool)
        .await
        .unwrap();
}

fn clerk_user(id: &str, first_name: &str, email: &str, updated_at: i64) -> ClerkUser {
    ClerkUser {
        id: id.into(),
        first_name: Some(first_name.into()),
        primary_email_address_id: Some("idn_1".into()),
        email_addresses: vec![ClerkEmailAddress {
            id: "idn_1".into(),
            email_address: email.into(),
        }],
        updated_at,
        ..ClerkUser::default()
    }
}

/// A signed Clerk `user.created` delivery for Ada.
fn ada_created(svix_id: &str) -> Request<Body> {
    let body = serde_json::to_vec(&json!({
        "type": "user.created",
        "object": "event",
        "data": {
            "id": "user_ada", "username": "ada", "first_name": "Ada", "last_name": "Lovelace",
            "primary_email_address_id": "idn_1",
            "email_addresses": [{ "id": "idn_1", "email_address": "ada@example.com" }],
            "updated_at": 2000
        }
    }))
    .unwrap();
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = svix::webhooks::Webhook::new(WEBHOOK_SECRET)
        .unwrap()
        .sign(svix_id, timestamp, &body)
        .unwrap();
    Request::post("/api/webhooks/clerk")
        .header("content-type", "application/json")
        .header("svix-id", svix_id)
        .header("svix-timestamp", timestamp.to_string())
        .header("svix-signature", signature)
        .body(Body::from(body))
        .unwrap()
}

#[sqlx::test]
async fn a_user_created_by_webhook_gets_exactly_one_welcome_email(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = outbox_jobs(dir.path());
    let state = common::state(&pool);
    for svix_id in ["msg_1", "msg_1", "msg_2"] {
        // A repeated delivery, and the same event delivered again under a
        // new id.
        let reply = common::send(state.clone(), ada_created(svix_id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        run_all(&pool, &jobs).await;
    }
    let mail = outbox(dir.path());
    assert_eq!(mail.len(), 1, "one email for one user");
    assert!(mail[0].contains("To: ada@example.com"), "{}", mail[0]);
    assert_eq!(welcome_run(&pool, "user_ada").await.0, "done");
}

#[sqlx::test]
async fn the_fallback_creates_the_user_first_and_the_email_goes_with_the_address(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = outbox_jobs(dir.path());
    let state = common::state(&pool);
    // The first request of a user the webhook has not brought yet: the
    // session token has no address.
    let ada = Person {
        id: knock::ids::UserId::new_v4(),
        token: common::dev_keys().mint_dev_token("user_ada").unwrap(),
    };
    let reply = common::call(&state, Some(&ada), "users/list", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    run_all(&pool, &jobs).await;
    let welcomes = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs WHERE kind = 'welcome_email'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(welcomes().await, 0, "no address yet, no email to send");
    assert!(outbox(dir.path()).is_empty());

    // Clerk's webhook brings the address; the email goes once, also when
    // the same event comes again under a new id.
    for svix_id in ["msg_1", "msg_2"] {
        common::send(state.clone(), ada_created(svix_id)).await;
        run_all(&pool, &jobs).await;
    }
    let mail = outbox(dir.path());
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("To: ada@example.com"), "{}", mail[0]);
    assert_eq!(welcomes().await, 1);
}

#[sqlx::test]
async fn the_outbox_holds_a_readable_welcome_email(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = outbox_jobs(dir.path());
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 1))
        .await
        .unwrap();
    run_all(&pool, &jobs).await;
    let mail = outbox(dir.path());
    assert_eq!(mail.len(), 1);
    let eml = &mail[0];
    for header in [
        "From: Knock <knock@localhost>",
        "To: ada@example.com",
        "Subject: Welcome to Knock",
        "Content-Type: text/plain; charset=utf-8",
    ] {
        assert!(eml.contains(header), "{header} in {eml}");
    }
    assert!(eml.contains("Message-ID: <welcome."), "{eml}");
    let (_, body) = eml
        .split_once("\r\n\r\n")
        .expect("a body after the headers");
    assert!(body.starts_with("Hi Ada,"), "{body}");
    assert!(
        body.contains("Nobody can message you until you say yes"),
        "{body}"
    );
    // The run says where the file is.
    let runs = list(&pool, &Filter::default(), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, JobStatus::Done);
    assert!(
        runs[0].steps[0]
            .outcome
            .starts_with("written to the outbox: "),
        "{:?}",
        runs[0].steps
    );
}

#[sqlx::test]
async fn a_deleted_user_gets_no_welcome_email(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = outbox_jobs(dir.path());
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 1))
        .await
        .unwrap();
    tombstone(&pool, "user_ada").await.unwrap();
    run_all(&pool, &jobs).await;
    assert!(outbox(dir.path()).is_empty());
    let runs = list(&pool, &Filter::default(), 10).await.unwrap();
    assert_eq!(runs[0].status, JobStatus::Done);
    assert_eq!(runs[0].steps[0].outcome, "skipped: the user was deleted");
    // A late user.created does not bring the user, or the email, back.
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 5))
        .await
        .unwrap();
    run_all(&pool, &jobs).await;
    assert!(outbox(dir.path()).is_empty());
}

/// A small SMTP server: `reply_to_mail(n)` answers the n-th `MAIL FROM`
/// (from 0); `RCPT TO` gets `rcpt`; accepted messages are kept.
struct SmtpServer {
    url: String,
    received: Arc<Mutex<Vec<String>>>,
    mails: Arc<AtomicUsize>,
}

async fn smtp_server(reply_to_mail: fn(usize) -> &'static str, rcpt: &'static str) -> SmtpServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let mails = Arc::new(AtomicUsize::new(0));
    let (kept, counted) = (received.clone(), mails.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (kept, counted) = (kept.clone(), counted.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                while let Ok(Some(line)) = lines.next_line().await {
                    let command = line.to_ascii_uppercase();
                    let reply = if command.starts_with("EHLO") || command.starts_with("HELO") {
                        "250 test"
                    } else if command.starts_with("MAIL FROM") {
                        reply_to_mail(counted.fetch_add(1, Ordering::SeqCst))
                    } else if command.starts_with("RCPT TO") {
                        rcpt
                    } else if command == "DATA" {
                        write.write_all(b"354 go ahead\r\n").await.unwrap();
                        let mut message = String::new();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            message.push_str(&line);
                            message.push('\n');
                        }
                        kept.lock().unwrap().push(message);
                        "250 2.0.0 queued as 42"
                    } else if command == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        "250 ok"
                    };
                    if write
                        .write_all(format!("{reply}\r\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    SmtpServer {
        url,
        received,
        mails,
    }
}

fn smtp_jobs(server: &SmtpServer) -> Jobs {
    let url = secrecy::SecretString::from(server.url.clone());
    let dir = tempfile::tempdir().unwrap();
    Jobs::new(Mailer::new(Some(&url), Some("Knock <hello@knock.example>"), dir.path()).unwrap())
}

#[sqlx::test]
async fn the_welcome_email_retries_while_smtp_refuses_then_is_sent(pool: PgPool) {
    // The first two attempts are refused for now (451), the third is taken.
    let server = smtp_server(
        |n| {
            if n < 2 {
                "451 4.3.0 try again later"
            } else {
                "250 ok"
            }
        },
        "250 ok",
    )
    .await;
    let jobs = smtp_jobs(&server);
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 1))
        .await
        .unwrap();

    assert!(run_one(&pool, &jobs).await.unwrap());
    let (status, attempts, error) = welcome_run(&pool, "user_ada").await;
    assert_eq!((status.as_str(), attempts), ("retrying", 1));
    assert!(
        error.as_deref().unwrap_or_default().contains("451"),
        "{error:?}"
    );
    assert!(
        !run_one(&pool, &jobs).await.unwrap(),
        "the next attempt waits for its backoff"
    );
    let wait = next_attempt_in(&pool).await;
    assert!(
        (0.5..=2.5).contains(&wait),
        "backoff after one failure: {wait} s"
    );

    make_due(&pool).await;
    assert!(run_one(&pool, &jobs).await.unwrap());
    let (_, attempts, _) = welcome_run(&pool, "user_ada").await;
    assert_eq!(attempts, 2);
    let wait = next_attempt_in(&pool).await;
    assert!(
        (2.5..=4.5).contains(&wait),
        "backoff after two failures: {wait} s"
    );

    make_due(&pool).await;
    assert!(run_one(&pool, &jobs).await.unwrap());
    let (status, attempts, error) = welcome_run(&pool, "user_ada").await;
    assert_eq!((status.as_str(), attempts, error), ("done", 3, None));
    let received = server.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "sent once");
    assert!(received[0].contains("Subject: Welcome to Knock"));
    let runs = list(&pool, &Filter::default(), 10).await.unwrap();
    assert_eq!(
        runs[0].steps[0].outcome,
        "accepted by the SMTP server: 250 2.0.0 queued as 42"
    );
}

#[sqlx::test]
async fn a_permanent_refusal_stops_the_email_and_shows_why(pool: PgPool) {
    let server = smtp_server(|_| "250 ok", "550 5.1.1 no such mailbox").await;
    let jobs = smtp_jobs(&server);
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 1))
        .await
        .unwrap();
    run_all(&pool, &jobs).await;
    let (status, attempts, error) = welcome_run(&pool, "user_ada").await;
    assert_eq!((status.as_str(), attempts), ("failed", 1));
    let error = error.unwrap_or_default();
    assert!(
        error.starts_with("refused for good:") && error.contains("no such mailbox"),
        "{error}"
    );
    make_due(&pool).await;
    assert!(
        !run_one(&pool, &jobs).await.unwrap(),
        "a failed run waits for an operator"
    );
    assert_eq!(server.mails.load(Ordering::SeqCst), 1);
    assert!(server.received.lock().unwrap().is_empty());
}

#[sqlx::test]
async fn a_run_left_by_a_dead_worker_is_picked_up_by_another(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = outbox_jobs(dir.path());
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 1))
        .await
        .unwrap();
    // An instance claims the run and dies before finishing it.
    let claimed = claim(&pool).await.unwrap().expect("a due run");
    assert_eq!(claimed.kind, Kind::WelcomeEmail);
    drop(claimed);
    assert_eq!(welcome_run(&pool, "user_ada").await.0, "running");
    assert!(
        !run_one(&pool, &jobs).await.unwrap(),
        "the lease keeps others off while it lasts"
    );
    // The lease runs out.
    sqlx::query("UPDATE jobs SET run_at = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(run_one(&pool, &jobs).await.unwrap());
    let (status, attempts, _) = welcome_run(&pool, "user_ada").await;
    assert_eq!((status.as_str(), attempts), ("done", 2));
    assert_eq!(outbox(dir.path()).len(), 1);
}

#[sqlx::test]
async fn a_step_done_before_a_crash_is_not_run_again(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let jobs = outbox_jobs(dir.path());
    upsert_from_clerk(&pool, &clerk_user("user_ada", "Ada", "ada@example.com", 1))
        .await
        .unwrap();
    run_all(&pool, &jobs).await;
    // As if the instance died after the send step was recorded but before
    // the run was marked done.
    sqlx::query("UPDATE jobs SET status = 'running', finished_at = NULL, run_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    run_all(&pool, &jobs).await;
    assert_eq!(outbox(dir.path()).len(), 1, "the email went once");
    assert_eq!(welcome_run(&pool, "user_ada").await.0, "done");
}

/// The state with `ada` as the one operator.
async fn with_operator(pool: &PgPool) -> (AppState, Person, Person) {
    let mut state = common::state(pool);
    state.operators = Arc::new(vec!["ada".into()]);
    let (ada, bob) = (
        common::person(pool, "ada").await,
        common::person(pool, "bob").await,
    );
    (state, ada, bob)
}

async fn get(state: &AppState, who: Option<&Person>, path: &str) -> common::Reply {
    let mut request = Request::get(path);
    if let Some(who) = who {
        request = request.header("authorization", format!("Bearer {}", who.token));
    }
    common::send(state.clone(), request.body(Body::empty()).unwrap()).await
}

#[sqlx::test]
async fn the_runs_page_and_metrics_are_404_for_everyone_but_operators(pool: PgPool) {
    let (state, ada, bob) = with_operator(&pool).await;
    for who in [None, Some(&bob)] {
        for path in ["/admin/jobs", "/metrics"] {
            let reply = get(&state, who, path).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!reply.body.contains("Background jobs"), "{path}");
        }
        let reply = common::call(&state, who, "admin/jobs", json!({})).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let reply = get(&state, Some(&ada), "/admin/jobs").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body.contains("Background jobs"), "{}", reply.body);
    assert!(reply.body.contains("Welcome email"), "the runs are listed");
}

#[sqlx::test]
async fn an_operator_lists_filters_and_retries_runs(pool: PgPool) {
    let (state, ada, _bob) = with_operator(&pool).await;
    sqlx::query(
        "UPDATE jobs SET status = 'failed', attempts = 8, last_error = 'refused for good: 550',
                finished_at = now()
         WHERE subject = $1",
    )
    .bind(ada.id.to_string())
    .execute(&pool)
    .await
    .unwrap();
    let all = common::call(&state, Some(&ada), "admin/jobs", json!({})).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(
        all.json().as_array().unwrap().len(),
        2,
        "Ada's and Bob's emails"
    );
    let failed = common::call(
        &state,
        Some(&ada),
        "admin/jobs",
        json!({ "status": "failed" }),
    )
    .await
    .json();
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["username"], "ada");
    assert_eq!(failed[0]["last_error"], "refused for good: 550");
    let bad = common::call(
        &state,
        Some(&ada),
        "admin/jobs",
        json!({ "status": "lost" }),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let id = failed[0]["id"].as_i64().unwrap();
    let retry = |id: i64| {
        let state = state.clone();
        let token = ada.token.clone();
        async move {
            common::send(
                state,
                Request::post("/api/admin/jobs/retry")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("accept", "application/json")
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::from(format!("id={id}")))
                    .unwrap(),
            )
            .await
        }
    };
    let answer = retry(id).await.status;
    assert!(answer.is_success() || answer.is_redirection(), "{answer}");
    let (status, attempts, max): (String, i32, i32) =
        sqlx::query_as("SELECT status, attempts, max_attempts FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), attempts, max),
        ("retrying", 8, 9),
        "one more attempt"
    );
    let again = retry(id).await.status;
    assert!(
        again.is_success() || again.is_redirection(),
        "retrying again is harmless: {again}"
    );
    let done = sqlx::query_scalar::<_, i64>("SELECT id FROM jobs WHERE id <> $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET status = 'done', finished_at = now() WHERE id = $1")
        .bind(done)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(retry(done).await.status, StatusCode::CONFLICT);
    assert_eq!(retry(999_999).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn metrics_count_runs_requests_streams_and_messages(pool: PgPool) {
    let (state, ada, bob) = with_operator(&pool).await;
    let dm = common::accepted_dm(&state, &ada, &bob).await;
    let sent = common::send_message(&state, &ada, &dm, "hello", uuid::Uuid::new_v4()).await;
    assert_eq!(sent.status, StatusCode::OK);
    let reply = get(&state, Some(&ada), "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = &reply.body;
    for line in [
        "knock_job_runs{kind=\"welcome_email\",status=\"pending\"} 2",
        "knock_messages_sent_total 1",
        "knock_event_streams_open 0",
        "knock_http_requests_total{method=\"POST\",route=\"/api/messages/send\",status=\"200\"} 1",
        "# TYPE knock_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[sqlx::test]
async fn a_running_server_sends_the_welcome_email_and_serves_metrics_on_its_own_address(
    _: sqlx::postgres::PgPoolOptions,
    options: sqlx::postgres::PgConnectOptions,
) {
    use figment::providers::Serialized;
    use knock::server::{config::Settings, startup::Application};
    use sqlx::ConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_figment(
        Settings::defaults()
            .merge(Serialized::default(
                "knock.database_url",
                options.to_url_lossy().to_string(),
            ))
            .merge(Serialized::default("knock.data_dir", dir.path()))
            .merge(Serialized::default("knock.metrics_addr", "127.0.0.1:0"))
            .merge(Serialized::default("leptos.site-addr", "127.0.0.1:0")),
    )
    .unwrap();
    let app = Application::build(settings).await.expect("start");
    let (base, metrics) = (app.local_addr(), app.metrics_addr().expect("bound"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    // A newcomer signs up in dev mode.
    let signed_up = client
        .post(format!("http://{base}/api/session/dev-sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=newcomer")
        .send()
        .await
        .unwrap();
    assert!(signed_up.status().is_redirection() || signed_up.status().is_success());
    // The worker writes the welcome email to the outbox within moments.
    let mut mail = Vec::new();
    for _ in 0..100 {
        mail = outbox(dir.path());
        if !mail.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(mail.len(), 1, "one welcome email in the outbox");
    assert!(
        mail[0].contains("To: newcomer@knock.localhost"),
        "{}",
        mail[0]
    );

    let open = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::OK);
    let text = open.text().await.unwrap();
    assert!(
        text.contains("knock_job_runs{kind=\"welcome_email\",status=\"done\"} 1"),
        "{text}"
    );
    let guarded = client
        .get(format!("http://{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        guarded.status(),
        StatusCode::NOT_FOUND,
        "the main address keeps it for operators"
    );
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
