//! Presence: a user is online while they hold an open event stream on any
//! live server instance (DESIGN §5).
//!
//! Each instance counts its open streams per user in memory, writes the
//! count to the `presence` table when a user's first stream opens or last
//! closes there ([`OFFLINE_GRACE`] after it closed), and beats in
//! `instances` every [`HEARTBEAT`]; an instance silent for [`STALE_AFTER`]
//! is swept by the others, so a killed server does not keep its users
//! online. When a user goes online or offline across all instances, their
//! partners in ACTIVE DMs (and nobody else) get a `presence` event
//! `{user_id, online, last_seen_at}`; going offline stores when in
//! `users.last_seen_at`. Changes of one user are serialised with a
//! transaction-scoped advisory lock on the user id.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    event::{Event, PresenceEvent},
    server::{Wakeups, commit_with_event},
};
use crate::ids::UserId;

/// How often an instance says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// An instance not heard from for this long is considered gone.
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// How long a closed stream still counts: a browser reconnecting within it
/// (every stream ends when its session token expires, see
/// `realtime::server::events`) does not flicker offline and back.
pub const OFFLINE_GRACE: Duration = Duration::from_secs(10);

/// The users who may see `user`'s presence: the other members of their
/// ACTIVE DMs with no block between the two, either way.
async fn partners(
    tx: &mut Transaction<'_, Postgres>,
    user: UserId,
) -> Result<Vec<UserId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT o.user_id AS "user_id: UserId" FROM dm_members me
           JOIN dms d ON d.id = me.dm_id AND d.status = 'ACTIVE'
           JOIN dm_members o ON o.dm_id = d.id AND o.user_id <> me.user_id
           WHERE me.user_id = $1 AND NOT blocked_between($1, o.user_id)"#,
        user as UserId,
    )
    .fetch_all(&mut **tx)
    .await
}

async fn lock_user(tx: &mut Transaction<'_, Postgres>, user: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))",
        user as UserId,
    )
    .execute(&mut **tx)
    .await?;
    online(tx, user).await
}

/// Whether `user` has a stream on a live instance (`has_live_stream`).
async fn online(tx: &mut Transaction<'_, Postgres>, user: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT has_live_stream($1) AS "online!""#, user as UserId)
        .fetch_one(&mut **tx)
        .await
}

/// Whether `viewer` sees `user` online: `user` has a stream on a live
/// instance and no block stands between the two, either way.
///
/// # Errors
/// The database error.
pub async fn visible_online(
    tx: &mut Transaction<'_, Postgres>,
    viewer: UserId,
    user: UserId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT has_live_stream($1) AND NOT blocked_between($1, $2) AS "online!""#,
        user as UserId,
        viewer as UserId,
    )
    .fetch_one(&mut **tx)
    .await
}

/// Ends a presence change: when `user`'s online state went from `before`
/// to what it is now, tells their partners. Going offline records when
/// (`users.last_seen_at`): `closed_ago` before now, when the last stream
/// closed.
async fn finish(
    mut tx: Transaction<'_, Postgres>,
    wakeups: &Wakeups,
    user: UserId,
    before: bool,
    closed_ago: Duration,
) -> Result<(), sqlx::Error> {
    let now = online(&mut tx, user).await?;
    if now == before {
        return tx.commit().await;
    }
    let last_seen_at = if now {
        None
    } else {
        sqlx::query_scalar!(
            "UPDATE users SET last_seen_at = now() - $2 * interval '1 second'
             WHERE id = $1 RETURNING last_seen_at",
            user as UserId,
            closed_ago.as_secs_f64(),
        )
        .fetch_optional(&mut *tx)
        .await?
        .flatten()
    };
    let recipients = partners(&mut tx, user).await?;
    let event = Event::Presence(PresenceEvent {
        user_id: user,
        online: now,
        last_seen_at,
    });
    commit_with_event(tx, wakeups, &recipients, Some(event)).await
}

/// This instance's presence bookkeeping.
#[derive(Debug)]
pub struct Presence {
    instance: Uuid,
    wakeups: Arc<Wakeups>,
    /// Open streams per user here; the database hears only of the first
    /// and the last.
    local: Mutex<HashMap<UserId, u32>>,
}

impl Presence {
    /// No streams yet, under a new instance id; presence changes wake
    /// every instance's reader through `wakeups`.
    pub fn new(wakeups: Arc<Wakeups>) -> Self {
        Self {
            instance: Uuid::new_v4(),
            wakeups,
            local: Mutex::default(),
        }
    }

    /// `user`'s streams on this instance: those open, and those closed less
    /// than [`OFFLINE_GRACE`] ago.
    pub fn streams_of(&self, user: UserId) -> u32 {
        let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        local.get(&user).copied().unwrap_or(0)
    }

