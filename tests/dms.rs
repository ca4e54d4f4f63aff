//! The DM handshake through its JSON endpoints (DESIGN §4, §6): every
//! allowed transition, every refused one, and races.
#![cfg(feature = "ssr")]

mod common;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use knock::ids::UserId;
use knock::server::state::AppState;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use common::{Person, Reply, call, person};

async fn invite(state: &AppState, from: &Person, to: &Person) -> Reply {
    call(
        state,
        Some(from),
        "dm/invite",
        json!({ "other_user_id": to.id }),
    )
    .await
}

async fn answer(state: &AppState, who: &Person, what: &str, dm: &Value) -> Reply {
    call(
        state,
        Some(who),
        &format!("dm/{what}"),
        json!({ "dm_id": dm["id"] }),
    )
    .await
}

async fn get(state: &AppState, who: &Person, other: &Person) -> Value {
    let reply = call(
        state,
        Some(who),
        "dm/get",
        json!({ "other_user_id": other.id }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json()
}

/// (DM status, [(user, member status)]) as stored.
async fn stored(pool: &PgPool, dm: &Value) -> (String, UserId, Vec<(UserId, String)>) {
    let id: Uuid = dm["id"].as_str().unwrap().parse().unwrap();
    let (status, invited_by): (String, UserId) =
        sqlx::query_as("SELECT status::text, invited_by_user_id FROM dms WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
    let members = sqlx::query_as(
        "SELECT user_id, status::text FROM dm_members WHERE dm_id = $1 ORDER BY user_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap();
    (status, invited_by, members)
}

fn sorted(mut members: Vec<(UserId, &str)>) -> Vec<(UserId, String)> {
    members.sort();
    members
        .into_iter()
        .map(|(id, s)| (id, s.to_owned()))
        .collect()
}

async fn setup(pool: &PgPool) -> (AppState, Person, Person) {
    (
        common::state(pool),
        person(pool, "ada").await,
        person(pool, "bob").await,
    )
}

#[sqlx::test]
async fn before_any_invite_the_dm_is_null(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    assert_eq!(get(&state, &ada, &bob).await, Value::Null);
}

#[sqlx::test]
async fn an_invite_makes_an_invited_dm_with_the_inviter_accepted_and_the_invitee_pending(
    pool: PgPool,
) {
    let (state, ada, bob) = setup(&pool).await;
    let reply = invite(&state, &ada, &bob).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let dm = reply.json();
    assert_eq!(dm["status"], "INVITED");
    assert_eq!(dm["invited_by_user_id"], ada.id.to_string());
    assert_eq!(
        get(&state, &bob, &ada).await,
        dm,
        "both sides see the same DM"
    );
    let (status, invited_by, members) = stored(&pool, &dm).await;
    assert_eq!((status.as_str(), invited_by), ("INVITED", ada.id));
    assert_eq!(
        members,
        sorted(vec![(ada.id, "ACCEPTED"), (bob.id, "PENDING")])
    );
}

#[sqlx::test]
async fn accept_by_the_invitee_makes_the_dm_active(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    let reply = answer(&state, &bob, "accept", &dm).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["status"], "ACTIVE");
    let (status, _, members) = stored(&pool, &dm).await;
    assert_eq!(status, "ACTIVE");
    assert_eq!(
        members,
        sorted(vec![(ada.id, "ACCEPTED"), (bob.id, "ACCEPTED")])
    );
}

#[sqlx::test]
async fn decline_by_the_invitee_freezes_the_dm(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    let reply = answer(&state, &bob, "decline", &dm).await;
    assert_eq!(reply.json()["status"], "DECLINED");
    let (status, invited_by, members) = stored(&pool, &dm).await;
    assert_eq!((status.as_str(), invited_by), ("DECLINED", ada.id));
    assert_eq!(
        members,
        sorted(vec![(ada.id, "ACCEPTED"), (bob.id, "DECLINED")])
    );
}

#[sqlx::test]
async fn the_inviter_cannot_accept_or_decline_their_own_invite(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    for what in ["accept", "decline"] {
        let reply = answer(&state, &ada, what, &dm).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{what}");
        assert_eq!(reply.json()["error"]["code"], "conflict");
    }
    assert_eq!(stored(&pool, &dm).await.0, "INVITED", "nothing changed");
}

#[sqlx::test]
async fn decline_twice_and_accept_after_decline_are_409(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    answer(&state, &bob, "decline", &dm).await;
    assert_eq!(
        answer(&state, &bob, "decline", &dm).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        answer(&state, &bob, "accept", &dm).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(stored(&pool, &dm).await.0, "DECLINED");
}

#[sqlx::test]
async fn accept_twice_is_409(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    answer(&state, &bob, "accept", &dm).await;
    assert_eq!(
        answer(&state, &bob, "accept", &dm).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        answer(&state, &bob, "decline", &dm).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(stored(&pool, &dm).await.0, "ACTIVE");
}

#[sqlx::test]
async fn a_repeat_invite_by_the_inviter_is_409(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    invite(&state, &ada, &bob).await;
    let reply = invite(&state, &ada, &bob).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}

#[sqlx::test]
async fn an_invite_back_by_the_invitee_returns_the_pending_dm_unchanged(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    let reply = invite(&state, &bob, &ada).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), dm);
    assert_eq!(stored(&pool, &dm).await.1, ada.id, "still Ada's invite");
}

#[sqlx::test]
async fn an_invite_while_active_returns_the_dm_unchanged(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    let active = answer(&state, &bob, "accept", &dm).await.json();
    for (from, to) in [(&ada, &bob), (&bob, &ada)] {
        let reply = invite(&state, from, to).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), active);
    }
    assert_eq!(stored(&pool, &dm).await.0, "ACTIVE");
}

#[sqlx::test]
async fn a_reinvite_by_the_decliner_swaps_the_roles(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    answer(&state, &bob, "decline", &dm).await;
    let reply = invite(&state, &bob, &ada).await;
    assert_eq!(reply.status, StatusCode::OK);
    let again = reply.json();
    assert_eq!(again["id"], dm["id"], "the same DM, brought back");
    assert_eq!(again["status"], "INVITED");
    assert_eq!(again["invited_by_user_id"], bob.id.to_string());
    let (_, _, members) = stored(&pool, &dm).await;
    assert_eq!(
        members,
        sorted(vec![(ada.id, "PENDING"), (bob.id, "ACCEPTED")])
    );
    // Now Ada answers.
    assert_eq!(
        answer(&state, &ada, "accept", &again).await.json()["status"],
        "ACTIVE"
    );
}

#[sqlx::test]
async fn a_reinvite_by_the_first_inviter_resets_the_roles(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    answer(&state, &bob, "decline", &dm).await;
    let again = invite(&state, &ada, &bob).await.json();
    assert_eq!(
        (
            again["status"].as_str(),
            again["invited_by_user_id"].as_str()
        ),
        (Some("INVITED"), Some(ada.id.to_string().as_str()))
    );
    let (_, _, members) = stored(&pool, &dm).await;
    assert_eq!(
        members,
        sorted(vec![(ada.id, "ACCEPTED"), (bob.id, "PENDING")])
    );
}

#[sqlx::test]
async fn inviting_oneself_is_400(pool: PgPool) {
    let (state, ada, _) = setup(&pool).await;
    let reply = invite(&state, &ada, &ada).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let dms: i64 = sqlx::query_scalar("SELECT count(*) FROM dms")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dms, 0);
}

