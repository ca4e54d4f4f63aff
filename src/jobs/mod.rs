//! Background jobs and the operator's runs page.
//!
//! The queue itself is server-only ([`server`]); this module holds what the
//! runs page (`/admin/jobs`, [`components`]) and its server functions share.
//! Operators are the users named in `KNOCK_ADMIN_USER_IDS`; to everyone else
//! the page and its endpoints do not exist (404).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::AppError;

pub mod components;
#[cfg(feature = "ssr")]
pub mod server;

/// The kinds of background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Applying one stored Clerk webhook delivery; the subject is its
    /// `svix-id`.
    ClerkWebhook,
    /// Sending a new user their welcome email; the subject is their Knock
    /// user id.
    WelcomeEmail,
}

impl Kind {
    /// Every kind, in the order the runs page offers them.
    pub const ALL: [Self; 2] = [Self::ClerkWebhook, Self::WelcomeEmail];

    /// The name stored in `jobs.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClerkWebhook => "clerk_webhook",
            Self::WelcomeEmail => "welcome_email",
        }
    }

    /// The kind stored as `name`, if Knock knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// What the runs page calls it.
    pub fn label(self) -> &'static str {
        match self {
            Self::ClerkWebhook => "Clerk webhook",
            Self::WelcomeEmail => "Welcome email",
        }
    }

    /// Attempts before a run of this kind stops as failed: with the backoff
    /// of 2^n seconds (at most an hour), a webhook is tried for about 3 h
    /// and an email for about 4 min.
    pub fn max_attempts(self) -> i32 {
        match self {
            Self::ClerkWebhook => 14,
            Self::WelcomeEmail => 8,
        }
    }
}

/// Where a run stands (`jobs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its first attempt.
    Pending,
    /// An instance is running it.
    Running,
    /// The last attempt failed; another is scheduled.
    Retrying,
    /// Finished.
    Done,
    /// Stopped: a permanent error, or every attempt failed.
    Failed,
}

impl JobStatus {
    /// Every status, in the order the runs page offers them.
    pub const ALL: [Self; 5] = [
        Self::Pending,
        Self::Running,
        Self::Retrying,
        Self::Done,
        Self::Failed,
    ];

    /// The name stored in `jobs.status` (also the `status` filter's value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    /// The status stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// Whether an operator may retry a run in this status.
    pub fn can_retry(self) -> bool {
        matches!(self, Self::Failed | Self::Retrying)
    }
}

/// One finished step of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStep {
    /// The step's name (`apply`, `send`).
    pub name: String,
    /// What it did, in a few words.
    pub outcome: String,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

/// One run of a job, as the runs page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// The run's id.
    pub id: i64,
    /// What kind of work.
    pub kind: Kind,
    /// What it is about: a `svix-id` or a user id.
    pub subject: String,
    /// The username of a welcome email's user.
    pub username: Option<String>,
    /// Where it stands.
    pub status: JobStatus,
    /// Attempts so far.
    pub attempts: i32,
    /// Attempts allowed before it stops as failed.
    pub max_attempts: i32,
    /// When the next attempt is due (pending and retrying runs).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The last failed attempt's error.
    pub last_error: Option<String>,
    /// The finished steps, in order.
    pub steps: Vec<JobStep>,
    /// When it was enqueued.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The runs page.
pub const ADMIN_JOBS_PATH: &str = "/admin/jobs";

/// The most runs one listing shows.
pub const LIST_LIMIT: i64 = 200;

/// `POST /api/admin/jobs` `{status?, kind?}`: the newest runs first, at most
/// [`LIST_LIMIT`]. `status` is `pending` (pending, running and retrying
/// runs), `failed`, `done`, or absent (all).
///
/// # Errors
/// 404 unless the caller is an operator; 400 for an unknown status or kind.
#[leptos::server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "admin/jobs", input = leptos::server_fn::codec::Json)]
pub async fn list_jobs(
    status: Option<String>,
    kind: Option<String>,
) -> Result<Vec<JobRun>, AppError> {
    use crate::error::respond;
    let state = crate::server::state::AppState::current()?;
    operator().await?;
    let statuses = match status.as_deref() {
        None | Some("") => Vec::new(),
        Some("pending") => vec![JobStatus::Pending, JobStatus::Running, JobStatus::Retrying],
        Some(name) => vec![
            JobStatus::parse(name)
                .ok_or_else(|| respond(AppError::BadRequest(format!("unknown status {name:?}"))))?,
        ],
    };
    let kind = match kind.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            Kind::parse(name)
                .ok_or_else(|| respond(AppError::BadRequest(format!("unknown kind {name:?}"))))?,
        ),
    };
    let filter = server::Filter {
        statuses,
        kind,
        subject: None,
    };
    server::list(&state.pool, &filter, LIST_LIMIT)
        .await
        .map_err(|e| respond(e.into()))
}

/// `POST /api/admin/jobs/retry` (a form: `id`, and `status`, the filter to
/// return to): makes a failed or retrying run due now (one more attempt is
/// allowed when they were used up). A form posted without JavaScript is
/// redirected back to `/admin/jobs`.
///
/// # Errors
/// 404 unless the caller is an operator, or for an unknown run; 409 for a
/// run that is not failed or retrying.
#[leptos::server(prefix = "/api", client = crate::auth::client::SessionClient, endpoint = "admin/jobs/retry")]
pub async fn retry_job(id: i64, status: Option<String>) -> Result<(), AppError> {
    use crate::error::respond;
    let state = crate::server::state::AppState::current()?;
    operator().await?;
    let retried = server::retry(&state.pool, Some(id), &server::Filter::default())
        .await
        .map_err(|e| respond(e.into()))?;
    if retried == 0 {
        let status = server::status(&state.pool, id)
            .await
            .map_err(|e| respond(e.into()))?;
        return Err(respond(match status {
            Some(_) => AppError::Conflict("only a failed or retrying run can be retried".into()),
            None => AppError::NotFound,
        }));
    }
    state.jobs.wakeup.notify_one();
    match status
        .as_deref()
        .filter(|s| JobStatus::parse(s).is_some() || *s == "pending")
    {
        Some(status) => leptos_axum::redirect(&format!("{ADMIN_JOBS_PATH}?status={status}")),
        None => leptos_axum::redirect(ADMIN_JOBS_PATH),
    }
    Ok(())
}

/// The signed-in user when they are an operator.
///
/// # Errors
/// 404 for anyone who is not an operator, signed in or not, so that the
/// admin pages do not reveal they exist.
#[cfg(feature = "ssr")]
pub async fn operator() -> Result<crate::users::User, AppError> {
    use crate::error::respond;
    let state = crate::server::state::AppState::current()?;
    let me = crate::auth::server::request_user()
        .await
        .map_err(|_| respond(AppError::NotFound))?;
    let is_operator = crate::auth::server::is_operator(&state, me.id)
        .await
        .map_err(|e| respond(e.into()))?;
    if is_operator {
        Ok(me)
    } else {
        Err(respond(AppError::NotFound))
    }
}
