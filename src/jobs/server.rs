//! The job queue: a `FOR UPDATE SKIP LOCKED` queue on the `jobs` table that
//! every instance works on (see the migration `…_jobs.sql` for the columns).
//!
//! - **Claiming.** An instance claims the oldest due job and leases it
//!   (`status = 'running'`, `run_at` = now + [`LEASE`]). An instance that
//!   dies mid-run leaves the lease to run out; then any instance claims the
//!   job again.
//! - **Steps.** A job is a sequence of named steps ([`Run::step`]); each
//!   step's outcome is recorded as soon as it finishes, and a recorded step
//!   is not run again when the job is retried.
//! - **Failures.** A [`JobError::Retry`] schedules the next attempt after an
//!   exponential backoff ([`backoff`]) until `max_attempts` is used up; a
//!   [`JobError::Permanent`] (or the last attempt) leaves the job `failed`,
//!   visible with its error until an operator retries it ([`retry`]).

use std::{future::Future, sync::Arc, time::Duration};

use serde_json::{Map, Value};
use sqlx::{PgExecutor, PgPool};
use tokio::sync::Notify;

use super::{JobRun, JobStatus, JobStep, Kind};
use crate::{
    mail::Mailer,
    server::database::{PRUNE_BATCH, delete_in_batches},
};

/// How long a claimed job is reserved for the instance running it.
pub const LEASE: Duration = Duration::from_secs(300);
/// How often an idle worker looks for due jobs when nothing wakes it (a job
/// enqueued on another instance, a retry coming due).
pub const POLL: Duration = Duration::from_secs(2);
/// Runs one instance works on at once: an email waits on its SMTP server
/// for a while, and the others need not wait behind it.
pub const WORKERS: usize = 4;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt later (a database error, an SMTP server that
    /// is down or answers 4xx).
    #[error("{0}")]
    Retry(String),
    /// Will fail the same way however often it runs (a payload that does
    /// not parse, an SMTP 5xx): the job stops as `failed`.
    #[error("{0}")]
    Permanent(String),
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        Self::Retry(format!("database: {error}"))
    }
}

/// What the jobs need besides the pool, and the worker's wake-up.
#[derive(Debug)]
pub struct Jobs {
    /// Where welcome emails go.
    pub mailer: Mailer,
    /// Wakes this instance's worker when a job was enqueued here.
    pub wakeup: Notify,
}

impl Jobs {
    /// The jobs' context around `mailer`.
    pub fn new(mailer: Mailer) -> Self {
        Self {
            mailer,
            wakeup: Notify::new(),
        }
    }
}

/// Enqueues the job `kind` for `subject`, unless that job exists already
/// (one per kind and subject). Returns whether it was new. Runs on
/// `executor`, so a caller's transaction enqueues only if it commits.
///
/// # Errors
/// The database error.
pub async fn enqueue<'e>(
    executor: impl PgExecutor<'e>,
    kind: Kind,
    subject: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO jobs (kind, subject, max_attempts) VALUES ($1, $2, $3)
         ON CONFLICT (kind, subject) DO NOTHING",
        kind.as_str(),
        subject,
        kind.max_attempts(),
    )
    .execute(executor)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The wait after `attempts` failed attempts: 2^attempts seconds, at most
/// [`MAX_BACKOFF`].
pub fn backoff(attempts: i32) -> Duration {
    let secs = 2u64.saturating_pow(attempts.clamp(0, 20) as u32);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// One claimed job, running: its subject and the steps already done.
#[derive(Debug)]
pub struct Run {
    /// The job's id.
    pub id: i64,
    /// What kind of work.
    pub kind: Kind,
    /// What it is about (a `svix-id`, a user id).
    pub subject: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    done: Map<String, Value>,
    pool: PgPool,
}

impl Run {
    /// Runs the step `name` unless an earlier attempt finished it, and
    /// records its outcome (a short text for operators) at once. Returns the
    /// outcome, the recorded one when the step was done before.
    ///
    /// # Errors
    /// The step's error; or [`JobError::Retry`] when the outcome could not be
    /// recorded (the step then runs again on the next attempt).
    pub async fn step<F, Fut>(&mut self, name: &str, step: F) -> Result<String, JobError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, JobError>>,
    {
        if let Some(outcome) = self.done.get(name).and_then(|s| s.get("outcome")) {
            return Ok(outcome.as_str().unwrap_or_default().to_owned());
        }
        let outcome = step().await?;
        sqlx::query!(
            "UPDATE jobs SET steps = steps || jsonb_build_object($2::text,
                    jsonb_build_object('outcome', $3::text, 'at', now())),
                    updated_at = now()
             WHERE id = $1",
            self.id,
            name,
            outcome,
        )
        .execute(&self.pool)
        .await?;
        self.done
            .insert(name.to_owned(), serde_json::json!({ "outcome": outcome }));
        Ok(outcome)
    }
}

