//! Real-time delivery: a durable per-user event log, Postgres
//! `LISTEN/NOTIFY` to wake every instance, and the SSE endpoint.
//!
//! Writers call [`record`] inside their transaction and [`wake`] after
//! commit (a NOTIFY of its own, outside the data transaction: DESIGN §8).
//! Each process runs one [`Hub`] with one `PgListener`; a notification
//! carries only user ids. Each SSE connection reads its user's events from
//! the log in commit-safe order (see the `events` migration), so a lost
//! wake-up only delays delivery until the next poll ([`POLL`]) and a
//! reconnect with `Last-Event-ID` replays exactly what was missed.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use sqlx::{PgPool, Postgres, Transaction, postgres::PgListener};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{auth::server::CurrentUser, server::state::AppState};

/// The NOTIFY channel.
pub const CHANNEL: &str = "knock_events";
/// How often a quiet stream looks at the log anyway.
pub const POLL: Duration = Duration::from_secs(5);
/// Events read from the log per query.
const PAGE: i64 = 100;

/// Appends an event of `kind` (`message`, `dm`, `read`) with `payload` (ids
/// only) for each of `recipients`, in the caller's transaction.
///
/// # Errors
/// The database error.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    recipients: &[Uuid],
    kind: &str,
    payload: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (user_id, kind, payload) SELECT unnest($1::uuid[]), $2, $3")
        .bind(recipients)
        .bind(kind)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// After commit: wakes the streams of `recipients` on every instance. A
/// failure is logged, not returned: the streams poll the log anyway.
pub async fn wake(pool: &PgPool, recipients: &[Uuid]) {
    let ids = recipients
        .iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(ids)
        .execute(pool)
        .await
    {
        tracing::warn!(%error, "could not NOTIFY; streams will catch up by polling");
    }
}

/// Ends a change: records the event (when there is one) in `tx`, commits,
/// then wakes the recipients. With `None` it only commits.
///
/// # Errors
/// The database error of the insert or the commit.
pub async fn commit_with_event(
    mut tx: Transaction<'_, Postgres>,
    pool: &PgPool,
    recipients: &[Uuid],
    event: Option<(&str, serde_json::Value)>,
) -> Result<(), sqlx::Error> {
    let Some((kind, payload)) = event else {
        return tx.commit().await;
    };
    record(&mut tx, recipients, kind, payload).await?;
    tx.commit().await?;
    wake(pool, recipients).await;
    Ok(())
}

/// This process's wake-ups: one `watch` channel per user with open streams.
#[derive(Debug, Default)]
pub struct Hub {
    users: Mutex<HashMap<Uuid, watch::Sender<u64>>>,
}

impl Hub {
    /// A receiver that changes whenever `user` is woken.
    pub fn subscribe(&self, user: Uuid) -> watch::Receiver<u64> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .entry(user)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn wake_user(&self, user: Uuid) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = users.get(&user) {
            if sender.receiver_count() == 0 {
                users.remove(&user);
            } else {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    fn wake_all(&self) {
        let users: Vec<Uuid> = self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for user in users {
            self.wake_user(user);
        }
    }

    /// Listens on [`CHANNEL`] forever, reconnecting after errors; after a
    /// reconnect every stream is woken (notifications may have been lost).
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(error) = listener.listen(CHANNEL).await {
                        tracing::warn!(%error, "LISTEN failed");
                    } else {
                        self.wake_all();
                        loop {
                            match listener.recv().await {
                                Ok(notification) => {
                                    for id in notification.payload().split(',') {
                                        if let Ok(user) = id.parse() {
                                            self.wake_user(user);
                                        }
                                    }
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot LISTEN; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A position in a user's event log: (writing transaction id, event id).
/// On the wire (SSE `id`, `Last-Event-ID`): `"{tx_id}:{id}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    tx_id: String,
    id: i64,
}

impl Cursor {
    /// Parses `"{tx_id}:{id}"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (tx_id, id) = text.split_once(':')?;
        tx_id.parse::<u64>().ok()?;
        Some(Self {
            tx_id: tx_id.to_owned(),
            id: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.tx_id, self.id)
    }
}

/// The newest settled position of `user`'s log (where a new stream starts).
async fn head(pool: &PgPool, user: Uuid) -> Result<Cursor, sqlx::Error> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT tx_id::text, id FROM events
         WHERE user_id = $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY tx_id DESC, id DESC LIMIT 1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(
        Cursor {
            tx_id: "0".into(),
            id: 0,
        },
        |(tx_id, id)| Cursor { tx_id, id },
    ))
}

/// One delivered event.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Where it is in the log.
    pub cursor: Cursor,
    /// `message`, `dm` or `read`.
    pub kind: String,
    /// Ids only.
    pub payload: serde_json::Value,
}

/// The settled events of `user` after `after`, oldest first, at most 100.
///
/// # Errors
/// The database error.
pub async fn events_after(
    pool: &PgPool,
    user: Uuid,
    after: &Cursor,
) -> Result<Vec<Delivered>, sqlx::Error> {
    let rows: Vec<(String, i64, String, serde_json::Value)> = sqlx::query_as(
        "SELECT tx_id::text, id, kind, payload FROM events
         WHERE user_id = $1 AND (tx_id, id) > ($2::xid8, $3)
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY tx_id, id LIMIT $4",
    )
    .bind(user)
    .bind(&after.tx_id)
    .bind(after.id)
    .bind(PAGE)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tx_id, id, kind, payload)| Delivered {
            cursor: Cursor { tx_id, id },
            kind,
            payload,
        })
        .collect())
}

/// `GET /api/events`: the signed-in user's Server-Sent Events. Each event's
/// `id` is its log position; `event` is `message`, `dm` or `read`; `data`
/// is JSON with ids. A reconnect sending `Last-Event-ID` gets everything
/// after it first. Comments every 15 s keep proxies from closing the
/// stream. The stream pulls from the log as the client reads, so a slow
/// client holds no buffer beyond one page and slows nobody else.
pub async fn events(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, crate::error::AppError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Cursor::parse);
    let cursor = match resume {
        Some(cursor) => cursor,
        None => head(&state.pool, me.id).await?,
    };
    let wake = state.hub.subscribe(me.id);
    let pool = state.pool.clone();
    let stream = futures::stream::unfold(
        (cursor, wake, VecDeque::<Delivered>::new()),
        move |(mut cursor, mut wake, mut buffer)| {
            let pool = pool.clone();
            async move {
                loop {
                    if let Some(event) = buffer.pop_front() {
                        cursor = event.cursor.clone();
                        let sse = Event::default()
                            .id(event.cursor.to_string())
                            .event(event.kind)
                            .data(event.payload.to_string());
                        return Some((Ok(sse), (cursor, wake, buffer)));
                    }
                    match events_after(&pool, me.id, &cursor).await {
                        Ok(page) if !page.is_empty() => buffer.extend(page),
                        Ok(_) => {
                            let _ = tokio::time::timeout(POLL, wake.changed()).await;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "event stream: database error");
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
