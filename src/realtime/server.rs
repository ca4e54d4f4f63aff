//! Real-time delivery: a durable per-user event log, Postgres
//! `LISTEN/NOTIFY` to wake every instance, and the SSE endpoint.
//!
//! Writers call [`record`] inside their transaction and [`Wakeups::wake`]
//! after commit (both through [`commit_with_event`]): every instance's
//! streams are woken by a coalesced NOTIFY of its own, outside the data
//! transaction (DESIGN §8). Each process runs one [`Hub`] with one
//! `PgListener`; a notification carries only user ids.
//! Each SSE connection reads its user's events from the log in commit-safe
//! order (see the `events` migration), so a lost wake-up only delays
//! delivery until the next poll ([`POLL`]) and a reconnect with
//! `Last-Event-ID` replays exactly what was missed.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use sqlx::{PgPool, Postgres, Transaction, postgres::PgListener};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{
    event::{Event as LiveEvent, ResyncEvent},
    presence::{Presence, StreamGuard},
};
use crate::{auth::server::CurrentUser, error::AppError, server::state::AppState};

/// The NOTIFY channel.
pub const CHANNEL: &str = "knock_events";
/// How often a quiet stream looks at the log anyway.
pub const POLL: Duration = Duration::from_secs(5);
/// Events read from the log per query.
const PAGE: i64 = 100;
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
    recipients: &[Uuid],
    event: &LiveEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO events (user_id, kind, payload) SELECT unnest($1::uuid[]), $2, $3")
        .bind(recipients)
        .bind(event.kind())
        .bind(event.data())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Ends a change: records the event (when there is one) in `tx`, commits,
/// then wakes the recipients ([`Wakeups::wake`]). With `None` it only
/// commits.
///
/// # Errors
/// The database error of the insert or the commit.
pub async fn commit_with_event(
    mut tx: Transaction<'_, Postgres>,
    wakeups: &Wakeups,
    recipients: &[Uuid],
    event: Option<LiveEvent>,
) -> Result<(), sqlx::Error> {
    let Some(event) = event else {
        return tx.commit().await;
    };
    record(&mut tx, recipients, &event).await?;
    tx.commit().await?;
    wakeups.wake(recipients);
    Ok(())
}

/// The most user ids in one NOTIFY payload: 36 characters and a comma each,
/// well under Postgres's 8000-byte limit on a payload.
const IDS_PER_NOTIFY: usize = 200;

/// This process's wake-ups: the users with streams open here, and the
/// recipients that the instances (this one too) still have to hear of.
///
/// A writer calls [`Wakeups::wake`] after its commit: the ids go into an
/// outbox that [`Wakeups::notify_until_closed`] sends as NOTIFYs of their own,
/// outside any data transaction (a NOTIFY takes a global lock at commit,
/// DESIGN §8). While one NOTIFY is on its way, further wake-ups gather, so
/// under load one NOTIFY carries many of them. A payload is
/// `"{user_id},{user_id},…"`. This process's own streams are woken through
/// its listener too, not at the commit: a read at once would mostly find
/// the new events behind other senders' transactions that are still
/// running, and poll again (see [`Page::pending`]).
#[derive(Debug)]
pub struct Wakeups {
    users: Mutex<HashMap<Uuid, Arc<Feed>>>,
    outbox: Mutex<HashSet<Uuid>>,
    outbox_ready: Notify,
}

impl Default for Wakeups {
    fn default() -> Self {
        Self {
            users: Mutex::default(),
            outbox: Mutex::default(),
            outbox_ready: Notify::new(),
        }
    }
}

impl Wakeups {
    /// After commit: wakes the streams of `recipients` on every instance
    /// with the next NOTIFY. Never fails: a lost wake-up only waits for the
    /// streams' next look at the log ([`POLL`]).
    pub fn wake(&self, recipients: &[Uuid]) {
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(recipients);
        self.outbox_ready.notify_one();
    }

    fn wake_here(&self, user: Uuid) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = users.get(&user) {
            if feed.wake.receiver_count() == 0 {
                users.remove(&user);
            } else {
                feed.wake.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    fn wake_all_here(&self) {
        let users: Vec<Uuid> = self
            .users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for user in users {
            self.wake_here(user);
        }
    }

    fn feed(&self, user: Uuid) -> Arc<Feed> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.entry(user).or_default().clone()
    }

    /// Forgets users with no open stream here (and their tails).
    fn forget_idle(&self) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.retain(|_, feed| feed.wake.receiver_count() > 0);
    }