/// Claims the oldest due job (pending, retrying, or running with an expired
/// lease), or `None` when none is due.
///
/// # Errors
/// The database error.
pub async fn claim(pool: &PgPool) -> Result<Option<Run>, sqlx::Error> {
    let row = sqlx::query!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1,
                run_at = now() + make_interval(secs => $1), updated_at = now()
         WHERE id = (
             SELECT id FROM jobs
             WHERE status IN ('pending', 'retrying', 'running') AND run_at <= now()
             ORDER BY run_at, id
             FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING id, kind, subject, attempts, steps",
        LEASE.as_secs_f64(),
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let Some(kind) = Kind::parse(&row.kind) else {
        // The schema's check allows only known kinds; an unknown one would
        // come from a newer version of Knock sharing the database.
        tracing::warn!(job = row.id, kind = row.kind, "a job of an unknown kind");
        return Ok(None);
    };
    Ok(Some(Run {
        id: row.id,
        kind,
        subject: row.subject,
        attempt: row.attempts,
        done: match row.steps {
            Value::Object(done) => done,
            _ => Map::new(),
        },
        pool: pool.clone(),
    }))
}

/// Claims one due job, runs it and records how it went. Returns `false`
/// when no job was due.
///
/// # Errors
/// A database error while claiming or recording the outcome (the job's
/// lease then runs out and it is claimed again).
pub async fn run_one(pool: &PgPool, jobs: &Jobs) -> Result<bool, sqlx::Error> {
    let Some(mut run) = claim(pool).await? else {
        return Ok(false);
    };
    let result = match run.kind {
        Kind::ClerkWebhook => crate::webhooks::worker::process(pool, &mut run).await,
        Kind::WelcomeEmail => crate::mail::welcome(pool, &jobs.mailer, &mut run).await,
    };
    let (id, kind, attempt) = (run.id, run.kind.as_str(), run.attempt);
    match result {
        Ok(()) => {
            sqlx::query!(
                "UPDATE jobs SET status = 'done', last_error = NULL, finished_at = now(),
                        updated_at = now()
                 WHERE id = $1",
                id,
            )
            .execute(pool)
            .await?;
            tracing::info!(job = id, kind, attempt, "job done");
        }
        Err(error) => {
            let permanent = matches!(error, JobError::Permanent(_));
            let wait = backoff(attempt);
            let status: String = sqlx::query_scalar!(
                r#"UPDATE jobs SET
                       status = CASE WHEN $2 OR attempts >= max_attempts THEN 'failed'
                                     ELSE 'retrying' END,
                       last_error = $3,
                       run_at = now() + make_interval(secs => $4),
                       finished_at = CASE WHEN $2 OR attempts >= max_attempts THEN now() END,
                       updated_at = now()
                   WHERE id = $1
                   RETURNING status AS "status!""#,
                id,
                permanent,
                error.to_string(),
                wait.as_secs_f64(),
            )
            .fetch_one(pool)
            .await?;
            // A retry is routine (the runs page shows it); a run that
            // stopped needs an operator.
            if status == "failed" {
                tracing::warn!(job = id, kind, attempt, %error, "job failed");
            } else {
                tracing::info!(job = id, kind, attempt, %error, "job attempt failed; will retry");
            }
        }
    }
    Ok(true)
}

/// Runs due jobs one after another, then waits for a wake-up or [`POLL`];
/// until the pool closes (at shutdown), when it returns quietly.
pub async fn work(pool: PgPool, jobs: Arc<Jobs>) {
    loop {
        match run_one(&pool, &jobs).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(_) if pool.is_closed() => return,
            Err(error) => tracing::error!(%error, "job worker: database error"),
        }
        let _ = tokio::time::timeout(POLL, jobs.wakeup.notified()).await;
    }
}

/// Which runs [`list`] returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only runs with one of these statuses (all when empty).
    pub statuses: Vec<JobStatus>,
    /// Only runs of this kind.
    pub kind: Option<Kind>,
    /// Only runs about this subject (a `svix-id`, a user id).
    pub subject: Option<String>,
}

