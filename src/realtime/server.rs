//! Real-time delivery: a durable per-user event log, Postgres
//! `LISTEN/NOTIFY` to wake every instance, one reader per process, and the
//! SSE endpoint.
//!
//! The way through: a writer calls [`record`] inside its transaction and
//! [`Wakeups::wake`] after commit (both through [`commit_with_event`]);
//! the wake-up goes out as a coalesced NOTIFY of its own, outside the data
//! transaction (DESIGN §8). Each process runs one [`Hub`]: its listener
//! hears the NOTIFY, its reader reads everything new in the log once, in
//! commit-safe order (see the `events` migration), and hands each event to
//! the open streams of its recipient through an in-memory channel. A
//! stream queries the log itself only to resume (`Last-Event-ID`); one that
//! falls behind its channel is told to `resync`. The reader also looks at
//! the log every [`POLL`], so a lost wake-up only delays delivery.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use sqlx::{PgPool, Postgres, Transaction, postgres::PgListener};
use tokio::sync::{Notify, broadcast, watch};

use super::{
    event::{Event as LiveEvent, ResyncEvent},
    presence::{Presence, StreamGuard},
};
use crate::ids::UserId;
use crate::{auth::server::CurrentUser, error::AppError, server::state::AppState};

/// The NOTIFY channel.
pub const CHANNEL: &str = "knock_events";
/// How often the reader looks at the log without a wake-up.
pub const POLL: Duration = Duration::from_secs(5);
/// Events a stream reads from its user's log per query while resuming.
const PAGE: i64 = 100;
/// Events the process reader reads from the log per query.
const BATCH: i64 = 1000;
/// Events a user's channel holds for a stream that has not taken them yet;
/// a stream further behind reads its user's log (see [`events`]).
pub const CHANNEL_CAPACITY: usize = 64;
/// A stream resuming with more than this many events waiting is told to
/// `resync` instead of getting them all.
pub const MAX_REPLAY: i64 = 1000;
/// How long a typing hint lasts; older ones are not replayed.
pub const TYPING_TTL: Duration = Duration::from_secs(6);
/// How long events stay in the log. Typing and presence events, which only
/// matter now, go after [`TYPING_TTL`] and a minute.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Appends `event` to the log of each of `recipients`, in the caller's
/// transaction (its kind and its data, ids only).
///
/// # Errors
/// The database error.
pub async fn record(
    tx: &mut Transaction<'_, Postgres>,
    recipients: &[UserId],
    event: &LiveEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO events (user_id, kind, payload) SELECT unnest($1::uuid[]), $2, $3",
        recipients as &[UserId],
        event.kind(),
        event.data(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends a change: records the event (when there is one) in `tx`, commits,
/// then wakes every instance's reader ([`Wakeups::wake`]). With `None` it only
/// commits.
///
/// # Errors
/// The database error of the insert or the commit.
pub async fn commit_with_event(
    mut tx: Transaction<'_, Postgres>,
    wakeups: &Wakeups,
    recipients: &[UserId],
    event: Option<LiveEvent>,
) -> Result<(), sqlx::Error> {
    let Some(event) = event else {
        return tx.commit().await;
    };
    record(&mut tx, recipients, &event).await?;
    tx.commit().await?;
    wakeups.wake();
    Ok(())
}

/// Ends a change whose recipients each get an event of their own (a `dm`
/// event carries the DM as each member sees it): records them in `tx`
/// (one statement, in the order given), commits, then wakes the readers.
/// With none it only commits.
///
/// # Errors
/// The database error of an insert or the commit.
pub async fn commit_with_events(
    mut tx: Transaction<'_, Postgres>,
    wakeups: &Wakeups,
    events: &[(UserId, LiveEvent)],
) -> Result<(), sqlx::Error> {
    if !events.is_empty() {
        let recipients: Vec<UserId> = events.iter().map(|(user, _)| *user).collect();
        let kinds: Vec<&str> = events.iter().map(|(_, event)| event.kind()).collect();
        let payloads: Vec<serde_json::Value> = events.iter().map(|(_, e)| e.data()).collect();
        sqlx::query!(
            "INSERT INTO events (user_id, kind, payload)
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])",
            recipients as Vec<UserId>,
            kinds as Vec<&str>,
            &payloads,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    if !events.is_empty() {
        wakeups.wake();
    }
    Ok(())
}

/// This process's NOTIFY outbox.
///
/// A writer calls [`Wakeups::wake`] after its commit; [`Wakeups::notify_until_closed`]
/// then sends one NOTIFY on [`CHANNEL`] (empty payload), outside any data
/// transaction: a NOTIFY takes a global lock at commit (DESIGN §8). Wake-ups
/// that come while one NOTIFY is on its way share the next one. Every
/// instance's reader (this one's too) hears it through its listener: a read
/// at the commit would mostly find the new events behind other senders'
/// transactions that are still running.
#[derive(Debug)]
pub struct Wakeups {
    wanted: AtomicBool,
    ready: Notify,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self {
            wanted: AtomicBool::new(false),
            ready: Notify::new(),
        }
    }
}

impl Wakeups {
    /// After a commit that logged events: wakes every instance's reader with
    /// the next NOTIFY. Never fails: a lost wake-up only waits for the
    /// readers' next look at the log ([`POLL`]).
    pub fn wake(&self) {
        self.wanted.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    /// Sends the NOTIFY if a wake-up is waiting: one round trip.
    ///
    /// # Errors
    /// The database error; the wake-up is then dropped (the readers find
    /// the events at their next poll).
    pub async fn flush<'c>(
        &self,
        db: impl sqlx::Executor<'c, Database = Postgres>,
    ) -> Result<(), sqlx::Error> {
        if !self.wanted.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        sqlx::query!("SELECT pg_notify($1, '')", CHANNEL)
            .execute(db)
            .await?;
        Ok(())
    }

    /// Until `pool` closes: [`Wakeups::flush`] whenever a wake-up waits, on
    /// a connection of its own (taken from the pool and detached from it),
    /// so a wake-up never queues for a pooled connection behind the
    /// requests. The connection is closed with the pool.
    pub async fn notify_until_closed(self: Arc<Self>, pool: PgPool) {
        let mut connection: Option<sqlx::PgConnection> = None;
        let mut closed = std::pin::pin!(pool.close_event());
        loop {
            tokio::select! {
                () = self.ready.notified() => {}
                () = &mut closed => {
                    if let Some(conn) = connection {
                        let _ = sqlx::Connection::close(conn).await;
                    }
                    return;
                }
            }
            if connection.is_none() {
                match pool.acquire().await {
                    Ok(conn) => connection = Some(conn.detach()),
                    Err(error) => {
                        tracing::warn!(%error, "cannot connect to NOTIFY; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        self.ready.notify_one();
                        continue;
                    }
                }
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            if let Err(error) = self.flush(&mut *conn).await {
                tracing::warn!(%error, "could not NOTIFY; readers will catch up by polling");
                connection = None;
            }
        }
    }
}

/// One event as every stream sends it: encoded once per process, shared by
/// reference count.
#[derive(Debug)]
pub struct Delivered {
    /// Where it is in the log.
    pub cursor: Cursor,
    /// The event's kind ([`LiveEvent::kind`]), the SSE `event` field.
    pub kind: &'static str,
    /// The event's data as JSON text ([`LiveEvent::data`]), the SSE `data`;
    /// shared by the copies of one event logged for several users.
    pub data: Arc<str>,
}

impl Delivered {
    /// `event` at `cursor`, encoded.
    fn new(cursor: Cursor, event: &LiveEvent) -> Arc<Self> {
        Arc::new(Self {
            cursor,
            kind: event.kind(),
            data: event.data().to_string().into(),
        })
    }
}

/// What the reader hands out: where it is, and a channel per user with
/// open streams here.
#[derive(Debug, Default)]
struct Fanout {
    /// Every settled event up to here has been handed out.
    cursor: Option<Cursor>,
    users: HashMap<UserId, broadcast::Sender<Arc<Delivered>>>,
}

/// This process's real-time state: the NOTIFY outbox ([`Wakeups`]), the
/// reader and its channels, and presence bookkeeping.
#[derive(Debug)]
pub struct Hub {
    /// This process's NOTIFY outbox.
    pub wakeups: Arc<Wakeups>,
    /// Open streams of this instance (see [`Presence`]).
    pub presence: Arc<Presence>,
    fanout: Mutex<Fanout>,
    /// The reader has its start position.
    started: watch::Sender<bool>,
    /// A NOTIFY arrived: read the log.
    read_now: Notify,
    closing: watch::Sender<bool>,
}

impl Hub {
    /// A hub on `pool` with the reader ([`Hub::read_until_closed`]) and the
    /// NOTIFY sender ([`Wakeups::notify_until_closed`]) running on `tasks`
    /// until the pool closes or the tasks stop. The server also runs [`Hub::listen`], which holds one
    /// of the pool's connections for good; without it, the reader looks at
    /// the log every [`POLL`].
    pub fn start(pool: &PgPool, tasks: &crate::server::tasks::BackgroundTasks) -> Arc<Self> {
        let wakeups = Arc::new(Wakeups::default());
        let hub = Arc::new(Self {
            presence: Arc::new(Presence::new(wakeups.clone())),
            wakeups: wakeups.clone(),
            fanout: Mutex::default(),
            started: watch::channel(false).0,
            read_now: Notify::new(),
            closing: watch::channel(false).0,
        });
        tasks.spawn("event reader", hub.clone().read_until_closed(pool.clone()));
        tasks.spawn("notify", wakeups.notify_until_closed(pool.clone()));
        hub
    }

    /// Ends every open stream of this process (on shutdown), so that
    /// browsers reconnect, with `Last-Event-ID`, to an instance that stays.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, Fanout> {
        self.fanout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel of `user`'s events and the reader's position when it was
    /// made: every event after that position comes through the channel,
    /// the ones up to it are in the log. Waits until the reader has started.
    pub async fn subscribe(&self, user: UserId) -> (broadcast::Receiver<Arc<Delivered>>, Cursor) {
        let mut started = self.started.subscribe();
        // The sender lives in `self`, so this wait ends only by starting.
        let _ = started.wait_for(|started| *started).await;
        let mut fanout = self.fanout();
        let cursor = fanout.cursor.unwrap_or(Cursor::ZERO);
        let rx = fanout
            .users
            .entry(user)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        (rx, cursor)
    }

    /// The reader's position now.
    fn position(&self) -> Cursor {
        self.fanout().cursor.unwrap_or(Cursor::ZERO)
    }

    /// Hands out events read from the log, in order, to the channels of
    /// their recipients, and moves the position past them.
    fn publish(&self, events: Vec<(UserId, Arc<Delivered>)>) {
        let mut fanout = self.fanout();
        for (user, event) in events {
            fanout.cursor = Some(event.cursor);
            let gone = fanout
                .users
                .get(&user)
                .is_some_and(|channel| channel.send(event).is_err());
            if gone {
                // No stream of this user is open here any more.
                fanout.users.remove(&user);
            }
        }
    }

    /// Forgets the channels of users with no open stream here.
    pub fn forget_idle(&self) {
        self.fanout()
            .users
            .retain(|_, channel| channel.receiver_count() > 0);
    }

    /// Until `pool` closes: reads what is new in the log and hands it out
    /// ([`Hub::publish`]), whenever a NOTIFY arrives and every [`POLL`];
    /// again at once while a read fills a batch, and again shortly while
    /// committed events wait behind a running transaction
    /// ([`Batch::pending`]). When they have waited for [`STALL_WARNING`],
    /// it logs which transaction holds them ([`open_writers`]), and again
    /// when delivery resumes.
    pub async fn read_until_closed(self: Arc<Self>, pool: PgPool) {
        let mut closed = std::pin::pin!(pool.close_event());
        let mut cursor = loop {
            match log_head(&pool).await {
                Ok(head) => break head,
                Err(_) if pool.is_closed() => return,
                Err(error) => tracing::warn!(%error, "event reader cannot start; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = &mut closed => return,
            }
        };
        self.fanout().cursor = Some(cursor);
        self.started.send_replace(true);
        let mut retry = RETRY_FIRST;
        let mut stall = Stall::default();
        loop {
            let wait = match read_log(&pool, cursor).await {
                Ok(batch) => {
                    let full = batch.events.len() as i64 == BATCH;
                    let pending = batch.pending;
                    stall.observe(&pool, pending && batch.last.is_none()).await;
                    cursor = batch.last.unwrap_or(cursor);
                    self.publish(batch.events);
                    if full {
                        continue;
                    }
                    if pending {
                        // 1, 2, 4, … ms, else at the next wake-up.
                        let wait = retry;
                        retry = (retry * 2).min(RETRY_LAST);
                        wait
                    } else {
                        retry = RETRY_FIRST;
                        POLL
                    }
                }
                Err(_) if pool.is_closed() => return,
                Err(error) => {
                    tracing::warn!(%error, "event reader: database error");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = self.read_now.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = &mut closed => return,
            }
        }
    }

    /// Listens on [`CHANNEL`] until `pool` closes, reconnecting after
    /// errors; each notification, and each (re)connect (notifications may
    /// have been lost), makes the reader read the log.
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(error) = listener.listen(CHANNEL).await {
                        tracing::warn!(%error, "LISTEN failed");
                    } else {
                        self.read_now.notify_one();
                        loop {
                            match listener.recv().await {
                                Ok(_) => self.read_now.notify_one(),
                                // The pool closes on shutdown: nothing to
                                // reconnect to, and nothing to warn about.
                                Err(_) if pool.is_closed() => return,
                                Err(error) => {
                                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(_) if pool.is_closed() => return,
                Err(error) => tracing::warn!(%error, "cannot LISTEN; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The reader's waits while committed events are behind a running
/// transaction ([`Batch::pending`]): first and longest.
const RETRY_FIRST: Duration = Duration::from_millis(1);
const RETRY_LAST: Duration = Duration::from_millis(64);

/// The newest settled position of the whole log: where the reader starts.
///
/// (The log is ordered by the `xid8` column; its text would sort "100"
/// before "99".)
async fn log_head(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT tx_id::text AS "tx!", id FROM events
           WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY tx_id DESC, id DESC LIMIT 1"#
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Cursor::ZERO, |row| Cursor::from_row(&row.tx, row.id)))
}

/// What one read of the whole log found.
#[derive(Debug, Default)]
struct Batch {
    /// The settled events after the cursor with their recipients, oldest
    /// first, at most [`BATCH`].
    events: Vec<(UserId, Arc<Delivered>)>,
    /// The position of the last row read (decoded or not).
    last: Option<Cursor>,
    /// Committed events are not settled yet: an older transaction is still
    /// running, so they cannot be handed out in order yet.
    pending: bool,
}

/// The settled events of every user after `after`; and whether committed
/// events wait behind a running transaction. One query. An event that went
/// to several users is decoded once.
async fn read_log(pool: &PgPool, after: Cursor) -> Result<Batch, sqlx::Error> {
    let rows = sqlx::query!(
        r#"(SELECT tx_id::text AS tx, id, user_id AS "user_id: UserId", kind, payload::text
             FROM events
            WHERE (tx_id, id) > ($1::text::xid8, $2)
              AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY tx_id, id LIMIT $3)
           UNION ALL
           SELECT NULL, NULL, NULL, NULL, NULL
            WHERE EXISTS (SELECT 1 FROM events
                            WHERE tx_id >= pg_snapshot_xmin(pg_current_snapshot()))"#,
        after.tx_id.to_string(),
        after.id,
        BATCH,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.tx, r.id, r.user_id, r.kind, r.payload));
    let mut batch = Batch::default();
    // The previous row's kind, payload and encoding: one event logged for
    // several recipients is several rows with the same payload.
    let mut previous: Option<(String, String, &'static str, Arc<str>)> = None;
    for row in rows {
        let (Some(tx_id), Some(id), Some(user), Some(kind), Some(payload)) = row else {
            batch.pending = true;
            continue;
        };
        let cursor = Cursor::from_row(&tx_id, id);
        batch.last = Some(cursor);
        let encoded = match &previous {
            Some((k, p, kind_static, data)) if *k == kind && *p == payload => {
                Some((*kind_static, data.clone()))
            }
            _ => match LiveEvent::decode(&kind, &payload) {
                Ok(event) => {
                    let encoded = (event.kind(), Arc::<str>::from(event.data().to_string()));
                    previous = Some((kind, payload, encoded.0, encoded.1.clone()));
                    Some(encoded)
                }
                // Only `Event`s are written to the log; a row that is not
                // one is left out, with a warning.
                Err(error) => {
                    tracing::warn!(%error, %kind, %cursor, "skipped an event the log cannot decode");
                    None
                }
            },
        };
        if let Some((kind, data)) = encoded {
            batch
                .events
                .push((user, Arc::new(Delivered { cursor, kind, data })));
        }
    }
    Ok(batch)
}

/// A position in the event log: (writing transaction id, event id),
/// ordered as the log is read. On the wire (SSE `id`, `Last-Event-ID`):
/// `"{tx_id}:{id}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    tx_id: u64,
    id: i64,
}

impl Cursor {
    /// Before every event.
    pub const ZERO: Self = Self { tx_id: 0, id: 0 };

    /// Parses `"{tx_id}:{id}"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (tx_id, id) = text.split_once(':')?;
        Some(Self {
            tx_id: tx_id.parse().ok()?,
            id: id.parse().ok()?,
        })
    }

    fn from_row(tx_id: &str, id: i64) -> Self {
        Self {
            tx_id: tx_id.parse().unwrap_or(0),
            id,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.tx_id, self.id)
    }
}

/// Where a new stream, or one that resyncs, starts: the newest of the
/// reader's `position` and the newest settled event of `user`'s log. What
/// committed before is what the page fetches (or refetches on `resync`),
/// so the stream skips it, and a reconnect from there replays none of it.
async fn start_point(pool: &PgPool, user: UserId, position: Cursor) -> Result<Cursor, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT tx_id::text AS "tx!", id FROM events
           WHERE user_id = $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
           ORDER BY tx_id DESC, id DESC LIMIT 1"#,
        user as UserId,
    )
    .fetch_optional(pool)
    .await?;
    let head = row.map_or(Cursor::ZERO, |row| Cursor::from_row(&row.tx, row.id));
    Ok(head.max(position))
}

/// What one read of a user's log found.
#[derive(Debug, Default)]
pub struct Page {
    /// The settled events after the cursor, oldest first, at most [`PAGE`].
    pub events: Vec<Arc<Delivered>>,
    /// The position of the last row read (decoded or not).
    pub last: Option<Cursor>,
    /// [`PAGE`] rows were read: there may be more.
    pub full: bool,
}

/// The settled events of `user` after `after`, oldest first, at most
/// [`PAGE`] (typing hints older than [`TYPING_TTL`] left out). One query; a
/// stream reads its user's log only to resume.
///
/// # Errors
/// The database error.
pub async fn events_after(
    pool: &PgPool,
    user: UserId,
    after: &Cursor,
) -> Result<Page, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT tx_id::text AS "tx!", id, kind, payload::text AS "payload!" FROM events
           WHERE user_id = $1 AND (tx_id, id) > ($2::text::xid8, $3)
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
             AND NOT (kind = $6 AND created_at < now() - $5 * interval '1 second')
           ORDER BY tx_id, id LIMIT $4"#,
        user as UserId,
        after.tx_id.to_string(),
        after.id,
        PAGE,
        TYPING_TTL.as_secs_f64(),
        LiveEvent::TYPING,
    )
    .fetch_all(pool)
    .await?;
    let mut page = Page {
        full: rows.len() as i64 == PAGE,
        ..Page::default()
    };
    for row in rows {
        let (kind, payload) = (row.kind, row.payload);
        let cursor = Cursor::from_row(&row.tx, row.id);
        page.last = Some(cursor);
        match LiveEvent::decode(&kind, &payload) {
            Ok(event) => page.events.push(Delivered::new(cursor, &event)),
            // Only `Event`s are written to the log; a row that is not one is
            // left out, with a warning.
            Err(error) => {
                tracing::warn!(%error, %kind, %cursor, "skipped an event the log cannot decode");
            }
        }
    }
    Ok(page)
}

/// Whether a stream resuming after `cursor` must resync instead: the log
/// was pruned past it, or more than [`MAX_REPLAY`] events wait.
async fn needs_resync(pool: &PgPool, user: UserId, cursor: &Cursor) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT $2::text::xid8 <= (SELECT pruned_through FROM events_horizon)
                  AND $2::text::xid8 <> '0'
               OR (SELECT count(*) FROM (SELECT 1 FROM events
                    WHERE user_id = $1 AND (tx_id, id) > ($2::text::xid8, $3) LIMIT $4::int8 + 1) w) > $4::int8
               AS "resync!""#,
        user as UserId,
        cursor.tx_id.to_string(),
        cursor.id,
        MAX_REPLAY,
    )
    .fetch_one(pool)
    .await
}