    /// Sends what the outbox holds as NOTIFYs on [`CHANNEL`]: one round
    /// trip, at most [`IDS_PER_NOTIFY`] ids per payload.
    ///
    /// # Errors
    /// The database error; those ids are then dropped (the other instances'
    /// streams find the events at their next poll).
    pub async fn flush<'c>(
        &self,
        db: impl sqlx::Executor<'c, Database = Postgres>,
    ) -> Result<(), sqlx::Error> {
        let users: Vec<Uuid> = {
            let mut outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *outbox).into_iter().collect()
        };
        if users.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = users
            .chunks(IDS_PER_NOTIFY)
            .map(|chunk| {
                let ids: Vec<String> = chunk.iter().map(Uuid::to_string).collect();
                ids.join(",")
            })
            .collect();
        sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
            .bind(CHANNEL)
            .bind(payloads)
            .execute(db)
            .await?;
        Ok(())
    }

    /// Until `pool` closes: [`Wakeups::flush`] whenever the outbox has ids,
    /// on a connection of its own (taken from the pool and detached from
    /// it), so a wake-up never queues for a pooled connection behind the
    /// requests. The connection is closed with the pool.
    pub async fn notify_until_closed(self: Arc<Self>, pool: PgPool) {
        let mut connection: Option<sqlx::PgConnection> = None;
        let mut closed = std::pin::pin!(pool.close_event());
        loop {
            tokio::select! {
                () = self.outbox_ready.notified() => {}
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
                        // The ids stay in the outbox for the next try.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        self.outbox_ready.notify_one();
                        continue;
                    }
                }
            }
            let Some(conn) = connection.as_mut() else {
                continue;
            };
            if let Err(error) = self.flush(&mut *conn).await {
                tracing::warn!(%error, "could not NOTIFY; streams will catch up by polling");
                connection = None;
            }
        }
    }

    /// Wakes this process's streams of the users a NOTIFY payload names.
    fn on_notification(&self, payload: &str) {
        for id in payload.split(',') {
            if let Ok(user) = id.parse() {
                self.wake_here(user);
            }
        }
    }
}

/// This process's real-time state: the wake-ups ([`Wakeups`]) and presence
/// bookkeeping.
#[derive(Debug)]
pub struct Hub {
    /// Wake-ups of this process's streams, here and through NOTIFY.
    pub wakeups: Arc<Wakeups>,
    /// Open streams of this instance (see [`Presence`]).
    pub presence: Arc<Presence>,
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        let wakeups = Arc::new(Wakeups::default());
        Self {
            presence: Arc::new(Presence::new(wakeups.clone())),
            wakeups,
            closing: watch::channel(false).0,
        }
    }
}

impl Hub {
    /// Ends every open stream of this process (on shutdown), so that
    /// browsers reconnect, with `Last-Event-ID`, to an instance that stays.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that changes whenever `user` is woken.
    pub fn subscribe(&self, user: Uuid) -> watch::Receiver<u64> {
        self.wakeups.feed(user).wake.subscribe()
    }

