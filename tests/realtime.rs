//! Real-time delivery through real servers on loopback: SSE events for
//! handshake steps and messages, replay after a dropped stream with
//! `Last-Event-ID`, and two instances on one database delivering across.
#![cfg(feature = "ssr")]

use std::time::Duration;

use figment::providers::Serialized;
use knock::ids::UserId;
use knock::{
    auth::server::SessionKeys,
    realtime::server::POLL,
    server::{config::Settings, startup::Application},
    users::server::{ClerkUser, upsert_from_clerk},
};
use serde_json::{Value, json};
use sqlx::{
    ConnectOptions, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// A running Knock on `127.0.0.1:0`; stops when dropped.
struct Server {
    base: String,
    stop: oneshot::Sender<()>,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// A raw TCP connection to this server, with `TCP_NODELAY` (each write
    /// goes out at once), and its `host:port` for the `Host` header.
    async fn connect(&self) -> (tokio::net::TcpStream, String) {
        let addr = self.base.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        (stream, addr)
    }
}

async fn server(options: &PgConnectOptions, data_dir: &std::path::Path) -> Server {
    let settings = Settings::from_figment(
        Settings::defaults()
            .merge(Serialized::default(
                "knock.database_url",
                options.to_url_lossy().to_string(),
            ))
            .merge(Serialized::default("knock.data_dir", data_dir))
            .merge(Serialized::default("leptos.site-addr", "127.0.0.1:0")),
    )
    .unwrap();
    let app = Application::build(settings).await.expect("start");
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Server {
        base,
        stop,
        running,
    }
}

/// A temporary data dir, a server on it, a pool to inspect the database
/// and the server's dev key.
async fn start(options: &PgConnectOptions) -> (tempfile::TempDir, Server, PgPool, SessionKeys) {
    let dir = tempfile::tempdir().unwrap();
    let one = server(options, dir.path()).await;
    let pool = PgPoolOptions::new()
        .connect_with(options.clone())
        .await
        .unwrap();
    let keys = SessionKeys::dev_blocking(&dir.path().join("dev-session-key.pem")).unwrap();
    (dir, one, pool, keys)
}

/// A user and a token signed with the servers' dev key.
async fn person(pool: &PgPool, keys: &SessionKeys, name: &str) -> (UserId, String) {
    let clerk_id = format!("user_{name}");
    let user = ClerkUser {
        id: clerk_id.clone(),
        username: Some(name.into()),
        updated_at: 1,
        ..Default::default()
    };
    let id = upsert_from_clerk(pool, &user).await.unwrap().user_id();
    (id, keys.mint_dev_token(&clerk_id).unwrap())
}

async fn call(base: &str, token: &str, endpoint: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/{endpoint}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{endpoint}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// An ACTIVE DM: the inviter's invite to `invitee`, accepted; the DM.
async fn accepted_dm(
    base: &str,
    inviter_token: &str,
    invitee_token: &str,
    invitee: UserId,
) -> Value {
    let dm = call(
        base,
        inviter_token,
        "dm/invite",
        json!({ "other_user_id": invitee }),
    )
    .await;
    call(
        base,
        invitee_token,
        "dm/accept",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    dm
}

/// One parsed SSE event: (id, event, data).
type Sse = (String, String, Value);

/// Opens `/api/events` and forwards parsed events; the stream closes when
/// the returned handle is aborted.
async fn subscribe(
    base: &str,
    token: &str,
    last_event_id: Option<&str>,
) -> (mpsc::UnboundedReceiver<Sse>, tokio::task::JoinHandle<()>) {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/api/events"))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !event.is_empty() {
                    // Everything on the wire is an `Event` the browser decodes.
                    if let Err(error) = knock::realtime::Event::decode(&event, &data) {
                        panic!("not an Event: {event} {data}: {error}");
                    }
                    let _ = tx.send((
                        id,
                        event,
                        serde_json::from_str(&data).unwrap_or(Value::Null),
                    ));
                }
            }
        }
    });
    (rx, task)
}

async fn next_any(rx: &mut mpsc::UnboundedReceiver<Sse>, within: Duration) -> Sse {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an event in time")
        .expect("open stream")
}

/// The next event that is not `presence`.
async fn next(rx: &mut mpsc::UnboundedReceiver<Sse>) -> Sse {
    next_within(rx, Duration::from_secs(10)).await
}

/// The next event that is not `presence`, arriving `within` from now.
async fn next_within(rx: &mut mpsc::UnboundedReceiver<Sse>, within: Duration) -> Sse {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = next_any(rx, left).await;
        if event.1 != "presence" {
            return event;
        }
    }
}

/// Whether nothing but `presence` arrives for a while.
async fn quiet(rx: &mut mpsc::UnboundedReceiver<Sse>) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return true,
            Ok(Some((_, kind, _))) if kind == "presence" => continue,
            Ok(_) => return false,
        }
    }
}