#[sqlx::test]
async fn inviting_or_looking_up_an_unknown_or_deleted_user_is_404(pool: PgPool) {
    let (state, ada, _) = setup(&pool).await;
    let reply = call(
        &state,
        Some(&ada),
        "dm/invite",
        json!({ "other_user_id": Uuid::new_v4() }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let gone = person(&pool, "gone").await;
    knock::users::server::tombstone(&pool, "user_gone")
        .await
        .unwrap();
    assert_eq!(
        invite(&state, &ada, &gone).await.status,
        StatusCode::NOT_FOUND
    );
    for other in [UserId::new_v4(), gone.id] {
        let reply = call(
            &state,
            Some(&ada),
            "dm/get",
            json!({ "other_user_id": other }),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "dm/get {other}");
    }
}

#[sqlx::test]
async fn an_outsider_cannot_answer_or_see_someone_elses_dm(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let eve = person(&pool, "eve").await;
    let dm = invite(&state, &ada, &bob).await.json();
    for what in ["accept", "decline"] {
        assert_eq!(
            answer(&state, &eve, what, &dm).await.status,
            StatusCode::NOT_FOUND,
            "{what}"
        );
    }
    // An unknown DM id answers exactly the same.
    let unknown = json!({ "id": Uuid::new_v4() });
    assert_eq!(
        answer(&state, &eve, "accept", &unknown).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(stored(&pool, &dm).await.0, "INVITED");
}

#[sqlx::test]
async fn without_a_session_every_endpoint_is_401(pool: PgPool) {
    let (state, _, bob) = setup(&pool).await;
    for (endpoint, body) in [
        ("dm/invite", json!({ "other_user_id": bob.id })),
        ("dm/get", json!({ "other_user_id": bob.id })),
        ("dm/accept", json!({ "dm_id": Uuid::new_v4() })),
        ("dm/list", json!({})),
        ("users/list", json!({})),
    ] {
        let reply = call(&state, None, endpoint, body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{endpoint}");
        assert_eq!(reply.json()["error"]["code"], "unauthorized");
    }
}

#[sqlx::test]
async fn malformed_json_is_refused_and_changes_nothing(pool: PgPool) {
    let (state, ada, _) = setup(&pool).await;
    let request = Request::post("/api/dm/invite")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
        .body(Body::from("{\"other_user_id\": 42"))
        .unwrap();
    let reply = common::send(state, request).await;
    assert!(
        reply.status.is_client_error() || reply.status.is_server_error(),
        "{}",
        reply.status
    );
    assert_ne!(reply.status, StatusCode::OK);
    let dms: i64 = sqlx::query_scalar("SELECT count(*) FROM dms")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dms, 0);
}

#[sqlx::test]
async fn the_lists_show_people_with_our_dm_and_my_conversations(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let _carl = person(&pool, "carl").await;
    let dm = invite(&state, &ada, &bob).await.json();

    let people = call(&state, Some(&ada), "users/list", json!({}))
        .await
        .json();
    let names: Vec<&str> = people
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carl"], "everyone but me");
    assert_eq!(people[0]["dm"], dm);
    assert_eq!(people[1]["dm"], Value::Null);

    let found = call(&state, Some(&ada), "users/list", json!({ "query": "CAR" }))
        .await
        .json();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["username"], "carl");

    let bobs = call(&state, Some(&bob), "dm/list", json!({})).await.json();
    assert_eq!(bobs.as_array().unwrap().len(), 1);
    assert_eq!(bobs[0]["other_user"]["username"], "ada");
    assert_eq!(bobs[0]["status"], "INVITED");
    assert_eq!(bobs[0]["unread_count"], 0);
}

#[sqlx::test]
async fn the_people_list_is_the_first_hundred_by_username_and_a_search_is_literal(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    for n in 0..105 {
        person(&pool, &format!("p{n:03}")).await;
    }
    person(&pool, "a_b").await;
    person(&pool, "axb").await;
    let dm = invite(&state, &ada, &bob).await.json();
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["username"].as_str().unwrap().to_owned())
            .collect()
    };

    let people = call(&state, Some(&ada), "users/list", json!({}))
        .await
        .json();
    let listed = names(&people);
    assert_eq!(listed.len(), 100, "at most a hundred");
    assert_eq!(listed[..4], ["a_b", "axb", "bob", "p000"]);
    assert_eq!(listed[99], "p096", "the first hundred by username");
    assert_eq!(people[2]["dm"], dm, "our DM comes with the person");
    assert_eq!(people[3]["dm"], Value::Null);

    // `_` and `%` are letters to look for, not wildcards.
    let found = call(&state, Some(&ada), "users/list", json!({ "query": "a_" }))
        .await
        .json();
    assert_eq!(names(&found), ["a_b"]);
    let found = call(&state, Some(&ada), "users/list", json!({ "query": "%" }))
        .await
        .json();
    assert_eq!(names(&found), Vec::<String>::new());
    // Blank is no search at all.
    let all = call(&state, Some(&ada), "users/list", json!({ "query": "  " }))
        .await
        .json();
    assert_eq!(names(&all), listed);
}