    /// `user`'s settled events after `cursor` (at most [`PAGE`]), shared by
    /// all of this process's streams of that user: one stream reads the log
    /// while the others wait, then take what it read from [`Feed`]'s tail.
    /// So a message to a user with many open streams costs one query, and
    /// idle streams look at the log once per user per half [`POLL`]. A read
    /// that found [`Page::pending`] events is not shared: the next one asks
    /// the log again.
    ///
    /// # Errors
    /// The database error.
    pub async fn read(
        &self,
        pool: &PgPool,
        user: Uuid,
        cursor: Cursor,
    ) -> Result<Page, sqlx::Error> {
        let feed = self.wakeups.feed(user);
        let (woken, covered, last) = loop {
            let read_done = {
                let mut tail = feed.tail.lock().unwrap_or_else(|e| e.into_inner());
                let woken = *feed.wake.borrow();
                let last = tail.last();
                let covered = tail.base.is_some_and(|base| base <= cursor)
                    && last.is_some_and(|l| cursor <= l);
                let fresh = tail.read_gen == woken
                    && tail.read_at.is_some_and(|at| at.elapsed() < POLL / 2);
                if covered && (Some(cursor) < last || fresh) {
                    return Ok(Page {
                        events: tail.after(cursor),
                        pending: false,
                    });
                }
                if !tail.reading {
                    tail.reading = true;
                    break (woken, covered, last);
                }
                // Another stream of this user is reading the log: wait for
                // it, then look at the tail again. (A `Notified` made before
                // the reader's `notify_waiters` is woken by it.)
                feed.read_done.notified()
            };
            read_done.await;
        };
        // This stream reads for all of them; the guard lets the others go on
        // when it is done, even if this future is dropped half way.
        let _reading = Reading(&feed);
        let page = events_after(pool, user, &cursor).await?;
        let mut tail = feed.tail.lock().unwrap_or_else(|e| e.into_inner());
        if covered {
            let last = last.unwrap_or(cursor);
            tail.events
                .extend(page.events.iter().filter(|e| e.cursor > last).cloned());
        } else if last.is_none_or(|last| cursor > last) {
            tail.base = Some(cursor);
            tail.events = page.events.iter().cloned().collect();
        } else {
            // An older position than the tail: answer without keeping it.
            return Ok(page);
        }
        while tail.events.len() > TAIL {
            if let Some(oldest) = tail.events.pop_front() {
                tail.base = Some(oldest.cursor);
            }
        }
        tail.read_gen = woken;
        tail.read_at = (!page.pending).then(std::time::Instant::now);
        Ok(page)
    }

    /// Forgets users with no open stream here (and their tails).
    pub fn forget_idle(&self) {
        self.wakeups.forget_idle();
    }

    /// Listens on [`CHANNEL`] until `pool` closes, reconnecting after
    /// errors; after a reconnect every stream is woken (notifications may
    /// have been lost).
    pub async fn listen(self: Arc<Self>, pool: PgPool) {
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if let Err(error) = listener.listen(CHANNEL).await {
                        tracing::warn!(%error, "LISTEN failed");
                    } else {
                        self.wakeups.wake_all_here();
                        loop {
                            match listener.recv().await {
                                Ok(notification) => {
                                    self.wakeups.on_notification(notification.payload());
                                }
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

/// A position in a user's event log: (writing transaction id, event id),
/// ordered as the log is read. On the wire (SSE `id`, `Last-Event-ID`):
/// `"{tx_id}:{id}"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    tx_id: u64,
    id: i64,
}

impl Cursor {
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

/// Events kept per user in [`Feed`]'s tail.
const TAIL: usize = 64;

/// One user's wake-ups and the newest part of their log, in this process.
///
/// The tail sits behind a plain mutex that is never held across an await:
/// when a wake-up reaches many streams of the user, one of them reads the
/// log ([`Tail::reading`]) and the others wait for [`Feed::read_done`],
/// which wakes them all at once, so they copy from the tail side by side
/// instead of taking turns at a lock.
#[derive(Debug)]
struct Feed {
    wake: watch::Sender<u64>,
    tail: Mutex<Tail>,
    read_done: Notify,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            wake: watch::channel(0).0,
            tail: Mutex::default(),
            read_done: Notify::new(),
        }
    }
}

/// Held by the stream that reads the log for its user's other streams;
/// dropped, it lets them go on.
struct Reading<'a>(&'a Feed);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0
            .tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reading = false;
        self.0.read_done.notify_waiters();
    }
}

/// Every settled event of a user after `base` up to the last of `events`.
#[derive(Debug, Default)]
struct Tail {
    base: Option<Cursor>,
    events: VecDeque<Delivered>,
    /// The wake-up count when the log was last read.
    read_gen: u64,
    read_at: Option<std::time::Instant>,
    /// A stream is reading the log for this user now.
    reading: bool,
}

impl Tail {
    fn last(&self) -> Option<Cursor> {
        self.events.back().map(|e| e.cursor).or(self.base)
    }

    fn after(&self, cursor: Cursor) -> Vec<Delivered> {
        let start = self.events.partition_point(|e| e.cursor <= cursor);
        self.events
            .range(start..)
            .take(PAGE as usize)
            .cloned()
            .collect()
    }
}

/// The newest settled position of `user`'s log (where a new stream starts).
///
/// (The log is ordered by the `xid8` column; its text, `tx`, would sort
/// "100" before "99".)
async fn head(pool: &PgPool, user: Uuid) -> Result<Cursor, sqlx::Error> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT tx_id::text AS tx, id FROM events
         WHERE user_id = $1 AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
         ORDER BY tx_id DESC, id DESC LIMIT 1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Cursor { tx_id: 0, id: 0 }, |(tx_id, id)| {
        Cursor::from_row(&tx_id, id)
    }))
}

