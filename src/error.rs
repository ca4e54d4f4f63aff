//! `AppError`: the one error type on the wire, for server functions and
//! axum handlers alike. Each variant has its HTTP status (DESIGN §6); the
//! JSON body is `{"error": {"code", "message"}}`. Internal causes are logged
//! on the server and reach the client as an opaque message.

use leptos::server_fn::{
    ServerFnError,
    codec::JsonEncoding,
    error::{FromServerFnError, ServerFnErrorErr},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What went wrong, as the client may know it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// 400: the input is malformed or not allowed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid session.
    #[error("sign in to continue")]
    Unauthorized,
    /// 403: not a member of the DM.
    #[error("not allowed")]
    Forbidden,
    /// 404: unknown user or DM.
    #[error("not found")]
    NotFound,
    /// 409: the state transition is not allowed.
    #[error("{0}")]
    Conflict(String),
    /// 413: too large.
    #[error("too large")]
    PayloadTooLarge,
    /// 429: too many requests.
    #[error("too many requests; try again later")]
    TooManyRequests,
    /// 503: the server is too busy for this now; the client may retry.
    #[error("the server is busy; try again in a moment")]
    Unavailable,
    /// 500: something failed on the server; the cause is in its log.
    #[error("something went wrong on our side")]
    Internal,
    /// The server function machinery failed (network, decoding, …).
    #[error("{0}")]
    ServerFn(ServerFnErrorErr),
}

impl AppError {
    /// The HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::Conflict(_) => 409,
            Self::PayloadTooLarge => 413,
            Self::TooManyRequests => 429,
            Self::Unavailable => 503,
            Self::Internal | Self::ServerFn(_) => 500,
        }
    }

    /// A stable machine-readable code (`bad_request`, `unauthorized`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge => "too_large",
            Self::TooManyRequests => "too_many_requests",
            Self::Unavailable => "unavailable",
            Self::Internal | Self::ServerFn(_) => "internal",
        }
    }
}

/// Refuses text that holds NUL or another C0 control character (U+0000 to
/// U+001F) other than newline and tab (DESIGN §5): `what` names the field
/// in the 400's message.
///
/// # Errors
/// 400 naming the first such character.
pub fn refuse_control_characters(text: &str, what: &str) -> Result<(), AppError> {
    match text
        .chars()
        .find(|c| c.is_ascii_control() && *c != '\n' && *c != '\t' && *c != '\u{7f}')
    {
        Some(c) => Err(AppError::BadRequest(format!(
            "{what} cannot contain the control character U+{:04X}.",
            u32::from(c)
        ))),
        None => Ok(()),
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    error: WireBody,
}

#[derive(Serialize, Deserialize)]
struct WireBody {
    code: String,
    message: String,
}

/// On the wire: `{"error": {"code": "...", "message": "..."}}`.
impl Serialize for AppError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Wire {
            error: WireBody {
                code: self.code().to_owned(),
                message: self.to_string(),
            },
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AppError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Wire {
            error: WireBody { code, message },
        } = Wire::deserialize(deserializer)?;
        Ok(match code.as_str() {
            "bad_request" => Self::BadRequest(message),
            "unauthorized" => Self::Unauthorized,
            "forbidden" => Self::Forbidden,
            "not_found" => Self::NotFound,
            "conflict" => Self::Conflict(message),
            "too_large" => Self::PayloadTooLarge,
            "too_many_requests" => Self::TooManyRequests,
            "internal" => Self::Internal,
            _ => Self::ServerFn(ServerFnErrorErr::ServerError(message)),
        })
    }
}

impl FromServerFnError for AppError {
    type Encoder = JsonEncoding;

    /// A request whose arguments do not decode (malformed JSON, a wrong
    /// type, a missing field) is the client's error: 400.
    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        match value {
            ServerFnErrorErr::Deserialization(cause)
            | ServerFnErrorErr::Args(cause)
            | ServerFnErrorErr::MissingArg(cause) => {
                Self::BadRequest(format!("The request is malformed: {cause}"))
            }
            other => Self::ServerFn(other),
        }
    }
}

impl From<ServerFnError> for AppError {
    fn from(value: ServerFnError) -> Self {
        Self::ServerFn(ServerFnErrorErr::ServerError(value.to_string()))
    }
}

#[cfg(feature = "ssr")]
impl From<sqlx::Error> for AppError {
    /// The database being unreachable, restarting or too slow (a pool
    /// timeout, a lost connection, Postgres's SQLSTATE class 08, `57P01`–
    /// `57P03`, or `57014` for `statement_timeout`) is 503: the client may
    /// retry. Anything else is a 500. Both are logged with their cause.
    fn from(error: sqlx::Error) -> Self {
        let unavailable = match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
            sqlx::Error::Database(e) => e.code().is_some_and(|code| {
                code.starts_with("08") || matches!(&*code, "57014" | "57P01" | "57P02" | "57P03")
            }),
            _ => false,
        };
        if unavailable {
            tracing::warn!(%error, "database unavailable");
            Self::Unavailable
        } else {
            tracing::error!(%error, "database error");
            Self::Internal
        }
    }
}

#[cfg(feature = "ssr")]
impl axum::response::IntoResponse for AppError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self)).into_response()
    }
}

/// Gives a server function's error response the status of its
/// [`AppError`]. server_fn answers the errors it makes itself (arguments
/// that do not decode, for one) with 500; their JSON body says which error
/// it was. Other responses pass unchanged.
#[cfg(feature = "ssr")]
pub async fn error_status(response: axum::response::Response) -> axum::response::Response {
    use axum::{body::Body, http::StatusCode, response::Response};
    let from_server_fn = response
        .headers()
        .contains_key(leptos::server_fn::error::SERVER_FN_ERROR_HEADER);
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR || !from_server_fn {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // An error body is a few hundred bytes.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    if let Ok(error) = serde_json::from_slice::<AppError>(&bytes) {
        parts.status = StatusCode::from_u16(error.status()).unwrap_or(parts.status);
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// In a server function: sets the response status for `error` and returns it.
#[cfg(feature = "ssr")]
pub fn respond(error: AppError) -> AppError {
    if let Some(response) = leptos::prelude::use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(
            axum::http::StatusCode::from_u16(error.status())
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        );
    }
    error
}
