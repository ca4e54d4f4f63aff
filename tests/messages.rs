//! Messages through their JSON endpoints (DESIGN §5): sending only in an
//! ACTIVE DM by its members, gapless `seq` under concurrent senders,
//! idempotent retries by `client_id`, body limits, paging and reads.
#![cfg(feature = "ssr")]

mod common;

use axum::http::StatusCode;
use common::{Person, accepted_dm, active, call, person, send_message as send};
use knock::{
    messages::{
        MessageBody,
        group_commit::{MAX_IN_FLIGHT, Outgoing, SendError},
    },
    server::state::AppState,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

async fn count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_message_gets_the_next_seq_and_both_members_list_it(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let first = send(&state, &ada, &dm, "  hello Bob  ", Uuid::new_v4()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let first = first.json();
    assert_eq!(
        (first["seq"].as_i64(), first["body"].as_str()),
        (Some(1), Some("hello Bob"))
    );
    let second = send(&state, &bob, &dm, "hi Ada", Uuid::new_v4())
        .await
        .json();
    assert_eq!(second["seq"], 2);
    for who in [&ada, &bob] {
        let listed = call(&state, Some(who), "messages/list", json!({ "dm_id": dm }))
            .await
            .json();
        let bodies: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["body"].as_str().unwrap())
            .collect();
        assert_eq!(bodies, ["hello Bob", "hi Ada"]);
    }
}

#[sqlx::test]
async fn a_retry_with_the_same_client_id_returns_the_same_message(pool: PgPool) {
    let (state, ada, _, dm) = active(&pool).await;
    let client_id = Uuid::new_v4();
    let first = send(&state, &ada, &dm, "once", client_id).await.json();
    let again = send(&state, &ada, &dm, "once", client_id).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), first);
    assert_eq!(count(&pool).await, 1);
}