#[sqlx::test]
async fn conversations_are_listed_by_last_activity_and_a_message_moves_one_up(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let carl = person(&pool, "carl").await;
    let with_bob = invite(&state, &ada, &bob).await.json();
    answer(&state, &bob, "accept", &with_bob).await;
    let with_carl = invite(&state, &ada, &carl).await.json();
    answer(&state, &carl, "accept", &with_carl).await;
    let order = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|d| d["other_user"]["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = call(&state, Some(&ada), "dm/list", json!({})).await.json();
    assert_eq!(order(&list), ["carl", "bob"], "the latest accept first");

    let sent = call(
        &state,
        Some(&bob),
        "messages/send",
        json!({ "dm_id": with_bob["id"], "body": "hi", "client_id": Uuid::new_v4() }),
    )
    .await
    .json();
    let list = call(&state, Some(&ada), "dm/list", json!({})).await.json();
    assert_eq!(order(&list), ["bob", "carl"], "the new message first");
    assert_eq!(list[0]["last_message"], "hi");
    assert_eq!(list[0]["last_activity_at"], sent["created_at"]);
    assert_eq!(list[0]["unread_count"], 1);
}

#[sqlx::test]
async fn an_invite_from_a_blocked_user_is_declined_silently(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    assert_eq!(
        call(
            &state,
            Some(&ada),
            "users/block",
            json!({ "user_id": bob.id })
        )
        .await
        .status,
        StatusCode::OK
    );
    // Bob sees an ordinary pending invite.
    let reply = invite(&state, &bob, &ada).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["status"], "INVITED");
    // Ada sees neither Bob nor the invite.
    assert!(
        call(&state, Some(&ada), "dm/list", json!({}))
            .await
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let people = call(&state, Some(&ada), "users/list", json!({}))
        .await
        .json();
    assert!(
        people
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["username"] != "bob")
    );
    // Ada inviting Bob while blocking him is refused.
    assert_eq!(
        invite(&state, &ada, &bob).await.status,
        StatusCode::CONFLICT
    );
    // Unblocked, the invite shows.
    call(
        &state,
        Some(&ada),
        "users/unblock",
        json!({ "user_id": bob.id }),
    )
    .await;
    assert_eq!(
        call(&state, Some(&ada), "dm/list", json!({}))
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[sqlx::test]
async fn invites_beyond_the_rate_are_429(pool: PgPool) {
    let state = common::state(&pool);
    let sender = person(&pool, "sender").await;
    let limit = knock::dms::server::INVITES_PER_MINUTE as usize;
    let mut statuses = Vec::new();
    for n in 0..=limit {
        let other = person(&pool, &format!("p{n}")).await;
        statuses.push(invite(&state, &sender, &other).await.status);
    }
    assert!(
        statuses[..limit].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(statuses[limit], StatusCode::TOO_MANY_REQUESTS);
    let dms: i64 = sqlx::query_scalar("SELECT count(*) FROM dms")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(dms as usize, limit, "the refused invite made nothing");
}

#[sqlx::test]
async fn fifty_concurrent_invites_from_both_sides_end_in_one_consistent_dm(pool: PgPool) {
    let (mut state, ada, bob) = setup(&pool).await;
    // This test is about the race, not the rate limit.
    state.invite_limiter = std::sync::Arc::new(knock::dms::server::invite_limiter(1000));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let (state, from, to) = if n % 2 == 0 {
            (state.clone(), ada.clone(), bob.clone())
        } else {
            (state.clone(), bob.clone(), ada.clone())
        };
        tasks.push(tokio::spawn(async move {
            invite(&state, &from, &to).await.status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let dms: Vec<(Uuid, String, UserId)> =
        sqlx::query_as("SELECT id, status::text, invited_by_user_id FROM dms")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dms.len(), 1, "one DM");
    let (id, status, inviter) = dms[0].clone();
    assert_eq!(status, "INVITED");
    let invitee = if inviter == ada.id { bob.id } else { ada.id };
    let members = stored(&pool, &json!({ "id": id })).await.2;
    assert_eq!(
        members,
        sorted(vec![(inviter, "ACCEPTED"), (invitee, "PENDING")])
    );
    // As in any serial order: every repeat by the winner was refused, every
    // invite back by the other side returned the DM.
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!(refused, 24, "the winner's 24 other invites are repeats");
}

#[sqlx::test]
async fn a_state_changing_call_from_another_origin_is_403(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let request = Request::post("/api/dm/invite")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "localhost:3000")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
        .body(Body::from(json!({ "other_user_id": bob.id }).to_string()))
        .unwrap();
    let reply = common::send(state.clone(), request).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&state, &ada, &bob).await,
        Value::Null,
        "nothing changed"
    );

    // The same call from the site itself goes through.
    let request = Request::post("/api/dm/invite")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::HOST, "localhost:3000")
        .header(header::ORIGIN, "http://localhost:3000")
        .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
        .body(Body::from(json!({ "other_user_id": bob.id }).to_string()))
        .unwrap();
    assert_eq!(common::send(state, request).await.status, StatusCode::OK);
}

#[sqlx::test]
async fn a_people_search_over_100_characters_or_with_a_control_character_is_400(pool: PgPool) {
    let state = common::state(&pool);
    let ada = common::person(&pool, "ada").await;
    let fits = "a".repeat(100);
    let reply = common::call(&state, Some(&ada), "users/list", json!({ "query": fits })).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    for query in ["a".repeat(101), "ad\0a".to_owned(), "\u{1b}".to_owned()] {
        let reply = common::call(&state, Some(&ada), "users/list", json!({ "query": query })).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query:?}: {}",
            reply.body
        );
    }
}