/// One delivered event, encoded once for all of a user's streams in this
/// process (see [`Hub::read`]): copies are reference counts.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Where it is in the log.
    pub cursor: Cursor,
    /// The event's kind ([`LiveEvent::kind`]), the SSE `event` field.
    pub kind: &'static str,
    /// The event's data as JSON text ([`LiveEvent::data`]), the SSE `data`.
    pub data: Arc<str>,
}

impl Delivered {
    /// `event` at `cursor`, encoded.
    fn new(cursor: Cursor, event: &LiveEvent) -> Self {
        Self {
            cursor,
            kind: event.kind(),
            data: event.data().to_string().into(),
        }
    }
}

/// What one read of a user's log found.
#[derive(Debug, Default)]
pub struct Page {
    /// The settled events after the cursor, oldest first, at most [`PAGE`].
    pub events: Vec<Delivered>,
    /// The user has committed events that are not settled yet: an older
    /// transaction is still running, so they cannot be delivered in order
    /// yet. Read again shortly instead of waiting for the next wake-up (the
    /// older transaction's own wake-up may be for other users).
    pub pending: bool,
}

/// The settled events of `user` after `after`, oldest first, at most
/// [`PAGE`]; and whether committed events wait behind a running
/// transaction ([`Page::pending`]). One query.
///
/// # Errors
/// The database error.
pub async fn events_after(pool: &PgPool, user: Uuid, after: &Cursor) -> Result<Page, sqlx::Error> {
    type Row = (Option<String>, Option<i64>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "(SELECT tx_id::text AS tx, id, kind, payload::text FROM events
          WHERE user_id = $1 AND (tx_id, id) > ($2::xid8, $3)
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
            AND NOT (kind = 'typing' AND created_at < now() - $5 * interval '1 second')
          ORDER BY tx_id, id LIMIT $4)
         UNION ALL
         SELECT NULL, NULL, NULL, NULL
          WHERE EXISTS (SELECT 1 FROM events WHERE user_id = $1
                          AND tx_id >= pg_snapshot_xmin(pg_current_snapshot()))",
    )
    .bind(user)
    .bind(after.tx_id.to_string())
    .bind(after.id)
    .bind(PAGE)
    .bind(TYPING_TTL.as_secs_f64())
    .fetch_all(pool)
    .await?;
    let mut page = Page::default();
    for row in rows {
        match row {
            (Some(tx_id), Some(id), Some(kind), Some(payload)) => {
                let cursor = Cursor::from_row(&tx_id, id);
                match LiveEvent::decode(&kind, &payload) {
                    Ok(event) => page.events.push(Delivered::new(cursor, &event)),
                    // Only `Event`s are written to the log; a row that is
                    // not one is left out, with a warning.
                    Err(error) => {
                        tracing::warn!(%error, %kind, %cursor, "skipped an event the log cannot decode");
                    }
                }
            }
            _ => page.pending = true,
        }
    }
    page.events.sort_by_key(|e| e.cursor);
    Ok(page)
}

/// Whether a stream resuming after `cursor` must resync instead: the log
/// was pruned past it, or more than [`MAX_REPLAY`] events wait.
async fn needs_resync(pool: &PgPool, user: Uuid, cursor: &Cursor) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT $2::xid8 <= (SELECT pruned_through FROM events_horizon) AND $2::xid8 <> '0'
             OR (SELECT count(*) FROM (SELECT 1 FROM events
                  WHERE user_id = $1 AND (tx_id, id) > ($2::xid8, $3) LIMIT $4 + 1) w) > $4",
    )
    .bind(user)
    .bind(cursor.tx_id.to_string())
    .bind(cursor.id)
    .bind(MAX_REPLAY)
    .fetch_one(pool)
    .await
}

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

/// What a stream carries between polls.
struct StreamState {
    /// When the stream ends ([`stream_deadline`]).
    deadline: tokio::time::Instant,
    cursor: Cursor,
    wake: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    buffer: VecDeque<Delivered>,
    /// How long to wait before reading again while events are pending.
    retry: Duration,
    _presence: Option<StreamGuard>,
}

/// The first and the longest wait of a stream whose user has events behind
/// a running transaction ([`Page::pending`]).
const RETRY_FIRST: Duration = Duration::from_millis(1);
const RETRY_LAST: Duration = Duration::from_millis(64);