/// Event streams one user may hold open on one instance by default
/// (`KNOCK_MAX_STREAMS_PER_USER`). The tabs of one browser share one.
pub const MAX_STREAMS_PER_USER: u32 = 50;

/// The query of `GET /api/events`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EventsQuery {
    /// Where to resume when the `Last-Event-ID` header is absent (a new
    /// `EventSource` cannot set headers).
    pub last_event_id: Option<String>,
}

/// The longest an event stream stays open. It then ends and the browser
/// reconnects, which checks the session again: a user deleted since, or a
/// long-lived (dev-mode) token, is held to this bound too.
pub const STREAM_MAX_LIFE: Duration = Duration::from_secs(10 * 60);

/// When a stream opened now with a session token expiring at `exp` (Unix
/// seconds) ends: at `exp` plus the verification leeway (Clerk's tokens
/// live 60 s, so a Clerk session that ended, or was revoked, receives
/// events for at most 65 s more), and never later than
/// [`STREAM_MAX_LIFE`].
pub fn stream_deadline(exp: Option<i64>) -> tokio::time::Instant {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let leeway = crate::auth::server::LEEWAY_SECS as i64;
    let by_token =
        exp.map(|exp| Duration::from_secs(u64::try_from(exp + leeway - now).unwrap_or(0)));
    tokio::time::Instant::now() + by_token.map_or(STREAM_MAX_LIFE, |life| life.min(STREAM_MAX_LIFE))
}

