//! Group commit for sends: the sends that arrive while earlier ones are
//! being written share one transaction, so they cost one round trip and
//! one commit instead of one each. Every send, alone or in a batch, is
//! written by the one SQL function `send_messages` (migration
//! `20261201000001_send_messages`, its events as `20261202000001`
//! logs them), in one statement.
//!
//! A send joins a queue. While fewer than [`MAX_IN_FLIGHT`] batches are
//! being written, it starts a batch at once (alone, on a quiet server);
//! otherwise it waits, and the next batch to start takes up to
//! [`MAX_BATCH`] of the queued sends. Batches run on tasks of their own, so
//! a request that goes away does not cut short the sends of others. When a
//! batch fails as a whole (one send's unexpected error aborts the
//! transaction), each of its sends is tried again alone, and each gets its
//! own answer.
//!
//! The queue holds at most [`MAX_QUEUED`] sends; past it a send is refused
//! at once ([`SendError::QueueFull`]). A send whose request went away while
//! it waited (the client gave up, or the request timed out) is dropped from
//! the queue, not written later.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::{Attachment, Message, MessageBody, ReplyTo};
use crate::ids::{AttachmentId, DmId, MessageId, UserId};

/// The most batches written at once (each holds one pooled connection):
/// on two cores, more gave no more messages/s and longer tails.
pub const MAX_IN_FLIGHT: usize = 2;
/// The most sends in one batch.
pub const MAX_BATCH: usize = 64;
/// The most sends waiting for a batch; more are refused.
pub const MAX_QUEUED: usize = 1024;

/// Why a send got no row.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// [`MAX_QUEUED`] sends already wait.
    #[error("the send queue is full")]
    QueueFull,
    /// The database failed this send.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<SendError> for crate::error::AppError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::QueueFull => {
                tracing::warn!(max = MAX_QUEUED, "send queue full; refusing a send");
                Self::Unavailable
            }
            SendError::Database(error) => error.into(),
        }
    }
}

/// What `send_messages` answered for one send.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `sent`, `existing` (a retried `client_id`), `client_id_used`,
    /// `not_found`, `not_active`, `read_only` or `blocked`.
    pub outcome: String,
    /// The message, for `sent` and `existing`.
    pub message: Option<Message>,
}

/// One send: one item of `send_messages`'s arrays (the body already
/// checked).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The DM.
    pub dm_id: DmId,
    /// The sender.
    pub sender_id: UserId,
    /// The checked body; `None` for an image without a caption.
    pub body: Option<MessageBody>,
    /// The sender's idempotency key.
    pub client_id: Uuid,
    /// The message it answers.
    pub reply_to_id: Option<MessageId>,
    /// Its image, uploaded to the DM by the sender.
    pub attachment_id: Option<AttachmentId>,
}

impl Outgoing {
    /// The text as stored: empty for an image without a caption.
    fn text(&self) -> &str {
        self.body.as_ref().map_or("", MessageBody::as_str)
    }
}

struct Queued {
    send: Outgoing,
    reply: oneshot::Sender<Result<Sent, sqlx::Error>>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Queued>,
    in_flight: usize,
}

/// This process's send queue (one in [`AppState`](crate::server::state::AppState)).
#[derive(Default)]
pub struct Sends {
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for Sends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sends").finish_non_exhaustive()
    }
}

impl Sends {
    /// Writes `send` with whatever sends are queued beside it; answers
    /// with its row of `send_messages` (`outcome` and the
    /// message's columns as `messages/list` returns them).
    ///
    /// # Errors
    /// [`SendError::QueueFull`] past [`MAX_QUEUED`]; the database error of
    /// this send alone (after its batch failed).
    pub async fn send(self: &Arc<Self>, pool: &PgPool, send: Outgoing) -> Result<Sent, SendError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.waiting.len() >= MAX_QUEUED {
                return Err(SendError::QueueFull);
            }
            queue.waiting.push_back(Queued { send, reply });
            let start = queue.in_flight < MAX_IN_FLIGHT;
            if start {
                queue.in_flight += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().write(pool.clone()));
        }
        Ok(answer.await.unwrap_or(Err(sqlx::Error::WorkerCrashed))?)
    }

    /// How many sends wait for a batch to take them.
    pub fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .len()
    }

    /// Writes batches until the queue is empty.
    async fn write(self: Arc<Self>, pool: PgPool) {
        loop {
            let batch: Vec<Queued> = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if queue.waiting.is_empty() {
                    queue.in_flight -= 1;
                    return;
                }
                // Sends whose request went away are not written.
                queue.waiting.retain(|queued| !queued.reply.is_closed());
                let n = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..n).collect()
            };
            if !batch.is_empty() {
                write_batch(&pool, batch).await;
            }
        }
    }
}