/// `GET /api/events`: the signed-in user's Server-Sent Events
/// ([the SSE format](https://html.spec.whatwg.org/multipage/server-sent-events.html)).
///
/// Each event is an [`LiveEvent`] (`crate::realtime::Event`, the contract
/// the browser decodes): its `id` is its log position, `event` its kind,
/// `data` its fields as JSON (ids only). A reconnect sending `Last-Event-ID` gets
/// everything after it first (`?last_event_id=` does the same for a client
/// that cannot set the header), or one `resync` (refetch what you show) when
/// it is too far behind ([`MAX_REPLAY`]) or the log was pruned past it.
/// Comments every 15 s keep proxies from closing the stream. The stream
/// pulls from the log as the client reads, so a slow client holds no buffer
/// beyond one page and slows nobody else. While it is open the user is
/// online (see [`Presence`]). The stream ends when the session token it was
/// opened with expires ([`stream_deadline`]); the browser reconnects with
/// the fresh token ClerkJS keeps and resumes where it was.
///
/// # Errors
/// 401 without a session; 500 on a database error.
pub async fn events(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let expires = crate::auth::server::session_expiry(&state, &headers).await;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query.last_event_id.as_deref())
        .and_then(Cursor::parse);
    let (cursor, buffer) = match resume {
        Some(cursor) if !needs_resync(&state.pool, me.id, &cursor).await? => {
            (cursor, VecDeque::new())
        }
        resume => {
            let head = head(&state.pool, me.id).await?;
            let resync = resume
                .is_some()
                .then(|| Delivered::new(head, &LiveEvent::Resync(ResyncEvent {})));
            (head, resync.into_iter().collect())
        }
    };
    let wake = state.hub.subscribe(me.id);
    let presence = state.hub.presence.open(&state.pool, me.id).await?;
    let pool = state.pool.clone();
    let hub = state.hub.clone();
    let start = StreamState {
        deadline: stream_deadline(expires),
        cursor,
        wake,
        closing: state.hub.closing.subscribe(),
        buffer,
        retry: RETRY_FIRST,
        _presence: Some(presence),
    };
    let stream = futures::stream::unfold(start, move |mut st| {
        let pool = pool.clone();
        let hub = hub.clone();
        async move {
            loop {
                if tokio::time::Instant::now() >= st.deadline {
                    return None;
                }
                if let Some(event) = st.buffer.pop_front() {
                    st.cursor = event.cursor;
                    let sse = Event::default()
                        .id(event.cursor.to_string())
                        .event(event.kind)
                        .data(&*event.data);
                    return Some((Ok(sse), st));
                }
                match hub.read(&pool, me.id, st.cursor).await {
                    Ok(page) if !page.events.is_empty() => {
                        st.retry = RETRY_FIRST;
                        st.buffer.extend(page.events);
                    }
                    Ok(page) => {
                        // Events behind a running transaction: look again
                        // soon (1, 2, 4, … ms), else at the next wake-up.
                        let wait = if page.pending {
                            let wait = st.retry;
                            st.retry = (st.retry * 2).min(RETRY_LAST);
                            wait
                        } else {
                            POLL
                        };
                        tokio::select! {
                            _ = tokio::time::timeout(wait, st.wake.changed()) => {}
                            _ = st.closing.wait_for(|closing| *closing) => return None,
                            _ = tokio::time::sleep_until(st.deadline) => return None,
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "event stream: database error");
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Deletes events older than [`RETENTION`] (and typing or presence events
/// older than a minute), moving `events_horizon` past the pruned ones.
///
/// # Errors
/// The database error.
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let old: Option<String> = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM events WHERE created_at < now() - $1 * interval '1 second'
                       RETURNING tx_id)
         UPDATE events_horizon
         SET pruned_through = GREATEST(pruned_through,
                                       (SELECT tx_id FROM gone ORDER BY tx_id DESC LIMIT 1))
         WHERE EXISTS (SELECT 1 FROM gone)
         RETURNING pruned_through::text",
    )
    .bind(RETENTION.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    let ephemeral = sqlx::query(
        "DELETE FROM events WHERE kind IN ('typing', 'presence')
           AND created_at < now() - interval '1 minute'",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    if let Some(horizon) = old {
        tracing::info!(%horizon, "pruned the event log");
    }
    Ok(ephemeral)
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