#[sqlx::test]
async fn refused_sends_change_nothing(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let eve = person(&pool, "eve").await;
    let cases = [
        (&ada, "", StatusCode::BAD_REQUEST),
        (&ada, " \n\t ", StatusCode::BAD_REQUEST),
        (&ada, &"x".repeat(4001), StatusCode::BAD_REQUEST),
        (&ada, &"x".repeat(70_000), StatusCode::PAYLOAD_TOO_LARGE),
        (&eve, "let me in", StatusCode::NOT_FOUND),
    ];
    for (who, body, status) in cases {
        let reply = send(&state, who, &dm, body, Uuid::new_v4()).await;
        assert_eq!(reply.status, status, "{} chars", body.len());
    }
    assert_eq!(
        send(&state, &bob, &dm, &"é".repeat(4000), Uuid::new_v4())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(count(&pool).await, 1, "only the 4000-character message");
}

#[sqlx::test]
async fn a_client_id_used_in_one_dm_is_refused_in_another(pool: PgPool) {
    let (state, ada, _, dm) = active(&pool).await;
    let cy = person(&pool, "cy").await;
    let other = accepted_dm(&state, &ada, &cy).await;
    let client_id = Uuid::new_v4();
    assert_eq!(
        send(&state, &ada, &dm, "to bob", client_id).await.status,
        StatusCode::OK
    );
    let reply = send(&state, &ada, &other, "to cy", client_id).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(count(&pool).await, 1, "nothing stored for cy");
}

#[sqlx::test]
async fn nothing_can_be_sent_before_the_dm_is_active(pool: PgPool) {
    let state = common::state(&pool);
    let (ada, bob) = (person(&pool, "ada").await, person(&pool, "bob").await);
    let dm = call(
        &state,
        Some(&ada),
        "dm/invite",
        json!({ "other_user_id": bob.id }),
    )
    .await
    .json();
    assert_eq!(
        send(&state, &ada, &dm["id"], "too soon", Uuid::new_v4())
            .await
            .status,
        StatusCode::CONFLICT
    );
    call(
        &state,
        Some(&bob),
        "dm/decline",
        json!({ "dm_id": dm["id"] }),
    )
    .await;
    assert_eq!(
        send(&state, &bob, &dm["id"], "declined", Uuid::new_v4())
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(count(&pool).await, 0);
}

#[sqlx::test]
async fn a_blocked_member_cannot_send(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    call(
        &state,
        Some(&bob),
        "users/block",
        json!({ "user_id": ada.id }),
    )
    .await;
    assert_eq!(
        send(&state, &ada, &dm, "hello?", Uuid::new_v4())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(count(&pool).await, 0);
}

#[sqlx::test]
async fn concurrent_senders_get_gapless_seqs_in_commit_order(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let mut tasks = Vec::new();
    for n in 0..40 {
        let (state, who, dm) = (
            state.clone(),
            if n % 2 == 0 { ada.clone() } else { bob.clone() },
            dm.clone(),
        );
        tasks.push(tokio::spawn(async move {
            send(&state, &who, &dm, &format!("m{n}"), Uuid::new_v4())
                .await
                .status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
}

#[sqlx::test]
async fn history_pages_backwards_and_forwards_by_seq(pool: PgPool) {
    let (state, ada, _, dm) = active(&pool).await;
    for n in 1..=7 {
        send(&state, &ada, &dm, &format!("m{n}"), Uuid::new_v4()).await;
    }
    let page = |body: Value| {
        let state = state.clone();
        let ada = ada.clone();
        async move {
            let reply = call(&state, Some(&ada), "messages/list", body).await.json();
            reply
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["seq"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(json!({ "dm_id": dm, "limit": 3 })).await, [5, 6, 7]);
    assert_eq!(
        page(json!({ "dm_id": dm, "before_seq": 5, "limit": 3 })).await,
        [2, 3, 4]
    );
    assert_eq!(page(json!({ "dm_id": dm, "after_seq": 5 })).await, [6, 7]);
}

#[sqlx::test]
async fn only_members_list_messages_and_an_empty_page_is_no_error(pool: PgPool) {
    let (state, ada, _, dm) = active(&pool).await;
    send(&state, &ada, &dm, "m1", Uuid::new_v4()).await;
    let eve = person(&pool, "eve").await;
    for body in [
        json!({ "dm_id": dm }),
        json!({ "dm_id": dm, "before_seq": 5 }),
        json!({ "dm_id": dm, "after_seq": 0 }),
    ] {
        let reply = call(&state, Some(&eve), "messages/list", body.clone()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{body}");
    }
    let unknown = json!({ "dm_id": Uuid::new_v4() });
    let reply = call(&state, Some(&ada), "messages/list", unknown).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    for body in [
        json!({ "dm_id": dm, "after_seq": 1 }),
        json!({ "dm_id": dm, "before_seq": 1 }),
    ] {
        let reply = call(&state, Some(&ada), "messages/list", body.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{body}");
        assert_eq!(reply.json(), json!([]), "{body}");
    }
}

#[sqlx::test]
async fn reading_clears_the_unread_count(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    for n in 1..=3 {
        send(&state, &ada, &dm, &format!("m{n}"), Uuid::new_v4()).await;
    }
    let unread = |who: Person| {
        let state = state.clone();
        async move {
            call(&state, Some(&who), "dm/list", json!({})).await.json()[0]["unread_count"].as_i64()
        }
    };
    assert_eq!(unread(bob.clone()).await, Some(3));
    assert_eq!(
        unread(ada.clone()).await,
        Some(0),
        "my own messages are read"
    );
    assert_eq!(
        call(
            &state,
            Some(&bob),
            "messages/read",
            json!({ "dm_id": dm, "seq": 2 })
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(unread(bob.clone()).await, Some(1));
    // Past the end is capped; backwards is ignored.
    call(
        &state,
        Some(&bob),
        "messages/read",
        json!({ "dm_id": dm, "seq": 99 }),
    )
    .await;
    call(
        &state,
        Some(&bob),
        "messages/read",
        json!({ "dm_id": dm, "seq": 1 }),
    )
    .await;
    assert_eq!(unread(bob).await, Some(0));
    let eve = person(&pool, "eve").await;
    assert_eq!(
        call(
            &state,
            Some(&eve),
            "messages/read",
            json!({ "dm_id": dm, "seq": 1 })
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test]
async fn a_sender_edits_and_deletes_their_own_message(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let sent = send(&state, &ada, &dm, "helo", Uuid::new_v4()).await.json();
    let edited = call(
        &state,
        Some(&ada),
        "messages/edit",
        json!({ "message_id": sent["id"], "body": " hello " }),
    )
    .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);
    let edited = edited.json();
    assert_eq!(
        (edited["body"].as_str(), edited["seq"].as_i64()),
        (Some("hello"), Some(1))
    );
    assert!(edited["edited_at"].is_string());
    assert_eq!(edited["deleted"], false);

    let deleted = call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": sent["id"] }),
    )
    .await
    .json();
    assert_eq!(
        (deleted["body"].as_str(), deleted["deleted"].as_bool()),
        (Some(""), Some(true))
    );
    // Bob sees the place kept, the text gone; deleting again changes nothing.
    let listed = call(&state, Some(&bob), "messages/list", json!({ "dm_id": dm }))
        .await
        .json();
    assert_eq!(listed[0]["deleted"], true);
    assert_eq!(listed[0]["body"], "");
    let again = call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": sent["id"] }),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["deleted"], true);
}

#[sqlx::test]
async fn edits_and_deletes_that_are_not_allowed_change_nothing(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let sent = send(&state, &ada, &dm, "mine", Uuid::new_v4()).await.json();
    let carol = person(&pool, "carol").await;
    let cases = [
        (
            &bob,
            "messages/edit",
            json!({ "message_id": sent["id"], "body": "theirs" }),
            StatusCode::FORBIDDEN,
        ),
        (
            &bob,
            "messages/delete",
            json!({ "message_id": sent["id"] }),
            StatusCode::FORBIDDEN,
        ),
        (
            &carol,
            "messages/edit",
            json!({ "message_id": sent["id"], "body": "x" }),
            StatusCode::NOT_FOUND,
        ),
        (
            &carol,
            "messages/delete",
            json!({ "message_id": sent["id"] }),
            StatusCode::NOT_FOUND,
        ),
        (
            &ada,
            "messages/edit",
            json!({ "message_id": sent["id"], "body": "   " }),
            StatusCode::BAD_REQUEST,
        ),
        (
            &ada,
            "messages/edit",
            json!({ "message_id": sent["id"], "body": "x".repeat(4001) }),
            StatusCode::BAD_REQUEST,
        ),
        (
            &ada,
            "messages/edit",
            json!({ "message_id": Uuid::new_v4(), "body": "x" }),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (who, endpoint, body, status) in cases {
        let reply = call(&state, Some(who), endpoint, body.clone()).await;
        assert_eq!(reply.status, status, "{endpoint} {body}: {}", reply.body);
        assert!(reply.json()["error"]["message"].is_string());
    }
    let listed = call(&state, Some(&ada), "messages/list", json!({ "dm_id": dm }))
        .await
        .json();
    assert_eq!(
        (listed[0]["body"].as_str(), listed[0]["edited_at"].is_null()),
        (Some("mine"), true)
    );

    // A deleted message cannot be edited back.
    call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": sent["id"] }),
    )
    .await;
    let reply = call(
        &state,
        Some(&ada),
        "messages/edit",
        json!({ "message_id": sent["id"], "body": "back" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}

#[sqlx::test]
async fn the_read_receipt_shows_how_far_the_other_member_read(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    for body in ["one", "two", "three"] {
        send(&state, &ada, &dm, body, Uuid::new_v4()).await;
    }
    let receipt = |who| call(&state, Some(who), "messages/seen", json!({ "dm_id": dm }));
    assert_eq!(receipt(&ada).await.json()["seq"], 0);
    call(
        &state,
        Some(&bob),
        "messages/read",
        json!({ "dm_id": dm, "seq": 2 }),
    )
    .await;
    assert_eq!(receipt(&ada).await.json()["seq"], 2);
    // Ada's own sends count as read by her.
    assert_eq!(receipt(&bob).await.json()["seq"], 3);
    let carol = person(&pool, "carol").await;
    assert_eq!(receipt(&carol).await.status, StatusCode::NOT_FOUND);
}

#[sqlx::test]
async fn typing_is_refused_outside_an_active_dm(pool: PgPool) {
    let state = common::state(&pool);
    let (ada, bob, carol) = (
        person(&pool, "ada").await,
        person(&pool, "bob").await,
        person(&pool, "carol").await,
    );
    let dm = call(
        &state,
        Some(&ada),
        "dm/invite",
        json!({ "other_user_id": bob.id }),
    )
    .await
    .json();
    for who in [&ada, &bob] {
        let reply = call(&state, Some(who), "typing", json!({ "dm_id": dm["id"] })).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    }
    let reply = call(&state, Some(&carol), "typing", json!({ "dm_id": dm["id"] })).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let typing: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'typing'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(typing, 0);
}

/// Holds DM `dm`'s row lock (as an accept in progress does) and starts one
/// send per batch that can be written at once: each waits for the lock,
/// so the sends after them queue. Returns the held transaction and the
/// waiting sends.
async fn busy_writers(
    state: &AppState,
    pool: &PgPool,
    who: &Person,
    dm: &Value,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    Vec<tokio::task::JoinHandle<common::Reply>>,
) {
    let mut held = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM dms WHERE id = $1::uuid FOR UPDATE")
        .bind(dm.as_str().unwrap())
        .execute(&mut *held)
        .await
        .unwrap();
    let mut writers = Vec::new();
    for n in 0..MAX_IN_FLIGHT {
        let (state, who, dm) = (state.clone(), who.clone(), dm.clone());
        writers.push(tokio::spawn(async move {
            send(&state, &who, &dm, &format!("first {n}"), Uuid::new_v4()).await
        }));
        // Each in a batch of its own: wait until it waits for a lock.
        while waiting_for_locks(pool).await < n as i64 + 1 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    (held, writers)
}

/// A pool on `pool`'s database with room for the busy writers.
async fn roomy(pool: PgPool) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap()
}

async fn waiting_for_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn until_queued(state: &AppState, n: usize) {
    while state.sends.queued() < n {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[sqlx::test]
async fn sends_that_queue_while_others_are_written_share_one_commit(pool: PgPool) {
    let pool = roomy(pool).await;
    let (state, ada, bob, dm) = active(&pool).await;
    let cy = person(&pool, "cy").await;
    let other_dm = accepted_dm(&state, &ada, &cy).await;
    let (held, writers) = busy_writers(&state, &pool, &ada, &dm).await;
    let mut queued = Vec::new();
    for n in 0..10 {
        let (state, dm) = (
            state.clone(),
            if n % 2 == 0 { &dm } else { &other_dm }.clone(),
        );
        let who = if n % 4 == 0 { bob.clone() } else { ada.clone() };
        queued.push(tokio::spawn(async move {
            send(&state, &who, &dm, &format!("queued {n}"), Uuid::new_v4()).await
        }));
    }
    until_queued(&state, 10).await;
    held.commit().await.unwrap();
    for task in writers.into_iter().chain(queued) {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }

    // Gapless per DM, the queued after the first; the ten queued sends
    // were one transaction (one commit).
    let rows: Vec<(String, i64, String)> =
        sqlx::query_as("SELECT dm_id::text, seq, body FROM messages ORDER BY dm_id, seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let of = |dm: &Value, from: usize| -> (Vec<i64>, Vec<String>) {
        let (seqs, mut bodies): (Vec<i64>, Vec<String>) = rows
            .iter()
            .filter(|r| r.0 == dm.as_str().unwrap())
            .map(|r| (r.1, r.2.clone()))
            .unzip();
        bodies[from..].sort();
        (seqs, bodies)
    };
    let busy = MAX_IN_FLIGHT as i64;
    let mut want: Vec<String> = (0..busy).map(|n| format!("first {n}")).collect();
    want.sort();
    want.extend((0..10).step_by(2).map(|n| format!("queued {n}")));
    assert_eq!(of(&dm, MAX_IN_FLIGHT), ((1..=busy + 5).collect(), want));
    let want: Vec<String> = (1..10).step_by(2).map(|n| format!("queued {n}")).collect();
    assert_eq!(of(&other_dm, 0), ((1..=5).collect(), want));
    let commits: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM messages WHERE body LIKE 'queued %'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(commits, 1);
}

#[sqlx::test]
async fn a_send_that_fails_in_a_batch_fails_alone(pool: PgPool) {
    let pool = roomy(pool).await;
    let (state, ada, bob, dm) = active(&pool).await;
    let dm_id: knock::ids::DmId = dm.as_str().unwrap().parse().unwrap();
    // A rule only the database holds, so that one send in the batch fails
    // there (every rule of the server's own is checked before the queue).
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT no_boom CHECK (body <> 'boom')")
        .execute(&pool)
        .await
        .unwrap();
    let (held, writers) = busy_writers(&state, &pool, &ada, &dm).await;
    let mut queued = Vec::new();
    for n in 0..5 {
        let (state, who, dm) = (state.clone(), bob.clone(), dm.clone());
        queued.push(tokio::spawn(async move {
            send(&state, &who, &dm, &format!("queued {n}"), Uuid::new_v4()).await
        }));
    }
    until_queued(&state, 5).await;
    // The database refuses this one, inside the batch it is in.
    let bad = {
        let state = state.clone();
        tokio::spawn(async move {
            let outgoing = Outgoing {
                dm_id,
                sender_id: ada.id,
                body: Some(MessageBody::parse("boom").unwrap()),
                reply_to_id: None,
                attachment_id: None,
                client_id: Uuid::new_v4(),
            };
            state.sends.send(&state.pool, outgoing).await
        })
    };
    until_queued(&state, 6).await;
    held.commit().await.unwrap();
    for task in writers.into_iter().chain(queued) {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let Err(SendError::Database(error)) = bad.await.unwrap() else {
        panic!("the body is refused by the database");
    };
    assert_eq!(
        error.as_database_error().and_then(|e| e.constraint()),
        Some("no_boom")
    );
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=(MAX_IN_FLIGHT as i64 + 5)).collect::<Vec<_>>());
}

#[sqlx::test]
async fn every_refusal_holds_inside_a_batch_and_changes_nothing(pool: PgPool) {
    let pool = roomy(pool).await;
    let (state, ada, bob, dm) = active(&pool).await;
    let (cy, dan, fay, gus) = (
        person(&pool, "cy").await,
        person(&pool, "dan").await,
        person(&pool, "fay").await,
        person(&pool, "gus").await,
    );
    // Ada invited Cy (not ACTIVE yet); Gus blocked Fay in their ACTIVE DM.
    let invited = call(
        &state,
        Some(&ada),
        "dm/invite",
        json!({ "other_user_id": cy.id }),
    )
    .await
    .json()["id"]
        .clone();
    let blocked = accepted_dm(&state, &fay, &gus).await;
    call(
        &state,
        Some(&gus),
        "users/block",
        json!({ "user_id": fay.id }),
    )
    .await;
    let used = Uuid::new_v4();
    let earlier = send(&state, &ada, &dm, "earlier", used).await.json();

    let (held, writers) = busy_writers(&state, &pool, &ada, &dm).await;
    let cases: Vec<(&Person, &Value, &str, Uuid, StatusCode)> = vec![
        (&ada, &dm, "earlier", used, StatusCode::OK),
        (&ada, &invited, "reused", used, StatusCode::BAD_REQUEST),
        (&dan, &dm, "not mine", Uuid::new_v4(), StatusCode::NOT_FOUND),
        (
            &ada,
            &invited,
            "too soon",
            Uuid::new_v4(),
            StatusCode::CONFLICT,
        ),
        (
            &fay,
            &blocked,
            "hello?",
            Uuid::new_v4(),
            StatusCode::FORBIDDEN,
        ),
        (&bob, &dm, "ok one", Uuid::new_v4(), StatusCode::OK),
        (&ada, &dm, "ok two", Uuid::new_v4(), StatusCode::OK),
    ];
    let mut queued = Vec::new();
    for (who, to, body, client_id, _) in &cases {
        let (state, who, to, body, client_id) = (
            state.clone(),
            (*who).clone(),
            (*to).clone(),
            body.to_string(),
            *client_id,
        );
        queued.push(tokio::spawn(async move {
            send(&state, &who, &to, &body, client_id).await
        }));
    }
    until_queued(&state, cases.len()).await;
    held.commit().await.unwrap();
    for task in writers {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    let mut replies = Vec::new();
    for (task, case) in queued.into_iter().zip(&cases) {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, case.4, "{}: {}", case.2, reply.body);
        replies.push(reply);
    }

    // The retry is the earlier message; the refused sends left nothing;
    // the two new ones follow the busy writers' in one commit.
    assert_eq!(replies[0].json()["id"], earlier["id"]);
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, body FROM messages WHERE dm_id = $1::uuid ORDER BY seq")
            .bind(dm.as_str().unwrap())
            .fetch_all(&pool)
            .await
            .unwrap();
    let busy = MAX_IN_FLIGHT as i64;
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=busy + 3).collect::<Vec<_>>()
    );
    let mut last: Vec<&str> = rows[rows.len() - 2..]
        .iter()
        .map(|r| r.1.as_str())
        .collect();
    last.sort();
    assert_eq!(last, ["ok one", "ok two"]);
    assert_eq!(count(&pool).await, busy + 3);
    let commits: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM messages WHERE body LIKE 'ok %'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(commits, 1, "one batch");
}

#[sqlx::test]
async fn a_body_with_a_control_character_is_400_and_stores_nothing(pool: PgPool) {
    let (state, ada, _, dm) = active(&pool).await;
    for body in ["nul \0 here", "escape \u{1b}[31m", "bell \u{7}"] {
        let reply = send(&state, &ada, &dm, body, Uuid::new_v4()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body:?}: {}",
            reply.body
        );
        assert_eq!(reply.json()["error"]["code"], "bad_request");
    }
    assert_eq!(count(&pool).await, 0);

    // Newlines and tabs stay; a form's CRLF line breaks become newlines.
    let sent = send(&state, &ada, &dm, "one\r\ntwo\tthree\rfour", Uuid::new_v4()).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    assert_eq!(sent.json()["body"], "one\ntwo\tthree\nfour");

    // An edit is held to the same rule.
    let edit = call(
        &state,
        Some(&ada),
        "messages/edit",
        json!({ "message_id": sent.json()["id"], "body": "edited \0" }),
    )
    .await;
    assert_eq!(edit.status, StatusCode::BAD_REQUEST, "{}", edit.body);
}

#[sqlx::test]
async fn a_nul_send_among_concurrent_sends_fails_alone(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let sends = (0..12).map(|i| {
        let (state, who, dm) = (
            state.clone(),
            if i % 2 == 0 { ada.clone() } else { bob.clone() },
            dm.clone(),
        );
        tokio::spawn(async move {
            let body = if i == 5 {
                "bad \0".to_owned()
            } else {
                format!("m{i}")
            };
            send(&state, &who, &dm, &body, Uuid::new_v4()).await.status
        })
    });
    let mut statuses = Vec::new();
    for task in sends {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(statuses[5], StatusCode::BAD_REQUEST);
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        11,
        "{statuses:?}"
    );
    assert_eq!(count(&pool).await, 11);
}

#[sqlx::test]
async fn a_limit_outside_1_to_100_or_a_negative_seq_is_400(pool: PgPool) {
    let (state, ada, _, dm) = active(&pool).await;
    send(&state, &ada, &dm, "m1", Uuid::new_v4()).await;
    let ok = call(
        &state,
        Some(&ada),
        "messages/list",
        json!({ "dm_id": dm, "limit": 100 }),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    for body in [
        json!({ "dm_id": dm, "limit": 0 }),
        json!({ "dm_id": dm, "limit": 101 }),
        json!({ "dm_id": dm, "limit": -5 }),
        json!({ "dm_id": dm, "before_seq": -1 }),
        json!({ "dm_id": dm, "after_seq": -1 }),
        json!({ "dm_id": dm, "limit": 1e30 }),
    ] {
        let reply = call(&state, Some(&ada), "messages/list", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
    }
    let read = call(
        &state,
        Some(&ada),
        "messages/read",
        json!({ "dm_id": dm, "seq": -1 }),
    )
    .await;
    assert_eq!(read.status, StatusCode::BAD_REQUEST, "{}", read.body);
}

#[sqlx::test]
async fn sends_past_the_burst_are_429_and_change_nothing(pool: PgPool) {
    let (mut state, ada, bob, dm) = active(&pool).await;
    state.send_limiter = std::sync::Arc::new(knock::messages::server::send_limiter(1, 3));
    for n in 0..3 {
        let reply = send(&state, &ada, &dm, &format!("hi {n}"), Uuid::new_v4()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = send(&state, &ada, &dm, "one too many", Uuid::new_v4()).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.json()["error"]["code"], "too_many_requests");
    // Edits and deletes count too.
    let first: Uuid = sqlx::query_scalar("SELECT id FROM messages WHERE seq = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let edit = call(
        &state,
        Some(&ada),
        "messages/edit",
        json!({ "message_id": first, "body": "changed" }),
    )
    .await;
    assert_eq!(edit.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(count(&pool).await, 3);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(bodies, ["hi 0", "hi 1", "hi 2"]);
    // The limit is per user: Bob still sends.
    let reply = send(&state, &bob, &dm, "my turn", Uuid::new_v4()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test]
async fn a_send_whose_request_went_away_while_queued_is_not_written(pool: PgPool) {
    let pool = roomy(pool).await;
    let (state, ada, bob, dm) = active(&pool).await;
    let (held, writers) = busy_writers(&state, &pool, &ada, &dm).await;
    let gone = {
        let (state, bob, dm) = (state.clone(), bob.clone(), dm.clone());
        tokio::spawn(async move { send(&state, &bob, &dm, "never mind", Uuid::new_v4()).await })
    };
    until_queued(&state, 1).await;
    // The client gives up (or the request times out): its future is dropped.
    gone.abort();
    let _ = gone.await;
    let (state2, bob2, dm2) = (state.clone(), bob.clone(), dm.clone());
    let kept =
        tokio::spawn(async move { send(&state2, &bob2, &dm2, "still here", Uuid::new_v4()).await });
    until_queued(&state, 2).await;
    held.commit().await.unwrap();
    for task in writers.into_iter().chain([kept]) {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(!bodies.iter().any(|b| b == "never mind"), "{bodies:?}");
    assert_eq!(bodies.len(), MAX_IN_FLIGHT + 1, "{bodies:?}");
}

#[sqlx::test]
async fn a_full_send_queue_answers_503_at_once_and_keeps_what_it_holds(pool: PgPool) {
    use knock::messages::group_commit::MAX_QUEUED;
    let pool = roomy(pool).await;
    let (mut state, ada, bob, dm) = active(&pool).await;
    state.send_limiter =
        std::sync::Arc::new(knock::messages::server::send_limiter(100_000, 100_000));
    let (held, writers) = busy_writers(&state, &pool, &ada, &dm).await;
    let mut queued = Vec::new();
    for n in 0..MAX_QUEUED {
        let (state, who, dm) = (state.clone(), bob.clone(), dm.clone());
        queued.push(tokio::spawn(async move {
            send(&state, &who, &dm, &format!("queued {n}"), Uuid::new_v4()).await
        }));
    }
    until_queued(&state, MAX_QUEUED).await;
    let reply = send(&state, &ada, &dm, "no room", Uuid::new_v4()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["error"]["code"], "unavailable");
    held.commit().await.unwrap();
    for task in writers.into_iter().chain(queued) {
        assert_eq!(task.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(count(&pool).await, (MAX_IN_FLIGHT + MAX_QUEUED) as i64);
}

#[sqlx::test]
async fn a_dm_whose_other_member_deleted_their_account_is_read_only(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let mine = send(&state, &ada, &dm, "hello", Uuid::new_v4())
        .await
        .json();
    send(&state, &bob, &dm, "hi", Uuid::new_v4()).await;
    knock::users::server::tombstone(&pool, "user_bob")
        .await
        .unwrap();

    let reply = send(&state, &ada, &dm, "are you there?", Uuid::new_v4()).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    for (endpoint, body) in [
        (
            "messages/edit",
            json!({ "message_id": mine["id"], "body": "changed" }),
        ),
        ("messages/delete", json!({ "message_id": mine["id"] })),
        ("typing", json!({ "dm_id": dm })),
    ] {
        let reply = call(&state, Some(&ada), endpoint, body).await;
        assert_eq!(
            reply.status,
            StatusCode::CONFLICT,
            "{endpoint}: {}",
            reply.body
        );
    }
    // History stays readable.
    let history = call(&state, Some(&ada), "messages/list", json!({ "dm_id": dm })).await;
    assert_eq!(history.status, StatusCode::OK);
    let history = history.json();
    let bodies: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["hello", "hi"]);
    assert_eq!(count(&pool).await, 2);
}

/// The kinds of the events logged for `who` after log id `after`.
async fn events_for(pool: &PgPool, who: &Person, after: i64) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM events WHERE user_id = $1 AND id > $2 ORDER BY id")
        .bind(who.id)
        .bind(after)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn last_event_id(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn after_a_block_nothing_the_blocked_member_does_reaches_the_blocker(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let bobs = send(&state, &bob, &dm, "before", Uuid::new_v4())
        .await
        .json();
    let block = call(
        &state,
        Some(&ada),
        "users/block",
        json!({ "user_id": bob.id }),
    )
    .await;
    assert_eq!(block.status, StatusCode::OK);
    let mark = last_event_id(&pool).await;

    let reply = send(&state, &bob, &dm, "hello?", Uuid::new_v4()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    for (endpoint, body) in [
        (
            "messages/edit",
            json!({ "message_id": bobs["id"], "body": "changed" }),
        ),
        ("messages/delete", json!({ "message_id": bobs["id"] })),
    ] {
        let reply = call(&state, Some(&bob), endpoint, body).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{endpoint}: {}",
            reply.body
        );
    }
    // Typing and reading answer as usual, and tell the blocker nothing.
    let typing = call(&state, Some(&bob), "typing", json!({ "dm_id": dm })).await;
    assert_eq!(typing.status, StatusCode::OK);
    let ada_sends = send(&state, &ada, &dm, "still me", Uuid::new_v4()).await;
    assert_eq!(ada_sends.status, StatusCode::OK);
    let read = call(
        &state,
        Some(&bob),
        "messages/read",
        json!({ "dm_id": dm, "seq": 2 }),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    // Ada's log has her own message only; Bob's has it and his read.
    assert_eq!(events_for(&pool, &ada, mark).await, ["message"]);
    assert_eq!(events_for(&pool, &bob, mark).await, ["message", "read"]);
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM messages ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(bodies, ["before", "still me"]);

    // Unblocking restores the DM as it was.
    let unblock = call(
        &state,
        Some(&ada),
        "users/unblock",
        json!({ "user_id": bob.id }),
    )
    .await;
    assert_eq!(unblock.status, StatusCode::OK);
    let mark = last_event_id(&pool).await;
    let typing = call(&state, Some(&bob), "typing", json!({ "dm_id": dm })).await;
    assert_eq!(typing.status, StatusCode::OK);
    let reply = send(&state, &bob, &dm, "hello again", Uuid::new_v4()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(events_for(&pool, &ada, mark).await, ["typing", "message"]);
}

#[sqlx::test]
async fn the_composer_form_posted_twice_stores_one_message(pool: PgPool) {
    use axum::{body::Body, http::Request};
    let (state, ada, bob, dm) = active(&pool).await;
    let client_id = Uuid::new_v4();
    let form = format!(
        "dm_id={}&other_user_id={}&body=hello+there&client_id={client_id}",
        dm.as_str().unwrap(),
        bob.id
    );
    for _ in 0..2 {
        let request = Request::post("/api/messages/send-form")
            .header("content-type", "application/x-www-form-urlencoded")
            // What a browser's form post accepts.
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .header("authorization", format!("Bearer {}", ada.token))
            .body(Body::from(form.clone()))
            .unwrap();
        let reply = common::send(state.clone(), request).await;
        assert!(
            reply.status.is_redirection(),
            "{} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.headers["location"], format!("/chat/{}", bob.id));
    }
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM messages")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(bodies, ["hello there"]);
}

/// The `reaction` events in `who`'s log, oldest first.
async fn reaction_events(pool: &PgPool, who: &Person) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT payload FROM events WHERE user_id = $1 AND kind = 'reaction' ORDER BY id",
    )
    .bind(who.id)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test]
async fn a_reaction_toggles_shows_in_the_list_and_reaches_both_members(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let message = send(&state, &ada, &dm, "lunch?", Uuid::new_v4())
        .await
        .json();
    let react = |who: Person, emoji: &str| {
        let body = json!({ "message_id": message["id"], "emoji": emoji });
        let state = state.clone();
        async move { call(&state, Some(&who), "messages/react", body).await }
    };
    let reply = react(bob.clone(), "👍").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!([{ "emoji": "👍", "user_ids": [bob.id] }])
    );
    react(ada.clone(), "👍").await;
    let reply = react(ada.clone(), "❤️").await;
    assert_eq!(
        reply.json(),
        json!([
            { "emoji": "👍", "user_ids": [bob.id, ada.id] },
            { "emoji": "❤️", "user_ids": [ada.id] }
        ])
    );
    // Again: taken back.
    let reply = react(bob.clone(), "👍").await;
    let now = json!([
        { "emoji": "👍", "user_ids": [ada.id] },
        { "emoji": "❤️", "user_ids": [ada.id] }
    ]);
    assert_eq!(reply.json(), now);
    // The list shows them; each member's stream got each change.
    let listed = call(&state, Some(&bob), "messages/list", json!({ "dm_id": dm }))
        .await
        .json();
    assert_eq!(listed[0]["reactions"], now);
    for who in [&ada, &bob] {
        let events = reaction_events(&pool, who).await;
        assert_eq!(events.len(), 4);
        assert_eq!(events[3]["reactions"], now);
        assert_eq!(events[3]["message_id"], message["id"]);
    }
    // Deleting the message takes its reactions with it.
    let deleted = call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": message["id"] }),
    )
    .await
    .json();
    assert!(deleted.get("reactions").is_none(), "{deleted}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test]
async fn reactions_that_are_not_allowed_change_nothing(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let cy = person(&pool, "cy").await;
    let message = send(&state, &ada, &dm, "hello", Uuid::new_v4())
        .await
        .json();
    let gone = send(&state, &ada, &dm, "oops", Uuid::new_v4()).await.json();
    call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": gone["id"] }),
    )
    .await;
    let cases = [
        (
            &bob,
            json!({ "message_id": message["id"], "emoji": "🦀" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            &bob,
            json!({ "message_id": message["id"], "emoji": "" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            &bob,
            json!({ "message_id": message["id"] }),
            StatusCode::BAD_REQUEST,
        ),
        (
            &bob,
            json!({ "message_id": "not-a-uuid", "emoji": "👍" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            &cy,
            json!({ "message_id": message["id"], "emoji": "👍" }),
            StatusCode::NOT_FOUND,
        ),
        (
            &bob,
            json!({ "message_id": Uuid::new_v4(), "emoji": "👍" }),
            StatusCode::NOT_FOUND,
        ),
        (
            &bob,
            json!({ "message_id": gone["id"], "emoji": "👍" }),
            StatusCode::CONFLICT,
        ),
    ];
    for (who, body, status) in cases {
        let reply = call(&state, Some(who), "messages/react", body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
    let reply = call(
        &state,
        None,
        "messages/react",
        json!({ "message_id": message["id"], "emoji": "👍" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Across a block, either way: 403.
    call(
        &state,
        Some(&bob),
        "users/block",
        json!({ "user_id": ada.id }),
    )
    .await;
    for who in [&ada, &bob] {
        let reply = call(
            &state,
            Some(who),
            "messages/react",
            json!({ "message_id": message["id"], "emoji": "👍" }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    }
    call(
        &state,
        Some(&bob),
        "users/unblock",
        json!({ "user_id": ada.id }),
    )
    .await;

    // The other member deleted their account: read-only.
    knock::users::server::tombstone(&pool, "user_bob")
        .await
        .unwrap();
    let reply = call(
        &state,
        Some(&ada),
        "messages/react",
        json!({ "message_id": message["id"], "emoji": "👍" }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);

    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM reactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    assert!(reaction_events(&pool, &ada).await.is_empty());
}

#[sqlx::test]
async fn search_finds_my_messages_across_dms_newest_first_and_nothing_else(pool: PgPool) {
    let (state, ada, bob, with_bob) = active(&pool).await;
    let (cy, dan) = (person(&pool, "cy").await, person(&pool, "dan").await);
    let with_cy = accepted_dm(&state, &ada, &cy).await;
    let between_others = accepted_dm(&state, &cy, &dan).await;
    send(
        &state,
        &bob,
        &with_bob,
        "The Flat on Main street",
        Uuid::new_v4(),
    )
    .await;
    send(
        &state,
        &ada,
        &with_cy,
        "a flat, or a house?",
        Uuid::new_v4(),
    )
    .await;
    send(
        &state,
        &cy,
        &between_others,
        "my flat is yours",
        Uuid::new_v4(),
    )
    .await;
    let gone = send(&state, &ada, &with_bob, "flat deleted", Uuid::new_v4())
        .await
        .json();
    call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": gone["id"] }),
    )
    .await;
    send(&state, &bob, &with_bob, "flatmate wanted", Uuid::new_v4()).await;
    send(&state, &cy, &with_cy, "Wohnung: die Flat", Uuid::new_v4()).await;

    let search = |body: Value| call(&state, Some(&ada), "messages/search", body);
    let bodies = |hits: &Value| -> Vec<String> {
        hits.as_array()
            .unwrap()
            .iter()
            .map(|h| h["message"]["body"].as_str().unwrap().to_owned())
            .collect()
    };
    // Whole words in any case, newest first; not another pair's, not a
    // deleted one, not "flatmate".
    let hits = search(json!({ "query": "FLAT" })).await;
    assert_eq!(hits.status, StatusCode::OK, "{}", hits.body);
    let hits = hits.json();
    assert_eq!(
        bodies(&hits),
        [
            "Wohnung: die Flat",
            "a flat, or a house?",
            "The Flat on Main street"
        ]
    );
    assert_eq!(hits[0]["other_user"]["id"], json!(cy.id));
    assert_eq!(hits[2]["other_user"]["id"], json!(bob.id));
    // Within one DM; web search syntax.
    let hits = search(json!({ "query": "flat -house", "dm_id": with_cy }))
        .await
        .json();
    assert_eq!(bodies(&hits), ["Wohnung: die Flat"]);
    let hits = search(json!({ "query": "\"main street\"" })).await.json();
    assert_eq!(bodies(&hits), ["The Flat on Main street"]);
    // The next page starts before the last result.
    let first = search(json!({ "query": "flat" })).await.json();
    let hits = search(json!({ "query": "flat", "before": first[1]["message"]["created_at"] }))
        .await
        .json();
    assert_eq!(bodies(&hits), ["The Flat on Main street"]);
    // A person I blocked is not searched.
    call(
        &state,
        Some(&ada),
        "users/block",
        json!({ "user_id": cy.id }),
    )
    .await;
    let hits = search(json!({ "query": "flat" })).await.json();
    assert_eq!(bodies(&hits), ["The Flat on Main street"]);

    for (body, status) in [
        (json!({ "query": "  " }), StatusCode::BAD_REQUEST),
        (json!({ "query": "a".repeat(101) }), StatusCode::BAD_REQUEST),
        (json!({ "query": "fl\u{0}at" }), StatusCode::BAD_REQUEST),
        (
            json!({ "query": "flat", "before": "yesterday" }),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({ "query": "flat", "dm_id": between_others }),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({ "query": "flat", "dm_id": Uuid::new_v4() }),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let reply = search(body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
    }
    let reply = call(&state, None, "messages/search", json!({ "query": "flat" })).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

/// `who` answers message `reply_to` in DM `dm`.
async fn reply(
    state: &AppState,
    who: &Person,
    dm: &Value,
    body: &str,
    reply_to: &Value,
) -> common::Reply {
    call(
        state,
        Some(who),
        "messages/send",
        json!({ "dm_id": dm, "body": body, "client_id": Uuid::new_v4(), "reply_to_id": reply_to }),
    )
    .await
}

#[sqlx::test]
async fn a_reply_quotes_its_message_and_shows_it_deleted_later(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let original = send(&state, &ada, &dm, "Lunch   at\nnoon?", Uuid::new_v4())
        .await
        .json();
    let answer = reply(&state, &bob, &dm, "Yes!", &original["id"]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let quoted = json!({
        "id": original["id"],
        "seq": 1,
        "sender_id": ada.id,
        "excerpt": "Lunch at noon?",
        "deleted": false,
    });
    assert_eq!(answer.json()["reply_to"], quoted);
    // Ada's stream carries the reply with its quote.
    let live: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE user_id = $1 AND kind = 'message' ORDER BY id DESC LIMIT 1",
    )
    .bind(ada.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(live["reply_to"], quoted);
    // Once the original is deleted, the reply quotes nothing of it.
    call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": original["id"] }),
    )
    .await;
    let listed = call(&state, Some(&bob), "messages/list", json!({ "dm_id": dm }))
        .await
        .json();
    assert_eq!(listed[1]["body"], "Yes!");
    assert_eq!(
        (
            &listed[1]["reply_to"]["deleted"],
            &listed[1]["reply_to"]["excerpt"]
        ),
        (&json!(true), &json!(""))
    );
    // A message that answers nothing has no `reply_to` at all.
    assert_eq!(listed[0].get("reply_to"), None);
}

#[sqlx::test]
async fn replies_that_are_not_allowed_change_nothing(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let (cy, dee) = (person(&pool, "cy").await, person(&pool, "dee").await);
    let original = send(&state, &ada, &dm, "hello", Uuid::new_v4())
        .await
        .json();
    let elsewhere = accepted_dm(&state, &ada, &cy).await;
    let theirs = send(&state, &cy, &elsewhere, "in another DM", Uuid::new_v4())
        .await
        .json();
    let invited = call(
        &state,
        Some(&ada),
        "dm/invite",
        json!({ "other_user_id": dee.id }),
    )
    .await
    .json()["id"]
        .clone();
    let before = count(&pool).await;
    let cases = [
        (
            "a message of another DM",
            &bob,
            &dm,
            theirs["id"].clone(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no such message",
            &bob,
            &dm,
            json!(Uuid::new_v4()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not a UUID",
            &bob,
            &dm,
            json!("nope"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not a member",
            &cy,
            &dm,
            original["id"].clone(),
            StatusCode::NOT_FOUND,
        ),
        (
            "not ACTIVE",
            &ada,
            &invited,
            original["id"].clone(),
            StatusCode::CONFLICT,
        ),
    ];
    for (what, who, dm, reply_to, status) in cases {
        let answer = reply(&state, who, dm, "re", &reply_to).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
    }
    // Blocked: Ada blocked Bob.
    call(
        &state,
        Some(&ada),
        "users/block",
        json!({ "user_id": bob.id }),
    )
    .await;
    let answer = reply(&state, &bob, &dm, "re", &original["id"]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    call(
        &state,
        Some(&ada),
        "users/unblock",
        json!({ "user_id": bob.id }),
    )
    .await;
    // Read-only: Ada deleted her account.
    knock::users::server::tombstone(&pool, "user_ada")
        .await
        .unwrap();
    let answer = reply(&state, &bob, &dm, "re", &original["id"]).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert_eq!(count(&pool).await, before);
}
