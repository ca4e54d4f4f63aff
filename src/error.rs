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
            Self::Internal | Self::ServerFn(_) => "internal",
        }
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

    fn from_server_fn_error(value: ServerFnErrorErr) -> Self {
        Self::ServerFn(value)
    }
}

impl From<ServerFnError> for AppError {
    fn from(value: ServerFnError) -> Self {
        Self::ServerFn(ServerFnErrorErr::ServerError(value.to_string()))
    }
}

#[cfg(feature = "ssr")]
impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        tracing::error!(%error, "database error");
        Self::Internal
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
