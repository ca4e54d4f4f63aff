//! The schema holds Knock's invariants itself: each test inserts a row that
//! breaks one and expects the named constraint to refuse it, on a fresh
//! migrated database per test.
#![cfg(feature = "ssr")]

use sqlx::PgPool;
use uuid::Uuid;

async fn user(pool: &PgPool, username: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (clerk_id, username) VALUES ($1, $2) RETURNING id")
        .bind(format!("user_{}", Uuid::new_v4().simple()))
        .bind(username)
        .fetch_one(pool)
        .await
        .expect("insert user")
}

/// Two users ordered as the `dms` table wants them (`user_a_id < user_b_id`).
async fn pair(pool: &PgPool) -> (Uuid, Uuid) {
    let (a, b) = (user(pool, "ada").await, user(pool, "bob").await);
    if a < b { (a, b) } else { (b, a) }
}

async fn insert_dm(pool: &PgPool, a: Uuid, b: Uuid) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO dms (user_a_id, user_b_id, status, invited_by_user_id)
         VALUES ($1, $2, 'ACTIVE', $1) RETURNING id",
    )
    .bind(a)
    .bind(b)
    .fetch_one(pool)
    .await
}

async fn active_dm(pool: &PgPool) -> (Uuid, Uuid, Uuid) {
    let (a, b) = pair(pool).await;
    let dm = insert_dm(pool, a, b).await.expect("first DM");
    for member in [a, b] {
        sqlx::query("INSERT INTO dm_members (dm_id, user_id, status) VALUES ($1, $2, 'ACCEPTED')")
            .bind(dm)
            .bind(member)
            .execute(pool)
            .await
            .expect("member");
    }
    (dm, a, b)
}

async fn insert_message(
    pool: &PgPool,
    dm: Uuid,
    seq: i64,
    sender: Uuid,
    body: &str,
    client_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO messages (dm_id, seq, sender_id, body, client_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(dm)
    .bind(seq)
    .bind(sender)
    .bind(body)
    .bind(client_id)
    .execute(pool)
    .await
    .map(|_| ())
}

/// The name of the constraint that refused a statement.
fn refused_by(result: Result<impl std::fmt::Debug, sqlx::Error>) -> String {
    let error = result.expect_err("the database should refuse this row");
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .unwrap_or_else(|| panic!("not a constraint violation: {error}"))
        .to_owned()
}

#[sqlx::test]
async fn a_second_dm_for_the_same_pair_is_refused(pool: PgPool) {
    let (a, b) = pair(&pool).await;
    insert_dm(&pool, a, b).await.expect("the first DM is fine");
    assert_eq!(refused_by(insert_dm(&pool, a, b).await), "dms_dm_key_key");
}

#[sqlx::test]
async fn a_dm_must_store_its_pair_ordered_so_the_reverse_pair_is_refused(pool: PgPool) {
    let (a, b) = pair(&pool).await;
    insert_dm(&pool, a, b).await.expect("the first DM is fine");
    assert_eq!(
        refused_by(insert_dm(&pool, b, a).await),
        "dms_users_ordered"
    );
}

#[sqlx::test]
async fn a_dm_with_oneself_is_refused(pool: PgPool) {
    let a = user(&pool, "ada").await;
    assert_eq!(
        refused_by(insert_dm(&pool, a, a).await),
        "dms_users_ordered"
    );
}

#[sqlx::test]
async fn a_duplicate_seq_in_one_dm_is_refused(pool: PgPool) {
    let (dm, a, b) = active_dm(&pool).await;
    insert_message(&pool, dm, 1, a, "hello", Uuid::new_v4())
        .await
        .expect("seq 1");
    let again = insert_message(&pool, dm, 1, b, "hi", Uuid::new_v4()).await;
    assert_eq!(refused_by(again), "messages_dm_id_seq_key");
}

#[sqlx::test]
async fn a_duplicate_client_id_from_one_sender_is_refused(pool: PgPool) {
    let (dm, a, _) = active_dm(&pool).await;
    let client_id = Uuid::new_v4();
    insert_message(&pool, dm, 1, a, "hello", client_id)
        .await
        .expect("first send");
    let retry = insert_message(&pool, dm, 2, a, "hello", client_id).await;
    assert_eq!(refused_by(retry), "messages_sender_id_client_id_key");
}

#[sqlx::test]
async fn the_same_client_id_from_two_senders_is_fine(pool: PgPool) {
    let (dm, a, b) = active_dm(&pool).await;
    let client_id = Uuid::new_v4();
    insert_message(&pool, dm, 1, a, "hello", client_id)
        .await
        .expect("a's send");
    insert_message(&pool, dm, 2, b, "hello", client_id)
        .await
        .expect("b's send");
}

#[sqlx::test]
async fn usernames_equal_but_for_case_are_refused(pool: PgPool) {
    user(&pool, "Ada").await;
    let clash = sqlx::query("INSERT INTO users (clerk_id, username) VALUES ('user_2', 'aDA')")
        .execute(&pool)
        .await;
    assert_eq!(refused_by(clash), "users_username_lower_key");
}

#[sqlx::test]
async fn a_second_row_for_one_clerk_user_is_refused(pool: PgPool) {
    sqlx::query("INSERT INTO users (clerk_id, username) VALUES ('user_1', 'ada')")
        .execute(&pool)
        .await
        .expect("first row");
    let again = sqlx::query("INSERT INTO users (clerk_id, username) VALUES ('user_1', 'ada2')")
        .execute(&pool)
        .await;
    assert_eq!(refused_by(again), "users_clerk_id_key");
}

#[sqlx::test]
async fn a_message_from_someone_outside_the_dm_is_refused(pool: PgPool) {
    let (dm, _, _) = active_dm(&pool).await;
    let outsider = user(&pool, "eve").await;
    let sent = insert_message(&pool, dm, 1, outsider, "let me in", Uuid::new_v4()).await;
    assert_eq!(refused_by(sent), "messages_sender_is_member");
}

#[sqlx::test]
async fn message_bodies_are_one_to_4000_characters_after_trimming(pool: PgPool) {
    let (dm, a, _) = active_dm(&pool).await;
    for body in ["", "   \n\t ", &"x".repeat(4001)] {
        let sent = insert_message(&pool, dm, 1, a, body, Uuid::new_v4()).await;
        assert_eq!(
            refused_by(sent),
            "messages_body_length",
            "body of {} chars",
            body.len()
        );
    }
    let longest = format!("  {}  ", "é".repeat(4000));
    insert_message(&pool, dm, 1, a, &longest, Uuid::new_v4())
        .await
        .expect("4000 characters fit");
}

#[sqlx::test]
async fn a_member_status_outside_the_enum_is_refused(pool: PgPool) {
    let (dm, a, _) = active_dm(&pool).await;
    let result =
        sqlx::query("UPDATE dm_members SET status = 'MAYBE' WHERE dm_id = $1 AND user_id = $2")
            .bind(dm)
            .bind(a)
            .execute(&pool)
            .await;
    let error = result.expect_err("not a member_status");
    // 22P02: invalid_text_representation (the enum does not know the label).
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("22P02")
    );
}