#[sqlx::test]
async fn an_invite_whose_sender_deleted_their_account_cannot_be_accepted(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let dm = invite(&state, &ada, &bob).await.json();
    knock::users::server::tombstone(&pool, "user_ada")
        .await
        .unwrap();
    let reply = answer(&state, &bob, "accept", &dm).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    let (status, _, _) = stored(&pool, &dm).await;
    assert_eq!(status, "INVITED");
    // Declining it is still possible: it clears the invite away.
    let reply = answer(&state, &bob, "decline", &dm).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test]
async fn behind_a_proxy_the_origin_is_checked_against_x_forwarded_host(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let invite_from = |origin: &str| {
        Request::post("/api/dm/invite")
            .header(header::CONTENT_TYPE, "application/json")
            // The proxy talks to Knock on its own address...
            .header(header::HOST, "127.0.0.1:3000")
            // ...and passes on the host the browser asked for.
            .header("x-forwarded-host", "knock.example")
            .header(header::ORIGIN, origin)
            .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
            .body(Body::from(json!({ "other_user_id": bob.id }).to_string()))
            .unwrap()
    };
    let reply = common::send(state.clone(), invite_from("https://evil.example")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&state, &ada, &bob).await, Value::Null);
    let reply = common::send(state.clone(), invite_from("https://knock.example")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[sqlx::test]
async fn an_invite_carries_a_note_until_it_is_answered(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let noted = |who: &Person, other: &Person, note: Value| {
        let (state, who, other) = (state.clone(), who.clone(), other.clone());
        async move {
            call(
                &state,
                Some(&who),
                "dm/invite",
                json!({ "other_user_id": other.id, "note": note }),
            )
            .await
        }
    };
    // The rules of messages, at most 200 characters; nothing is stored.
    for bad in [
        json!("x".repeat(201)),
        json!("hi\u{0}"),
        json!("\u{1b}[31m"),
        json!(5),
    ] {
        let reply = noted(&ada, &bob, bad.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
    }
    assert_eq!(get(&state, &ada, &bob).await, Value::Null);

    let dm = noted(&ada, &bob, json!("  We met at the meetup\r\nin Lisbon  ")).await;
    assert_eq!(dm.status, StatusCode::OK, "{}", dm.body);
    let dm = dm.json();
    assert_eq!(dm["invite_note"], "We met at the meetup\nin Lisbon");
    // Bob sees it with the invite, and as his conversation list's row.
    assert_eq!(
        get(&state, &bob, &ada).await["invite_note"],
        dm["invite_note"]
    );
    let rows = call(&state, Some(&bob), "dm/list", json!({})).await.json();
    assert_eq!(rows[0]["invite_note"], dm["invite_note"]);
    // It is not a message.
    let seq: i64 = sqlx::query_scalar("SELECT last_seq FROM dms")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(seq, 0);

    // Declining discards it; a re-invite brings its own (or none).
    answer(&state, &bob, "decline", &dm).await;
    assert_eq!(get(&state, &ada, &bob).await["invite_note"], Value::Null);
    let again = noted(&bob, &ada, json!("Sorry, let's talk")).await.json();
    assert_eq!(again["invite_note"], "Sorry, let's talk");
    answer(&state, &ada, "accept", &again).await;
    let active = get(&state, &ada, &bob).await;
    assert_eq!(
        (&active["status"], &active["invite_note"]),
        (&json!("ACTIVE"), &Value::Null)
    );
    // A blank note is no note.
    let cy = common::person(&pool, "cy").await;
    let blank = noted(&ada, &cy, json!("   ")).await.json();
    assert_eq!(blank["invite_note"], Value::Null);
}

#[sqlx::test]
async fn the_blocked_list_holds_whom_i_blocked_and_the_form_redirects_back(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let cy = common::person(&pool, "cy").await;
    let blocked = |who: &Person| {
        let (state, who) = (state.clone(), who.clone());
        async move {
            let reply = call(&state, Some(&who), "users/blocked", json!({})).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            reply
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert!(blocked(&ada).await.is_empty());
    let form = |action: &str, user: &Person, back: &str| {
        Request::post("/api/users/block-form")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "text/html")
            .header(header::AUTHORIZATION, format!("Bearer {}", ada.token))
            .body(Body::from(format!(
                "action={action}&user_id={}&back={back}",
                user.id
            )))
            .unwrap()
    };
    let reply = common::send(state.clone(), form("block", &cy, "chat")).await;
    assert_eq!(reply.headers["location"], format!("/chat/{}", cy.id));
    common::send(state.clone(), form("block", &bob, "chat")).await;
    assert_eq!(blocked(&ada).await, ["bob", "cy"]);
    // Only mine: Bob has blocked nobody.
    assert!(blocked(&bob).await.is_empty());
    let reply = common::send(state.clone(), form("unblock", &bob, "blocked")).await;
    assert_eq!(reply.headers["location"], "/blocked");
    assert_eq!(blocked(&ada).await, ["cy"]);
    let reply = common::send(state.clone(), form("ignore", &cy, "chat")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(blocked(&ada).await, ["cy"]);
}

#[sqlx::test]
async fn mute_is_per_member_and_only_for_an_active_dm(pool: PgPool) {
    let (state, ada, bob) = setup(&pool).await;
    let cy = common::person(&pool, "cy").await;
    let dm = invite(&state, &ada, &bob).await.json();
    let mute = |who: &Person, muted: bool| {
        let (state, who, dm_id) = (state.clone(), who.clone(), dm["id"].clone());
        async move {
            call(
                &state,
                Some(&who),
                "dm/mute",
                json!({ "dm_id": dm_id, "muted": muted }),
            )
            .await
            .status
        }
    };
    assert_eq!(
        mute(&ada, true).await,
        StatusCode::CONFLICT,
        "not while invited"
    );
    answer(&state, &bob, "accept", &dm).await;
    assert_eq!(
        mute(&cy, true).await,
        StatusCode::NOT_FOUND,
        "not someone else's"
    );

    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE user_id = $1")
        .bind(ada.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mute(&ada, true).await, StatusCode::OK);
    assert_eq!(get(&state, &ada, &bob).await["muted"], true);
    assert_eq!(
        get(&state, &bob, &ada).await["muted"],
        false,
        "Bob's side is his"
    );
    let rows = call(&state, Some(&ada), "dm/list", json!({})).await.json();
    assert_eq!(rows[0]["muted"], true);
    // Ada's other devices hear of it; Bob hears nothing.
    let ada_events: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM events WHERE user_id = $1 ORDER BY id OFFSET $2")
            .bind(ada.id)
            .bind(events_before)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ada_events.len(), 1);
    assert_eq!(ada_events[0]["muted"], true);

    // Muting again changes nothing; unmuting restores it.
    assert_eq!(mute(&ada, true).await, StatusCode::OK);
    assert_eq!(mute(&ada, false).await, StatusCode::OK);
    assert_eq!(get(&state, &ada, &bob).await["muted"], false);
}
