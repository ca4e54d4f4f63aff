//! Email: the welcome email a new user gets, sent by the `welcome_email`
//! job through SMTP (`KNOCK_SMTP_URL`, with `lettre`), or, with no SMTP
//! configured, written to an outbox directory as one `.eml` file each.

use std::path::{Path, PathBuf};

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;

use crate::{
    ids::UserId,
    jobs::server::{JobError, Run},
};

/// The sender when `KNOCK_MAIL_FROM` is unset and mail goes to the outbox.
pub const DEFAULT_FROM: &str = "Knock <knock@localhost>";

/// The outbox's directory inside `KNOCK_DATA_DIR`.
pub const OUTBOX_DIR: &str = "outbox";

/// Where email goes.
#[derive(Clone)]
pub enum Transport {
    /// An SMTP server, per `KNOCK_SMTP_URL`.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `{id}.eml` files in this directory.
    Outbox(PathBuf),
}

impl std::fmt::Debug for Transport {
    // The SMTP transport holds the URL's credentials: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_) => f.write_str("Smtp(..)"),
            Self::Outbox(dir) => f.debug_tuple("Outbox").field(dir).finish(),
        }
    }
}

/// The sender and the transport of Knock's email.
#[derive(Debug, Clone)]
pub struct Mailer {
    /// `KNOCK_MAIL_FROM`.
    pub from: Mailbox,
    /// Where messages go.
    pub transport: Transport,
}

/// `KNOCK_SMTP_URL` or `KNOCK_MAIL_FROM` does not parse, or the URL is set
/// without a sender. The text names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MailSettingError(String);

impl Mailer {
    /// SMTP when `smtp_url` is set (lettre's URL forms:
    /// `smtps://user:pass@host:465`, `smtp://host:587?tls=required`, …),
    /// which then needs `from`; otherwise the outbox
    /// `{data_dir}/`[`OUTBOX_DIR`], from `from` or [`DEFAULT_FROM`].
    ///
    /// # Errors
    /// [`MailSettingError`] naming the setting that does not parse.
    pub fn new(
        smtp_url: Option<&SecretString>,
        from: Option<&str>,
        data_dir: &Path,
    ) -> Result<Self, MailSettingError> {
        let parse_from = |from: &str| {
            from.parse::<Mailbox>()
                .map_err(|e| MailSettingError(format!("invalid setting KNOCK_MAIL_FROM: {e}")))
        };
        match smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| MailSettingError(format!("invalid setting KNOCK_SMTP_URL: {e}")))?
                    .build();
                let from = from.ok_or_else(|| {
                    MailSettingError(
                        "missing setting KNOCK_MAIL_FROM: KNOCK_SMTP_URL needs a sender".into(),
                    )
                })?;
                Ok(Self {
                    from: parse_from(from)?,
                    transport: Transport::Smtp(transport),
                })
            }
            None => Ok(Self {
                from: parse_from(from.unwrap_or(DEFAULT_FROM))?,
                transport: Transport::Outbox(data_dir.join(OUTBOX_DIR)),
            }),
        }
    }

    /// Sends `message`. Returns the outcome for the job's step: which
    /// server accepted it, or which outbox file holds it.
    ///
    /// # Errors
    /// [`JobError::Permanent`] when the SMTP server refuses it for good
    /// (a 5xx reply); [`JobError::Retry`] for anything that may pass later
    /// (no connection, a 4xx reply, an outbox that cannot be written).
    pub async fn send(&self, message: Message) -> Result<String, JobError> {
        match &self.transport {
            Transport::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => Ok(format!(
                    "accepted by the SMTP server: {} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )),
                Err(error) if error.is_permanent() => {
                    Err(JobError::Permanent(format!("refused for good: {error}")))
                }
                Err(error) => Err(JobError::Retry(format!("SMTP: {error}"))),
            },
            Transport::Outbox(dir) => {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| JobError::Retry(format!("outbox {}: {e}", dir.display())))?;
                let id = AsyncFileTransport::<Tokio1Executor>::new(dir)
                    .send(message)
                    .await
                    .map_err(|e| JobError::Retry(format!("outbox {}: {e}", dir.display())))?;
                let file = dir.join(format!("{id}.eml"));
                tracing::info!(file = %file.display(), "email written to the outbox");
                Ok(format!("written to the outbox: {}", file.display()))
            }
        }
    }

    /// Where email goes, for the start-up log (no credentials).
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp(_) => "through the SMTP server of KNOCK_SMTP_URL".to_owned(),
            Transport::Outbox(dir) => format!(
                "to the outbox {} (one .eml file each; set KNOCK_SMTP_URL to send)",
                dir.display()
            ),
        }
    }
}

/// The welcome email to `to`, greeting them as `name`. Its `Message-ID` is
/// derived from the user's id, so a repeated send is recognisable.
///
/// # Errors
/// The builder's error (not expected for parsed mailboxes).
pub fn welcome_message(
    from: &Mailbox,
    to: Mailbox,
    name: &str,
    user: UserId,
) -> Result<Message, lettre::error::Error> {
    let domain = from.email.domain().to_owned();
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject("Welcome to Knock")
        .message_id(Some(format!("<welcome.{user}@{domain}>")))
        .header(ContentType::TEXT_PLAIN)
        .body(format!(
            "Hi {name},\n\
             \n\
             Welcome to Knock!\n\
             \n\
             Every conversation here starts with a knock: pick someone and knock,\n\
             with a short note if you like. Once they accept, the conversation opens\n\
             for both of you. Nobody can message you until you say yes, and you can\n\
             block anyone at any time.\n\
             \n\
             Happy knocking,\n\
             Knock\n"
        ))
}

/// The `welcome_email` job for the user whose id is `run.subject`: one
/// step, `send`, which sends the welcome email to their primary address.
/// A deleted user, or one whose address was removed, is skipped (the step
/// says so).
///
/// # Errors
/// As [`Mailer::send`]; [`JobError::Permanent`] for a subject that is no
/// user id or an address that does not parse.
pub async fn welcome(pool: &PgPool, mailer: &Mailer, run: &mut Run) -> Result<(), JobError> {
    let user: UserId = run
        .subject
        .parse()
        .map_err(|_| JobError::Permanent(format!("not a user id: {}", run.subject)))?;
    run.step("send", || async {
        let row = sqlx::query!(
            "SELECT username, email, first_name, deleted_at IS NOT NULL AS \"deleted!\"
             FROM users WHERE id = $1",
            user as UserId,
        )
        .fetch_optional(pool)
        .await?;
        let Some(row) = row else {
            return Ok("skipped: no such user".to_owned());
        };
        if row.deleted {
            return Ok("skipped: the user was deleted".to_owned());
        }
        // The run is enqueued with the user's first address; it may have
        // been removed since.
        let Some(email) = row.email.filter(|e| !e.is_empty()) else {
            return Ok("skipped: no email address".to_owned());
        };
        let name = row
            .first_name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(row.username);
        let to = Mailbox::new(
            None,
            email
                .parse()
                .map_err(|_| JobError::Permanent("the address does not parse".into()))?,
        );
        let message = welcome_message(&mailer.from, to, &name, user)
            .map_err(|e| JobError::Permanent(format!("could not build the message: {e}")))?;
        mailer.send(message).await
    })
    .await?;
    Ok(())
}