/// The newest runs first, at most `limit`, with the username of a welcome
/// email's user.
///
/// # Errors
/// The database error.
pub async fn list(pool: &PgPool, filter: &Filter, limit: i64) -> Result<Vec<JobRun>, sqlx::Error> {
    let statuses: Vec<String> = filter
        .statuses
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    let rows = sqlx::query!(
        r#"SELECT j.id, j.kind, j.subject, j.status, j.attempts, j.max_attempts, j.run_at,
                  j.last_error, j.steps, j.created_at, j.updated_at, u.username AS "username?"
           FROM jobs j
           LEFT JOIN users u
                  ON u.id = CASE WHEN j.kind = 'welcome_email' THEN j.subject::uuid END
           WHERE (cardinality($1::text[]) = 0 OR j.status = ANY($1))
             AND ($2::text IS NULL OR j.kind = $2)
             AND ($3::text IS NULL OR j.subject = $3)
           ORDER BY j.created_at DESC, j.id DESC
           LIMIT $4"#,
        &statuses,
        filter.kind.map(Kind::as_str),
        filter.subject,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            let status = JobStatus::parse(&row.status)?;
            let kind = Kind::parse(&row.kind)?;
            Some(JobRun {
                id: row.id,
                kind,
                subject: row.subject,
                username: row.username,
                attempts: row.attempts,
                max_attempts: row.max_attempts,
                next_attempt_at: matches!(status, JobStatus::Pending | JobStatus::Retrying)
                    .then_some(row.run_at),
                status,
                last_error: row.last_error,
                steps: steps(&row.steps),
                created_at: row.created_at,
                updated_at: row.updated_at,
            })
        })
        .collect())
}

/// The recorded steps of a job, in the order they finished.
fn steps(steps: &Value) -> Vec<JobStep> {
    let mut steps: Vec<JobStep> = steps
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, step)| JobStep {
            name: name.clone(),
            outcome: step["outcome"].as_str().unwrap_or_default().to_owned(),
            at: step["at"].as_str().and_then(|at| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
            }),
        })
        .collect();
    steps.sort_by_key(|step| step.at);
    steps
}

/// Makes failed or retrying runs due now (the one `id`, or every one of
/// `kind`/`subject` that [`Filter`] picks), with one more attempt allowed
/// when the attempts were used up. Returns how many.
///
/// # Errors
/// The database error.
pub async fn retry(pool: &PgPool, id: Option<i64>, filter: &Filter) -> Result<u64, sqlx::Error> {
    let result = sqlx::query!(
        "UPDATE jobs SET status = 'retrying', run_at = now(), finished_at = NULL,
                max_attempts = GREATEST(max_attempts, attempts + 1), updated_at = now()
         WHERE status IN ('failed', 'retrying')
           AND ($1::bigint IS NULL OR id = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR subject = $3)",
        id,
        filter.kind.map(Kind::as_str),
        filter.subject,
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// The status of the run `id`, or `None` when there is no such run.
///
/// # Errors
/// The database error.
pub async fn status(pool: &PgPool, id: i64) -> Result<Option<JobStatus>, sqlx::Error> {
    let status = sqlx::query_scalar!("SELECT status FROM jobs WHERE id = $1", id)
        .fetch_optional(pool)
        .await?;
    Ok(status.as_deref().and_then(JobStatus::parse))
}

/// How many runs there are of each kind in each status, for `/metrics`.
///
/// # Errors
/// The database error.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows =
        sqlx::query!(r#"SELECT kind, status, count(*) AS "runs!" FROM jobs GROUP BY kind, status"#)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.kind, row.status, row.runs))
        .collect())
}

/// Deletes `done` runs that finished more than `days` ago, in batches (a
/// failed run stays until it is retried); returns how many. A welcome email
/// run is kept, since it is what makes the email once per user.
///
/// # Errors
/// The database error.
pub async fn prune(pool: &PgPool, days: u32) -> Result<u64, sqlx::Error> {
    delete_in_batches(|| async {
        let deleted = sqlx::query!(
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs
                  WHERE status = 'done' AND kind <> 'welcome_email'
                    AND finished_at < now() - $1 * interval '1 day'
                  LIMIT $2)",
            f64::from(days),
            PRUNE_BATCH,
        )
        .execute(pool)
        .await?;
        Ok(deleted.rows_affected())
    })
    .await
}