#[sqlx::test]
async fn events_arrive_live_and_a_reconnect_replays_what_was_missed(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (ada, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;

    let (mut bobs, stream) = subscribe(&one.base, &bob_token, None).await;
    let dm = call(
        &one.base,
        &ada_token,
        "dm/invite",
        json!({ "other_user_id": bob }),
    )
    .await;
    // The `dm` event is Bob's row of his conversation list.
    let (_, event, data) = next(&mut bobs).await;
    assert_eq!((event.as_str(), &data["id"]), ("dm", &dm["id"]));
    assert_eq!(
        (&data["status"], &data["invited_by_user_id"]),
        (&json!("INVITED"), &json!(ada))
    );
    assert_eq!(data["other_user"]["id"], json!(ada));
    assert_eq!(data["other_user"]["username"], "ada");

    call(
        &one.base,
        &bob_token,
        "dm/accept",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    let (_, event, data) = next(&mut bobs).await;
    assert_eq!((event.as_str(), &data["status"]), ("dm", &json!("ACTIVE")));
    call(
        &one.base,
        &ada_token,
        "messages/send",
        json!({ "dm_id": dm["id"], "body": "one", "client_id": Uuid::new_v4() }),
    )
    .await;
    let (last_seen, event, data) = next(&mut bobs).await;
    assert_eq!((event.as_str(), data["seq"].as_i64()), ("message", Some(1)));
    // The event is the message as the API returns it: the page needs no
    // request to show it.
    let listed = call(
        &one.base,
        &bob_token,
        "messages/list",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    assert_eq!(data, listed[0]);

    // Bob's connection drops; Ada goes on writing.
    stream.abort();
    drop(bobs);
    for body in ["two", "three"] {
        call(
            &one.base,
            &ada_token,
            "messages/send",
            json!({ "dm_id": dm["id"], "body": body, "client_id": Uuid::new_v4() }),
        )
        .await;
    }
    let (mut bobs, _stream) = subscribe(&one.base, &bob_token, Some(&last_seen)).await;
    let replayed = [next(&mut bobs).await, next(&mut bobs).await];
    let seqs: Vec<_> = replayed
        .iter()
        .map(|(_, e, d)| (e.clone(), d["seq"].as_i64()))
        .collect();
    assert_eq!(
        seqs,
        [
            ("message".to_owned(), Some(2)),
            ("message".to_owned(), Some(3))
        ]
    );
    assert!(quiet(&mut bobs).await, "nothing doubled");

    // Bob reads: both get a `read` event; reading again changes nothing.
    let (mut adas, _ada_stream) = subscribe(&one.base, &ada_token, None).await;
    call(
        &one.base,
        &bob_token,
        "messages/read",
        json!({ "dm_id": dm["id"], "seq": 3 }),
    )
    .await;
    for events in [&mut bobs, &mut adas] {
        let (_, event, data) = next(events).await;
        assert_eq!((event.as_str(), data["seq"].as_i64()), ("read", Some(3)));
        assert_eq!(data["user_id"], bob.to_string());
    }
    call(
        &one.base,
        &bob_token,
        "messages/read",
        json!({ "dm_id": dm["id"], "seq": 3 }),
    )
    .await;
    assert!(quiet(&mut adas).await);
    let _ = ada;
}

#[sqlx::test]
async fn two_instances_on_one_database_deliver_to_each_others_clients(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (dir, one, pool, keys) = start(&options).await;
    let two = server(&options, dir.path()).await;
    let (_, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;

    // Bob listens on instance two; Ada acts through instance one. The
    // NOTIFY wakes Bob's stream: it does not wait for its next poll.
    let (mut bobs, _stream) = subscribe(&two.base, &bob_token, None).await;
    let dm = call(
        &one.base,
        &ada_token,
        "dm/invite",
        json!({ "other_user_id": bob }),
    )
    .await;
    let (_, event, data) = next_within(&mut bobs, POLL / 2).await;
    assert_eq!((event.as_str(), &data["id"]), ("dm", &dm["id"]));
}

#[sqlx::test]
async fn a_users_first_stream_does_not_wait_for_another_users_presence_write(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, ada_token) = person(&pool, &keys, "ada").await;
    let (_, bob_token) = person(&pool, &keys, "bob").await;
    let (_adas, _ada_stream) = subscribe(&one.base, &ada_token, None).await;

    // A write to the instance's row that has not committed yet (as a
    // heartbeat or another user's first stream leaves it): Bob's stream
    // opens anyway, so many users coming online at once (after a restart)
    // do not queue behind each other's commits.
    let mut held = pool.begin().await.unwrap();
    let rows = sqlx::query("UPDATE instances SET seen_at = now()")
        .execute(&mut *held)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(rows, 1, "the instance of Ada's stream");
    let opened = tokio::time::timeout(
        Duration::from_secs(5),
        subscribe(&one.base, &bob_token, None),
    )
    .await;
    held.rollback().await.unwrap();
    assert!(opened.is_ok(), "Bob's stream waited for the held write");
}

#[sqlx::test]
async fn a_stream_too_far_behind_or_behind_the_pruned_log_is_told_to_resync(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let (mut bobs, stream) = subscribe(&one.base, &bob_token, None).await;
    let dm = call(
        &one.base,
        &ada_token,
        "dm/invite",
        json!({ "other_user_id": bob }),
    )
    .await;
    let (seen, _, _) = next(&mut bobs).await;
    stream.abort();

    // More than MAX_REPLAY events while away: one `resync`, then live ones.
    sqlx::query(
        "INSERT INTO events (user_id, kind, payload)
         SELECT $1, 'read', '{}' FROM generate_series(1, $2)",
    )
    .bind(bob)
    .bind(knock::realtime::server::MAX_REPLAY + 1)
    .execute(&pool)
    .await
    .unwrap();
    let (mut bobs, stream) = subscribe(&one.base, &bob_token, Some(&seen)).await;
    let (resync_id, kind, _) = next(&mut bobs).await;
    assert_eq!(kind, "resync");
    call(
        &one.base,
        &bob_token,
        "dm/accept",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    let (_, kind, data) = next(&mut bobs).await;
    assert_eq!((kind.as_str(), &data["id"]), ("dm", &dm["id"]));
    stream.abort();

    // Resuming from the resync point replays nothing old.
    let (mut bobs, stream) = subscribe(&one.base, &bob_token, Some(&resync_id)).await;
    assert_eq!(next(&mut bobs).await.1, "dm");
    assert!(quiet(&mut bobs).await);
    stream.abort();

    // The log was pruned past the cursor: resync too.
    sqlx::query("DELETE FROM events WHERE kind = 'read'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE events_horizon SET pruned_through = pg_current_xact_id()")
        .execute(&pool)
        .await
        .unwrap();
    let (mut bobs, _stream) = subscribe(&one.base, &bob_token, Some(&seen)).await;
    assert_eq!(next(&mut bobs).await.1, "resync");
}

#[sqlx::test]
async fn typing_and_presence_flow_only_between_members_of_an_active_dm(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (dir, one, pool, keys) = start(&options).await;
    let two = server(&options, dir.path()).await;
    let (ada, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let dm = call(
        &one.base,
        &ada_token,
        "dm/invite",
        json!({ "other_user_id": bob }),
    )
    .await;
    let online = |token: String, who: UserId| {
        let base = one.base.clone();
        async move {
            let people = call(&base, &token, "users/list", json!({})).await;
            people
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == who.to_string())
                .unwrap()["online"]
                .as_bool()
                .unwrap()
        }
    };

    // The invite is unanswered: Bob comes online on instance two, and the
    // inviter learns nothing of it.
    let (mut adas, _ada_stream) = subscribe(&one.base, &ada_token, None).await;
    let (mut bobs, bob_stream) = subscribe(&two.base, &bob_token, None).await;
    assert!(!online(ada_token.clone(), bob).await);
    call(
        &one.base,
        &bob_token,
        "dm/accept",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    // Up to the accept's `dm` event (the invite's may come first, see
    // below), no presence.
    loop {
        let (_, kind, data) = next_any(&mut adas, Duration::from_secs(10)).await;
        assert_eq!(kind, "dm", "no presence before the DM is active");
        if data["status"] == "ACTIVE" {
            break;
        }
    }
    assert!(online(ada_token.clone(), bob).await);
    assert!(online(bob_token.clone(), ada).await);

    // Typing crosses instances, throttled.
    // The accept's `dm` event. (The invite's may come first: it committed
    // before Bob's stream opened, but another test's transaction on the
    // same cluster can keep it unsettled until after.)
    loop {
        let (_, kind, data) = next(&mut bobs).await;
        assert_eq!(kind, "dm");
        if data["status"] == "ACTIVE" {
            break;
        }
    }
    call(
        &one.base,
        &ada_token,
        "typing",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    call(
        &one.base,
        &ada_token,
        "typing",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    let (_, kind, data) = next(&mut bobs).await;
    assert_eq!(kind, "typing");
    assert_eq!((&data["dm_id"], &data["user_id"]), (&dm["id"], &json!(ada)));
    assert!(
        quiet(&mut bobs).await,
        "one typing event per throttle period"
    );

    // Bob's only stream closes: Ada sees him go offline, then come back.
    bob_stream.abort();
    drop(bobs);
    let (_, kind, data) = next_any(&mut adas, Duration::from_secs(30)).await;
    assert_eq!(
        (kind.as_str(), &data["user_id"], &data["online"]),
        ("presence", &json!(bob), &json!(false))
    );
    assert!(!online(ada_token.clone(), bob).await);
    let (_bobs, _bob_stream) = subscribe(&two.base, &bob_token, None).await;
    let (_, kind, data) = next_any(&mut adas, Duration::from_secs(10)).await;
    assert_eq!((kind.as_str(), &data["online"]), ("presence", &json!(true)));
}

#[sqlx::test]
async fn many_streams_of_one_user_each_get_every_message_once_in_order(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let dm = accepted_dm(&one.base, &ada_token, &bob_token, bob).await;

    // Bob has 40 tabs open, some joining while messages flow.
    let mut tabs = Vec::new();
    for _ in 0..30 {
        tabs.push(subscribe(&one.base, &bob_token, None).await);
    }
    for n in 1..=6 {
        call(
            &one.base,
            &ada_token,
            "messages/send",
            json!({ "dm_id": dm["id"], "body": format!("m{n}"), "client_id": Uuid::new_v4() }),
        )
        .await;
        if n == 3 {
            for _ in 0..10 {
                tabs.push(subscribe(&one.base, &bob_token, None).await);
            }
        }
    }
    for (i, (events, _)) in tabs.iter_mut().enumerate() {
        let first = if i < 30 { 1 } else { 4 };
        let mut seqs = Vec::new();
        while seqs.last() != Some(&6) {
            let (_, kind, data) = next(events).await;
            if kind == "message" {
                seqs.push(data["seq"].as_i64().unwrap());
            }
        }
        // A tab that opened late may or may not see message 3 (it was
        // being sent); from its first message on, each arrives once, in order.
        let start = seqs[0];
        assert!(start <= first, "tab {i}: {seqs:?}");
        assert_eq!(seqs, (start..=6).collect::<Vec<_>>(), "tab {i}");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, (events, _)) in tabs.iter_mut().enumerate() {
        while let Ok((_, kind, _)) = events.try_recv() {
            assert_ne!(kind, "message", "tab {i}: nothing doubled");
        }
    }
}

#[sqlx::test]
async fn the_log_is_read_in_transaction_order_across_a_power_of_ten(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    // Two settled events of old transactions 99 and 100 (as text, "100"
    // sorts first).
    for (tx, seq) in [("99", 1), ("100", 2)] {
        sqlx::query(
            "INSERT INTO events (tx_id, user_id, kind, payload) VALUES ($1::xid8, $2, 'read', $3)",
        )
        .bind(tx)
        .bind(bob)
        .bind(json!({ "dm_id": Uuid::nil(), "user_id": bob, "seq": seq }))
        .execute(&pool)
        .await
        .unwrap();
    }
    let (mut bobs, _stream) = subscribe(&one.base, &bob_token, Some("98:0")).await;
    let first = next(&mut bobs).await;
    let second = next(&mut bobs).await;
    assert_eq!(
        (first.2["seq"].as_i64(), second.2["seq"].as_i64()),
        (Some(1), Some(2))
    );
    assert!(
        first.0.starts_with("99:") && second.0.starts_with("100:"),
        "{first:?} {second:?}"
    );
    assert!(quiet(&mut bobs).await, "nothing again");
}

/// Ada and Bob, with an ACTIVE DM between them: (ada token, bob id, bob
/// token, dm id).
async fn active_dm(
    base: &str,
    pool: &PgPool,
    keys: &SessionKeys,
) -> (String, UserId, String, Value) {
    let (_, ada_token) = person(pool, keys, "ada").await;
    let (bob, bob_token) = person(pool, keys, "bob").await;
    let dm = accepted_dm(base, &ada_token, &bob_token, bob).await;
    (ada_token, bob, bob_token, dm["id"].clone())
}

#[sqlx::test]
async fn a_message_held_back_by_an_older_transaction_arrives_when_it_ends(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (ada_token, _, bob_token, dm) = active_dm(&one.base, &pool, &keys).await;
    let (mut bobs, _stream) = subscribe(&one.base, &bob_token, None).await;
    // A transaction that started writing before the message and knows
    // nothing of Bob: the message commits after it began, so it cannot be
    // delivered (in order) until this one ends.
    let mut older = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *older)
        .await
        .unwrap();
    call(
        &one.base,
        &ada_token,
        "messages/send",
        json!({ "dm_id": dm, "body": "hi", "client_id": Uuid::new_v4() }),
    )
    .await;
    // The handshake's own `dm` events may still arrive: the stream's start
    // leaves out events that another test's transaction (on the same
    // cluster) kept from being settled, and delivers them when they are.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some((_, kind, _))) = tokio::time::timeout_at(deadline, bobs.recv()).await {
        assert_ne!(kind, "message", "held back while the older one runs");
    }
    older.commit().await.unwrap();
    // No wake-up names Bob now; the stream must look again by itself, and
    // sooner than its idle poll (5 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let data = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, kind, data) = next_any(&mut bobs, left).await;
        if kind == "message" {
            break data;
        }
    };
    assert_eq!(data["seq"].as_i64(), Some(1));
}

#[sqlx::test]
async fn messages_sent_at_once_by_both_members_arrive_in_seq_order(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (ada_token, _, bob_token, dm) = active_dm(&one.base, &pool, &keys).await;
    let (mut bobs, _stream) = subscribe(&one.base, &bob_token, None).await;
    // Eight senders at once, four from each side, 20 messages each.
    let mut senders = Vec::new();
    for i in 0..8 {
        let token = if i % 2 == 0 { &ada_token } else { &bob_token }.clone();
        let (base, dm) = (one.base.clone(), dm.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..20 {
                call(
                    &base,
                    &token,
                    "messages/send",
                    json!({ "dm_id": dm, "body": format!("{i}-{n}"), "client_id": Uuid::new_v4() }),
                )
                .await;
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 160 {
        let (_, kind, data) = next(&mut bobs).await;
        if kind == "message" {
            seqs.push(data["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(seqs, (1..=160).collect::<Vec<_>>());
}

/// Reads a response head from `stream` and checks that it opens an event
/// stream (200, `text/event-stream`).
async fn read_event_stream_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = String::new();
    read_until(stream, &mut head, |t| t.contains("\r\n\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/event-stream\r\n"),
        "{head}"
    );
    head
}

/// Reads `stream` into `text` until `done(text)`, each read within 10 s.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    text: &mut String,
    done: impl Fn(&str) -> bool,
) {
    use tokio::io::AsyncReadExt;
    let mut buffer = vec![0u8; 4096];
    while !done(text) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("nothing more in time: {text}"))
            .unwrap();
        assert!(n > 0, "closed early: {text}");
        text.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
}

#[sqlx::test]
async fn a_stream_gets_the_same_events_on_a_fresh_and_on_a_reused_connection(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (ada_token, _, bob_token, dm) = active_dm(&one.base, &pool, &keys).await;
    let base = &one.base;

    // A fresh connection (an `EventSource` reconnecting).
    let own = reqwest::Client::new()
        .get(format!("{base}/api/events"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.headers()["content-type"], "text/event-stream");
    // A connection that served a call first (a browser's idle keep-alive
    // connection).
    let reused_client = reqwest::Client::new();
    let people = reused_client
        .post(format!("{base}/api/users/list"))
        .bearer_auth(&bob_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(people.status().is_success());
    people.bytes().await.unwrap();
    let reused = reused_client
        .get(format!("{base}/api/events"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(reused.headers()["content-type"], "text/event-stream");

    let sent = call(
        base,
        &ada_token,
        "messages/send",
        json!({ "dm_id": dm, "body": "both", "client_id": Uuid::new_v4() }),
    )
    .await;
    for mut response in [own, reused] {
        let mut text = String::new();
        let arrived = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if text.contains(&sent["id"].as_str().unwrap().to_string()) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(arrived, Ok(true), "{text}");
        assert!(text.contains("event: message\n"), "{text}");
    }
}

#[sqlx::test]
async fn a_stream_without_a_session_is_401_with_the_json_error(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, _pool, _keys) = start(&options).await;
    let response = reqwest::Client::new()
        .get(format!("{}/api/events", one.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized", "{error}");
}

#[sqlx::test]
async fn a_stream_whose_request_arrives_in_pieces_is_served(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    use tokio::io::AsyncWriteExt;
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, token) = person(&pool, &keys, "ada").await;
    let (mut stream, addr) = one.connect().await;
    let request = format!(
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    for piece in [&request[..6], &request[6..40], &request[40..]] {
        stream.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let head = read_event_stream_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}

#[sqlx::test]
async fn shutting_down_ends_open_streams_and_the_server_stops(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, token) = person(&pool, &keys, "ada").await;
    let mut own = reqwest::Client::new()
        .get(format!("{}/api/events", one.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    // A connection that has sent nothing yet (a browser's preconnect).
    let _silent = one.connect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Server { stop, running, .. } = one;
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match own.chunk().await {
                Ok(Some(_)) => continue,
                end => return end.map(|_| ()),
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(ended.is_ok(), "a complete response: {ended:?}");
    // The grace for open requests is 10 s; a silent connection waits 5 s
    // for its first bytes.
    let stopped = tokio::time::timeout(Duration::from_secs(3), running)
        .await
        .expect("the server stops well within its grace");
    assert!(stopped.unwrap().is_ok());
}

#[sqlx::test]
async fn pages_are_compressed_and_event_streams_are_not(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, token) = person(&pool, &keys, "ada").await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/", one.base))
        .bearer_auth(&token)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-encoding"], "gzip");
    page.bytes().await.unwrap();
    // On a connection of its own, and on the page's connection.
    for fresh in [true, false] {
        let client = if fresh {
            reqwest::Client::new()
        } else {
            client.clone()
        };
        let stream = client
            .get(format!("{}/api/events", one.base))
            .bearer_auth(&token)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.headers()["content-type"], "text/event-stream");
        assert!(stream.headers().get("content-encoding").is_none());
    }
}

#[sqlx::test]
async fn a_stream_requested_over_http_1_0_as_a_proxy_does_is_delimited_by_the_close(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    use tokio::io::AsyncWriteExt;
    let (_dir, one, pool, keys) = start(&options).await;
    let (_, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let (mut stream, addr) = one.connect().await;
    stream
        .write_all(
            format!("GET /api/events HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {bob_token}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut text = String::new();
    read_until(&mut stream, &mut text, |t| t.contains("\r\n\r\n")).await;
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let dm = call(
        &one.base,
        &ada_token,
        "dm/invite",
        json!({ "other_user_id": bob }),
    )
    .await;
    let dm_id = dm["id"].as_str().unwrap();
    read_until(&mut stream, &mut text, |t| {
        t.contains("event: dm\n") && t.contains(dm_id)
    })
    .await;
    assert!(!text.contains("\r\n0\r\n"), "no chunk sizes: {text}");
}

/// Logs one `read` event `{seq}` for each of `users` in `tx`, as a writer
/// does.
async fn log_reads(
    tx: &mut sqlx::PgConnection,
    users: &[UserId],
    seqs: std::ops::RangeInclusive<i64>,
) {
    sqlx::query(
        "INSERT INTO events (user_id, kind, payload)
         SELECT u, 'read', jsonb_build_object('dm_id', $3::uuid, 'user_id', u, 'seq', s)
         FROM unnest($1::uuid[]) AS u, generate_series($2::bigint, $4::bigint) AS s
         ORDER BY s, u",
    )
    .bind(users)
    .bind(*seqs.start())
    .bind(Uuid::nil())
    .bind(*seqs.end())
    .execute(&mut *tx)
    .await
    .unwrap();
}

async fn wake(pool: &PgPool) {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(knock::realtime::server::CHANNEL)
        .execute(pool)
        .await
        .unwrap();
}

/// The `seq`s of the next `n` `read` events.
async fn read_seqs(rx: &mut mpsc::UnboundedReceiver<Sse>, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        let (_, kind, data) = next(rx).await;
        assert_eq!(kind, "read", "{data}");
        seqs.push(data["seq"].as_i64().unwrap());
    }
    seqs
}

#[sqlx::test]
async fn the_process_reader_delivers_to_every_stream_in_commit_order_past_a_late_commit(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let mut users = Vec::new();
    let mut streams = Vec::new();
    for i in 0..8 {
        let (id, token) = person(&pool, &keys, &format!("p{i}")).await;
        users.push(id);
        for _ in 0..2 {
            streams.push(subscribe(&one.base, &token, None).await);
        }
    }
    // The first transaction logs seq 1 for everyone and stays open; a later
    // one logs seq 2 and commits first.
    let mut late = pool.begin().await.unwrap();
    log_reads(&mut late, &users, 1..=1).await;
    let mut early = pool.begin().await.unwrap();
    log_reads(&mut early, &users, 2..=2).await;
    early.commit().await.unwrap();
    wake(&pool).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (events, _) in &mut streams {
        assert!(
            events.try_recv().is_err(),
            "nothing overtakes the open transaction"
        );
    }
    late.commit().await.unwrap();
    for (events, _) in &mut streams {
        assert_eq!(read_seqs(events, 2).await, [1, 2], "in commit-safe order");
    }
    for (events, _) in &mut streams {
        assert!(quiet(events).await, "each event once");
    }
}

#[sqlx::test]
async fn a_stream_behind_its_channel_catches_up_from_the_log_or_resyncs(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let (mut bobs, _stream) = subscribe(&one.base, &bob_token, None).await;

    // Five channels' worth at once: read back from the log, none lost.
    let burst = 5 * knock::realtime::server::CHANNEL_CAPACITY as i64;
    let mut tx = pool.begin().await.unwrap();
    log_reads(&mut tx, &[bob], 1..=burst).await;
    tx.commit().await.unwrap();
    wake(&pool).await;
    let got = read_seqs(&mut bobs, burst as usize).await;
    assert_eq!(got, (1..=burst).collect::<Vec<_>>());
    assert!(quiet(&mut bobs).await);

    // More than the log replays: one `resync`, then live events only.
    let too_many = knock::realtime::server::MAX_REPLAY + 10;
    let mut tx = pool.begin().await.unwrap();
    log_reads(&mut tx, &[bob], 1..=too_many).await;
    tx.commit().await.unwrap();
    wake(&pool).await;
    let mut kinds = Vec::new();
    loop {
        let (_, kind, _) = next(&mut bobs).await;
        let resync = kind == "resync";
        kinds.push(kind);
        if resync {
            break;
        }
    }
    assert!(
        kinds.len() <= knock::realtime::server::CHANNEL_CAPACITY + 1,
        "resync comes before the backlog is sent: {} events",
        kinds.len()
    );
    let mut tx = pool.begin().await.unwrap();
    log_reads(&mut tx, &[bob], 0..=0).await;
    tx.commit().await.unwrap();
    wake(&pool).await;
    assert_eq!(
        read_seqs(&mut bobs, 1).await,
        [0],
        "live again, nothing old"
    );
}

#[sqlx::test]
async fn opening_and_closing_streams_in_a_loop_gets_429_and_moves_presence_once(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_ada, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    accepted_dm(&one.base, &ada_token, &bob_token, bob).await;
    let (mut adas, _ada_stream) = subscribe(&one.base, &ada_token, None).await;
    let limit = knock::realtime::server::MAX_STREAMS_PER_USER as usize;
    let open = || {
        reqwest::Client::new()
            .get(format!("{}/api/events", one.base))
            .bearer_auth(&bob_token)
            .send()
    };
    let (mut held, mut statuses) = (Vec::new(), Vec::new());
    for _ in 0..100 {
        let response = open().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 200 {
            held.push(response);
        }
    }
    assert_eq!(statuses[..limit], vec![200; limit][..]);
    assert_eq!(statuses[limit..], vec![429; 100 - limit][..]);
    // Closing them all and opening again at once is refused too: a stream
    // closed moments ago still counts.
    drop(held);
    assert_eq!(open().await.unwrap().status(), 429);
    // Ada sees Bob come online once, and nothing more while he flaps.
    let mut presence = Vec::new();
    while let Ok(Some((_, kind, data))) =
        tokio::time::timeout(Duration::from_secs(3), adas.recv()).await
    {
        if kind == "presence" {
            presence.push(data["online"].clone());
        }
    }
    assert_eq!(presence, [json!(true)]);
}

/// Whether the next `presence` event about `who` says online.
async fn next_presence_of(rx: &mut mpsc::UnboundedReceiver<Sse>, who: UserId) -> bool {
    loop {
        let (_, kind, data) = next_any(rx, Duration::from_secs(10)).await;
        if kind == "presence" && data["user_id"] == json!(who) {
            return data["online"].as_bool().unwrap();
        }
    }
}

#[sqlx::test]
async fn a_block_hides_presence_both_ways_and_an_unblock_restores_it(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (ada, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    accepted_dm(&one.base, &ada_token, &bob_token, bob).await;
    let (_adas, _ada_stream) = subscribe(&one.base, &ada_token, None).await;
    let (mut bobs, _bob_stream) = subscribe(&one.base, &bob_token, None).await;
    let sees_ada = |token: String| {
        let base = one.base.clone();
        async move {
            let people = call(&base, &token, "users/list", json!({})).await;
            people
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == ada.to_string())
                .unwrap()["online"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(sees_ada(bob_token.clone()).await);

    // Ada blocks Bob: he sees her go offline, though her stream stays open.
    call(
        &one.base,
        &ada_token,
        "users/block",
        json!({ "user_id": bob }),
    )
    .await;
    assert!(!next_presence_of(&mut bobs, ada).await);
    assert!(!sees_ada(bob_token.clone()).await);

    // Unblocked: he sees her online again.
    call(
        &one.base,
        &ada_token,
        "users/unblock",
        json!({ "user_id": bob }),
    )
    .await;
    assert!(next_presence_of(&mut bobs, ada).await);
    assert!(sees_ada(bob_token.clone()).await);
}

#[sqlx::test]
async fn pruning_deletes_old_and_stale_ephemeral_events_in_batches_and_moves_the_horizon(
    pool: sqlx::PgPool,
) {
    let keys =
        SessionKeys::dev_blocking(&tempfile::tempdir().unwrap().path().join("k.pem")).unwrap();
    let (ada, _) = person(&pool, &keys, "ada").await;
    // More than two batches of week-old events, in one transaction.
    let old_tx: String = sqlx::query_scalar(
        "WITH made AS (
             INSERT INTO events (user_id, kind, payload, created_at)
             SELECT $1, 'read', '{}'::jsonb, now() - interval '8 days'
               FROM generate_series(1, 2 * $2 + 10)
             RETURNING tx_id)
         SELECT tx_id::text FROM made LIMIT 1",
    )
    .bind(ada)
    .bind(knock::realtime::server::PRUNE_BATCH)
    .fetch_one(&pool)
    .await
    .unwrap();
    // Typing hints two minutes old, and what must stay.
    sqlx::query(
        "INSERT INTO events (user_id, kind, payload, created_at)
         SELECT $1, 'typing', '{}'::jsonb, now() - interval '2 minutes'
           FROM generate_series(1, $2 + 5)",
    )
    .bind(ada)
    .bind(knock::realtime::server::PRUNE_BATCH)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (user_id, kind, payload)
         VALUES ($1, 'read', '{}'), ($1, 'typing', '{}')",
    )
    .bind(ada)
    .execute(&pool)
    .await
    .unwrap();

    let batch = knock::realtime::server::PRUNE_BATCH as u64;
    let pruned = knock::realtime::server::prune(&pool).await.unwrap();
    assert_eq!(pruned, (2 * batch + 10) + (batch + 5));
    let left: Vec<String> = sqlx::query_scalar("SELECT kind FROM events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["read", "typing"]);
    let horizon: String = sqlx::query_scalar("SELECT pruned_through::text FROM events_horizon")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(horizon, old_tx);
}

#[sqlx::test]
async fn a_write_transaction_left_open_is_named_as_what_holds_delivery(pool: sqlx::PgPool) {
    let mut held = pool.begin().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *held)
        .await
        .unwrap();
    // Reading does not hold the log back; writing does.
    let readers = knock::realtime::server::open_writers(&pool).await.unwrap();
    assert!(!readers.iter().any(|h| h.pid == pid));
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *held)
        .await
        .unwrap();
    let writers = knock::realtime::server::open_writers(&pool).await.unwrap();
    let holder = writers
        .iter()
        .find(|h| h.pid == pid)
        .expect("the open writer is listed");
    assert_eq!(holder.state.as_deref(), Some("idle in transaction"));
    held.rollback().await.unwrap();
}

#[tokio::test]
async fn a_database_restart_under_load_fails_fast_with_503_and_loses_nothing_acknowledged() {
    use knock::server::embedded_postgres::EmbeddedPostgres;
    use std::os::unix::fs::PermissionsExt;
    // The embedded cluster, which the test can stop and start under the
    // server (its directory must let the `postgres` user through as root).
    let dir = tempfile::Builder::new()
        .prefix("knock-pg-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let settings = Settings::from_figment(
        Settings::defaults()
            .merge(Serialized::default("knock.data_dir", dir.path()))
            .merge(Serialized::default("leptos.site-addr", "127.0.0.1:0")),
    )
    .unwrap();
    let app = Application::build(settings).await.expect("start");
    let base = format!("http://{}", app.local_addr());
    let pool = app.pool();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let keys = SessionKeys::dev_blocking(&dir.path().join("dev-session-key.pem")).unwrap();
    let (_, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let dm = accepted_dm(&base, &ada_token, &bob_token, bob).await;
    let (mut bobs, _stream) = subscribe(&base, &bob_token, None).await;

    // Ada sends about eight messages a second throughout (within her
    // rate limit).
    let sending = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let (base, token, dm_id, sending) = (
            base.clone(),
            ada_token.clone(),
            dm["id"].clone(),
            sending.clone(),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acknowledged = Vec::new();
            let mut refused = Vec::new();
            let mut n = 0;
            while sending.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let started = std::time::Instant::now();
                let reply = client
                    .post(format!("{base}/api/messages/send"))
                    .bearer_auth(&token)
                    .json(&json!({ "dm_id": dm_id, "body": format!("m{n}"), "client_id": Uuid::new_v4() }))
                    .send()
                    .await
                    .unwrap();
                let status = reply.status().as_u16();
                if status == 200 {
                    let message: Value = reply.json().await.unwrap();
                    acknowledged.push(message["id"].as_str().unwrap().to_owned());
                } else {
                    refused.push((status, started.elapsed()));
                }
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
            (acknowledged, refused)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Postgres goes away (a fast shutdown ends every session)...
    EmbeddedPostgres::start(dir.path())
        .await
        .expect("adopt the running cluster")
        .stop()
        .await
        .expect("stop");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ...and comes back.
    drop(EmbeddedPostgres::start(dir.path()).await.expect("restart"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    sending.store(false, std::sync::atomic::Ordering::SeqCst);
    let (acknowledged, refused) = sender.await.unwrap();

    assert!(!refused.is_empty(), "some sends fell in the outage");
    for (status, took) in &refused {
        assert_eq!(*status, 503, "{refused:?}");
        assert!(*took < Duration::from_secs(6), "{refused:?}");
    }
    assert!(acknowledged.len() > 10, "{}", acknowledged.len());
    // Every acknowledged message is stored...
    let stored: Vec<String> = sqlx::query_scalar("SELECT id::text FROM messages")
        .fetch_all(&pool)
        .await
        .unwrap();
    for id in &acknowledged {
        assert!(stored.contains(id), "{id} was acknowledged but not stored");
    }
    // ...and reaches Bob's open stream, which stayed up through it all.
    let mut seen = std::collections::HashSet::new();
    while !acknowledged.iter().all(|id| seen.contains(id)) {
        let (_, kind, data) = next_any(&mut bobs, Duration::from_secs(15)).await;
        match kind.as_str() {
            "message" => {
                seen.insert(data["id"].as_str().unwrap().to_owned());
            }
            // Told to refetch: what the conversation then loads counts.
            "resync" => seen.extend(stored.iter().cloned()),
            _ => {}
        }
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}

#[sqlx::test]
async fn last_seen_is_when_the_last_stream_closed_and_only_across_an_active_dm(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let (_dir, one, pool, keys) = start(&options).await;
    let (_ada, ada_token) = person(&pool, &keys, "ada").await;
    let (bob, bob_token) = person(&pool, &keys, "bob").await;
    let (_cat, cat_token) = person(&pool, &keys, "cat").await;
    accepted_dm(&one.base, &ada_token, &bob_token, bob).await;
    // Cat's invite to Bob stays unanswered.
    call(
        &one.base,
        &cat_token,
        "dm/invite",
        json!({ "other_user_id": bob }),
    )
    .await;
    let last_seen = |token: String| {
        let base = one.base.clone();
        async move {
            let dms = call(&base, &token, "dm/list", json!({})).await;
            dms.as_array()
                .unwrap()
                .iter()
                .find(|d| d["other_user"]["id"] == bob.to_string())
                .unwrap()["last_seen_at"]
                .clone()
        }
    };
    assert_eq!(
        last_seen(ada_token.clone()).await,
        json!(null),
        "never seen"
    );

    let (mut adas, _ada_stream) = subscribe(&one.base, &ada_token, None).await;
    let (bobs, bob_stream) = subscribe(&one.base, &bob_token, None).await;
    assert!(next_presence_of(&mut adas, bob).await);
    let closed = time::OffsetDateTime::now_utc();
    bob_stream.abort();
    drop(bobs);

    // Offline once the grace period is over, with the time the stream closed.
    let data = loop {
        let (_, kind, data) = next_any(&mut adas, Duration::from_secs(30)).await;
        if kind == "presence" && data["user_id"] == json!(bob) {
            break data;
        }
    };
    assert_eq!(data["online"], json!(false));
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().expect("an RFC 3339 time"),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let seen = parse(&data["last_seen_at"]);
    assert!(
        (seen - closed).abs() < time::Duration::seconds(3),
        "last seen {seen} is when the stream closed ({closed})"
    );
    assert_eq!(parse(&last_seen(ada_token.clone()).await), seen);
    // The pending invite tells Cat nothing.
    assert_eq!(last_seen(cat_token.clone()).await, json!(null));
}