/// `send_messages`'s row for one send: its outcome and, for `sent` and
/// `existing`, the message.
macro_rules! sent {
    ($row:expr) => {{
        let row = $row;
        let message = match (
            row.id,
            row.dm_id,
            row.seq,
            row.sender_id,
            row.body,
            row.client_id,
            row.created_at,
        ) {
            (
                Some(id),
                Some(dm_id),
                Some(seq),
                Some(sender_id),
                Some(body),
                Some(client_id),
                Some(created_at),
            ) => Some(Message {
                id,
                dm_id,
                seq,
                sender_id,
                body,
                client_id,
                created_at,
                edited_at: row.edited_at,
                deleted: row.deleted.unwrap_or(false),
                reactions: Default::default(),
                reply_to: row.reply_to,
                attachment: row.attachment,
            }),
            _ => None,
        };
        Sent {
            outcome: row.outcome,
            message,
        }
    }};
}

async fn write_batch(pool: &PgPool, batch: Vec<Queued>) {
    let sends: Vec<&Outgoing> = batch.iter().map(|q| &q.send).collect();
    let rows = sqlx::query!(
        r#"SELECT ord, outcome AS "outcome!", id AS "id: MessageId", dm_id AS "dm_id: DmId", seq,
                  sender_id AS "sender_id: UserId", body, client_id,
                  date_trunc('milliseconds', created_at) AS created_at,
                  date_trunc('milliseconds', edited_at) AS edited_at,
                  deleted_at IS NOT NULL AS deleted,
                  message_reply_to(reply_to_id) AS "reply_to: ReplyTo",
                  attachment_json(attachment_id) AS "attachment: Attachment"
           FROM send_messages($1, $2, $3, $4, $5, $6) ORDER BY ord"#,
        &sends.iter().map(|s| s.dm_id).collect::<Vec<_>>() as &[DmId],
        &sends.iter().map(|s| s.sender_id).collect::<Vec<_>>() as &[UserId],
        &sends.iter().map(|s| s.text()).collect::<Vec<_>>() as &[&str],
        &sends.iter().map(|s| s.client_id).collect::<Vec<_>>(),
        &sends
            .iter()
            .map(|s| s.reply_to_id.map(|id| id.0))
            .collect::<Vec<_>>() as &[Option<Uuid>],
        &sends
            .iter()
            .map(|s| s.attachment_id.map(|id| id.0))
            .collect::<Vec<_>>() as &[Option<Uuid>],
    )
    .fetch_all(pool)
    .await
    .map(|rows| rows.into_iter().map(|row| sent!(row)).collect::<Vec<_>>());
    match rows {
        Ok(rows) if rows.len() == batch.len() => {
            for (queued, row) in batch.into_iter().zip(rows) {
                let _ = queued.reply.send(Ok(row));
            }
        }
        result => {
            match &result {
                Err(error) => {
                    tracing::warn!(%error, sends = batch.len(), "a batch of sends failed; each alone");
                }
                Ok(rows) => tracing::error!(
                    rows = rows.len(),
                    sends = batch.len(),
                    "send_messages answered a row count other than its sends; each alone"
                ),
            }
            for queued in batch {
                let row = write_alone(pool, &queued.send).await;
                let _ = queued.reply.send(row);
            }
        }
    }
}

/// `send` in a transaction of its own (`send_messages` with one item).
async fn write_alone(pool: &PgPool, send: &Outgoing) -> Result<Sent, sqlx::Error> {
    sqlx::query!(
        r#"SELECT ord, outcome AS "outcome!", id AS "id: MessageId", dm_id AS "dm_id: DmId", seq,
                  sender_id AS "sender_id: UserId", body, client_id,
                  date_trunc('milliseconds', created_at) AS created_at,
                  date_trunc('milliseconds', edited_at) AS edited_at,
                  deleted_at IS NOT NULL AS deleted,
                  message_reply_to(reply_to_id) AS "reply_to: ReplyTo",
                  attachment_json(attachment_id) AS "attachment: Attachment"
           FROM send_messages($1, $2, $3, $4, $5, $6)"#,
        &[send.dm_id] as &[DmId],
        &[send.sender_id] as &[UserId],
        &[send.text()] as &[&str],
        &[send.client_id],
        &[send.reply_to_id.map(|id| id.0)] as &[Option<Uuid>],
        &[send.attachment_id.map(|id| id.0)] as &[Option<Uuid>],
    )
    .fetch_one(pool)
    .await
    .map(|row| sent!(row))
}