/// What a stream carries between events.
struct StreamState {
    /// When the stream ends ([`stream_deadline`]).
    deadline: tokio::time::Instant,
    /// The last event given to the client (or the start position).
    cursor: Cursor,
    /// Still reading its user's log up to where the channel takes over.
    resuming: bool,
    /// Read from the log, not sent yet.
    buffer: std::collections::VecDeque<Arc<Delivered>>,
    channel: broadcast::Receiver<Arc<Delivered>>,
    closing: watch::Receiver<bool>,
    _presence: Option<StreamGuard>,
    /// Counts the stream in `/metrics` while it is open.
    _open: crate::server::metrics::OpenStream,
}

/// The next event a stream sends, `None` when it ends (deadline, shutdown).
async fn next_event(
    st: &mut StreamState,
    pool: &PgPool,
    hub: &Hub,
    me: UserId,
) -> Option<Arc<Delivered>> {
    loop {
        if let Some(event) = st.buffer.pop_front() {
            return Some(event);
        }
        if st.resuming {
            match events_after(pool, me, &st.cursor).await {
                Ok(page) => {
                    st.resuming = page.full;
                    st.cursor = page.last.unwrap_or(st.cursor);
                    st.buffer.extend(page.events);
                }
                Err(error) => {
                    tracing::warn!(%error, "event stream: database error while resuming");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = st.closing.wait_for(|closing| *closing) => return None,
                        () = tokio::time::sleep_until(st.deadline) => return None,
                    }
                }
            }
            continue;
        }
        let received = tokio::select! {
            received = st.channel.recv() => received,
            _ = st.closing.wait_for(|closing| *closing) => return None,
            () = tokio::time::sleep_until(st.deadline) => return None,
        };
        match received {
            // Already sent from the log while resuming.
            Ok(event) if event.cursor <= st.cursor => {}
            Ok(event) => {
                st.cursor = event.cursor;
                return Some(event);
            }
            // More events came at once than the channel keeps, or the client
            // did not take them for a while: read them from the log, or
            // resync when that is too far.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if let Ok(false) = needs_resync(pool, me, &st.cursor).await {
                    st.resuming = true;
                } else {
                    let position = hub.position();
                    st.cursor = start_point(pool, me, position).await.unwrap_or(position);
                    return Some(Delivered::new(
                        st.cursor,
                        &LiveEvent::Resync(ResyncEvent {}),
                    ));
                }
            }
            // The hub dropped the channel; no event can come any more.
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// `GET /api/events`: the signed-in user's Server-Sent Events
/// ([the SSE format](https://html.spec.whatwg.org/multipage/server-sent-events.html)).
///
/// Each event is a [`LiveEvent`] (`crate::realtime::Event`, the contract
/// the browser decodes): its `id` is its log position, `event` its kind,
/// `data` its fields as JSON. A reconnect sending `Last-Event-ID` gets
/// everything after it first, read from the log (`?last_event_id=` does the
/// same for a client that cannot set the header), or one `resync` (refetch
/// what you show) when it is too far behind ([`MAX_REPLAY`]), the log was
/// pruned past it, or the id is not one Knock wrote. Then events come from
/// the process reader ([`Hub::subscribe`]). A stream that falls more than
/// [`CHANNEL_CAPACITY`] events behind its channel reads them from the log,
/// or gets `resync` past [`MAX_REPLAY`]; it slows nobody else.
/// Comments every 15 s keep proxies from closing the stream. While it is
/// open the user is online (see [`Presence`]). The stream ends when the
/// session token it was opened with expires ([`stream_deadline`]); the
/// browser reconnects with the fresh token ClerkJS keeps and resumes where
/// it was.
///
/// A user holds at most [`AppState::max_streams_per_user`] streams on one
/// instance; a stream closed less than presence's offline grace ago still
/// counts, so opening and closing streams in a loop soon gets 429 and moves
/// nobody's presence.
///
/// # Errors
/// 401 without a session; 429 past the streams per user; 500 on a
/// database error.
pub async fn events(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    if state.hub.presence.streams_of(me.id) >= state.max_streams_per_user {
        return Err(AppError::TooManyRequests);
    }
    let expires = crate::auth::server::session_expiry(&state, &headers).await;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.last_event_id.as_deref())
        .map(|text| Cursor::parse(text).ok_or(()));
    let (channel, position) = state.hub.subscribe(me.id).await;
    let (cursor, resuming, resync) = match resume {
        None => (
            start_point(&state.pool, me.id, position).await?,
            false,
            false,
        ),
        Some(Ok(cursor)) if !needs_resync(&state.pool, me.id, &cursor).await? => {
            (cursor, true, false)
        }
        Some(_) => (
            start_point(&state.pool, me.id, position).await?,
            false,
            true,
        ),
    };
    let presence = state.hub.presence.open(&state.pool, me.id).await?;
    let pool = state.pool.clone();
    let hub = state.hub.clone();
    let start = StreamState {
        deadline: stream_deadline(expires),
        cursor,
        resuming,
        buffer: resync
            .then(|| Delivered::new(cursor, &LiveEvent::Resync(ResyncEvent {})))
            .into_iter()
            .collect(),
        channel,
        closing: state.hub.closing.subscribe(),
        _presence: Some(presence),
        _open: state.metrics.stream_opened(),
    };
    let stream = futures::stream::unfold(start, move |mut st| {
        let pool = pool.clone();
        let hub = hub.clone();
        async move {
            let event = next_event(&mut st, &pool, &hub, me.id).await?;
            let sse = Event::default()
                .id(event.cursor.to_string())
                .event(event.kind)
                .data(&*event.data);
            Some((Ok(sse), st))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// How long committed events may wait behind a running transaction before
/// the reader logs which one holds them.
pub const STALL_WARNING: Duration = Duration::from_secs(5);

/// The reader's view of a stall: since when nothing could be read while
/// events waited, and whether it said so.
#[derive(Default)]
struct Stall {
    since: Option<std::time::Instant>,
    warned: bool,
}

impl Stall {
    async fn observe(&mut self, pool: &PgPool, stalled: bool) {
        if !stalled {
            if self.warned {
                tracing::info!("event delivery resumed");
            }
            *self = Self::default();
            return;
        }
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        if self.warned || since.elapsed() < STALL_WARNING {
            return;
        }
        self.warned = true;
        match open_writers(pool).await.map(|w| w.into_iter().next()) {
            Ok(Some(holder)) => tracing::warn!(
                stalled_secs = since.elapsed().as_secs(),
                pid = holder.pid,
                state = holder.state.as_deref().unwrap_or("?"),
                application_name = %holder.application_name,
                transaction_secs = holder.seconds,
                "event delivery is waiting for a transaction to end \
                 (end it with pg_terminate_backend(pid) if it is stuck)"
            ),
            Ok(None) => tracing::warn!(
                stalled_secs = since.elapsed().as_secs(),
                "event delivery is waiting for a transaction this role cannot see"
            ),
            Err(error) => tracing::warn!(%error, "event delivery is stalled"),
        }
    }
}

/// A Postgres session holding an open write transaction.
#[derive(Debug)]
pub struct Holder {
    /// Its backend's process id (for `pg_terminate_backend`).
    pub pid: i32,
    /// `active`, `idle in transaction`, … (`None` when hidden from us).
    pub state: Option<String>,
    /// The client's `application_name`.
    pub application_name: String,
    /// How long its transaction has been open, in seconds.
    pub seconds: f64,
}

/// The open transactions on the Postgres server that have a transaction id
/// (writers), oldest first: the first is the one that holds the event log's
/// readers back. Only those this role may see.
///
/// # Errors
/// The database error.
pub async fn open_writers(pool: &PgPool) -> Result<Vec<Holder>, sqlx::Error> {
    sqlx::query_as!(
        Holder,
        r#"SELECT pid AS "pid!", state, application_name AS "application_name!",
                  extract(epoch FROM now() - xact_start)::float8 AS "seconds!"
             FROM pg_stat_activity
            WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
            ORDER BY age(backend_xid) DESC"#
    )
    .fetch_all(pool)
    .await
}

/// Rows [`prune`] deletes per statement: each batch is a short transaction
/// of its own, so pruning a week of events never holds locks, or a
/// snapshot that the log's readers wait behind, for long.
pub const PRUNE_BATCH: i64 = 1000;

/// Deletes events older than [`RETENTION`], moving `events_horizon` past
/// them, then typing and presence events older than a minute; each in
/// batches of [`PRUNE_BATCH`], oldest first. Returns how many rows went.
///
/// # Errors
/// The database error.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let row = sqlx::query!(
            r#"WITH gone AS (
                   DELETE FROM events WHERE id IN (
                       SELECT id FROM events
                        WHERE created_at < now() - $1 * interval '1 second'
                        ORDER BY tx_id, id LIMIT $2)
                   RETURNING tx_id),
               moved AS (
                   UPDATE events_horizon
                      SET pruned_through = GREATEST(pruned_through,
                                                    (SELECT tx_id FROM gone ORDER BY tx_id DESC LIMIT 1))
                    WHERE EXISTS (SELECT 1 FROM gone)
                   RETURNING pruned_through::text AS horizon)
               SELECT (SELECT count(*) FROM gone) AS "deleted!",
                      (SELECT horizon FROM moved) AS horizon"#,
            RETENTION.as_secs_f64(),
            PRUNE_BATCH,
        )
        .fetch_one(pool)
        .await?;
        let (deleted, horizon) = (row.deleted, row.horizon);
        total += deleted as u64;
        if let Some(horizon) = horizon {
            tracing::info!(%horizon, deleted, "pruned the event log");
        }
        if deleted < PRUNE_BATCH {
            break;
        }
    }
    loop {
        let deleted = sqlx::query!(
            "DELETE FROM events WHERE id IN (
                 SELECT id FROM events
                  WHERE kind = ANY($1) AND created_at < now() - interval '1 minute'
                  LIMIT $2)",
            &LiveEvent::EPHEMERAL as &[&str],
            PRUNE_BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// Forever: [`prune`] every ten minutes.
pub async fn prune_forever(pool: PgPool) {
    let mut ticks = tokio::time::interval(Duration::from_secs(600));
    loop {
        ticks.tick().await;
        if let Err(error) = prune(&pool).await {
            tracing::warn!(%error, "could not prune the event log");
        }
    }
}