    /// A stream of `user` opened here; the returned guard closes it when
    /// dropped.
    ///
    /// # Errors
    /// The database error.
    pub async fn open(
        self: &Arc<Self>,
        pool: &PgPool,
        user: UserId,
    ) -> Result<StreamGuard, sqlx::Error> {
        let first = {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            let count = local.entry(user).or_insert(0);
            *count += 1;
            *count == 1
        };
        let guard = StreamGuard {
            presence: self.clone(),
            pool: pool.clone(),
            user,
        };
        if first {
            // On error the guard's drop takes the count back.
            self.sync(pool, user, Duration::ZERO).await?;
        }
        Ok(guard)
    }

    async fn close(&self, pool: &PgPool, user: UserId) -> Result<(), sqlx::Error> {
        let last = {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            match local.get_mut(&user) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                _ => {
                    local.remove(&user);
                    true
                }
            }
        };
        if last {
            // The stream closed one grace period ago.
            self.sync(pool, user, OFFLINE_GRACE).await?;
        }
        Ok(())
    }

    /// Writes this instance's stream count of `user` (as it is when the
    /// user's lock is held, so the last writer writes the latest count) and
    /// tells partners when that changed whether the user is online (gone
    /// offline: `closed_ago`, see [`finish`]).
    async fn sync(
        &self,
        pool: &PgPool,
        user: UserId,
        closed_ago: Duration,
    ) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        let before = lock_user(&mut tx, user).await?;
        let count = self
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .copied()
            .unwrap_or(0);
        if count > 0 {
            // The instance's row, unless it is there already (it goes away
            // only in a sweep). An existing row is only read: an upsert
            // would wait for any uncommitted write to it (a heartbeat,
            // another user's first stream here), so users coming online
            // at once would each wait for the one before to commit.
            sqlx::query!(
                "INSERT INTO instances (id) SELECT $1
                 WHERE NOT EXISTS (SELECT 1 FROM instances WHERE id = $1)
                 ON CONFLICT (id) DO NOTHING",
                self.instance,
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "INSERT INTO presence (instance_id, user_id, streams) VALUES ($1, $2, $3)
                 ON CONFLICT (instance_id, user_id) DO UPDATE SET streams = EXCLUDED.streams",
                self.instance,
                user as UserId,
                i32::try_from(count).unwrap_or(i32::MAX),
            )
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query!(
                "DELETE FROM presence WHERE instance_id = $1 AND user_id = $2",
                self.instance,
                user as UserId,
            )
            .execute(&mut *tx)
            .await?;
        }
        finish(tx, &self.wakeups, user, before, closed_ago).await
    }

    /// Forever: beats every [`HEARTBEAT`] and sweeps instances silent for
    /// [`STALE_AFTER`], telling the partners of users who went offline.
    pub async fn heartbeat(self: Arc<Self>, pool: PgPool) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        loop {
            ticks.tick().await;
            if let Err(error) = self.beat(&pool).await {
                tracing::warn!(%error, "presence heartbeat failed");
            }
        }
    }

    async fn beat(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let alive = sqlx::query!(
            "UPDATE instances SET seen_at = now() WHERE id = $1",
            self.instance
        )
        .execute(pool)
        .await?
        .rows_affected();
        if alive == 0 {
            // Swept while silent (or nothing written yet): write the counts again.
            let users: Vec<UserId> = self
                .local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .copied()
                .collect();
            for user in users {
                self.sync(pool, user, Duration::ZERO).await?;
            }
        }
        let stale = sqlx::query_scalar!(
            "SELECT id FROM instances WHERE seen_at < now() - $1 * interval '1 second'",
            STALE_AFTER.as_secs_f64(),
        )
        .fetch_all(pool)
        .await?;
        for instance in stale {
            self.sweep(pool, instance).await?;
        }
        Ok(())
    }

    /// Removes `instance` and its streams (this one's on shutdown, another's
    /// when it went silent), telling partners of users now offline.
    ///
    /// # Errors
    /// The database error.
    pub async fn sweep(&self, pool: &PgPool, instance: Uuid) -> Result<(), sqlx::Error> {
        let users = sqlx::query_scalar!(
            r#"DELETE FROM presence WHERE instance_id = $1 RETURNING user_id AS "user_id: UserId""#,
            instance,
        )
        .fetch_all(pool)
        .await?;
        sqlx::query!("DELETE FROM instances WHERE id = $1", instance)
            .execute(pool)
            .await?;
        for user in users {
            let mut tx = pool.begin().await?;
            lock_user(&mut tx, user).await?;
            // Those streams counted until a moment ago.
            finish(tx, &self.wakeups, user, true, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// On shutdown: this instance's streams end.
    pub async fn leave(&self, pool: &PgPool) {
        if let Err(error) = self.sweep(pool, self.instance).await {
            tracing::warn!(%error, "could not clear presence on shutdown");
        }
    }
}

/// One open stream; closing it (drop) may take its user offline.
#[derive(Debug)]
pub struct StreamGuard {
    presence: Arc<Presence>,
    pool: PgPool,
    user: UserId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let (presence, pool, user) = (self.presence.clone(), self.pool.clone(), self.user);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep(OFFLINE_GRACE).await;
                if let Err(error) = presence.close(&pool, user).await {
                    tracing::warn!(%error, "could not record a closed stream");
                }
            });
        }
    }
}
