//! [`MessageBody`]: the text of a message, checked once where it enters
//! (DESIGN §5), so that an unchecked body cannot reach the database.

use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The most characters a message may have after trimming.
pub const MAX_CHARS: usize = 4000;
/// Bodies over this many bytes are refused as too large (413) before any
/// counting; between [`MAX_CHARS`] characters and this, 400.
pub const MAX_BYTES: usize = 64 * 1024;

/// A message's text: trimmed, line breaks as `\n`, 1 to [`MAX_CHARS`]
/// characters, no control character but newline and tab. Serialized as
/// the bare string; made only by [`MessageBody::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct MessageBody(String);

impl MessageBody {
    /// Trims `text`, turns its line breaks into `\n` (a form posts a
    /// textarea's as `\r\n`) and checks it.
    ///
    /// # Errors
    /// [`AppError::PayloadTooLarge`] (413) over [`MAX_BYTES`];
    /// [`AppError::BadRequest`] (400) when empty after trimming, over
    /// [`MAX_CHARS`] characters, or holding a control character other than
    /// newline and tab.
    pub fn parse(text: &str) -> Result<Self, AppError> {
        if text.len() > MAX_BYTES {
            return Err(AppError::PayloadTooLarge);
        }
        let body = text.trim().replace("\r\n", "\n").replace('\r', "\n");
        crate::error::refuse_control_characters(&body, "A message")?;
        match body.chars().count() {
            0 => Err(AppError::BadRequest("A message needs some text.".into())),
            n if n > MAX_CHARS => Err(AppError::BadRequest(format!(
                "A message can have at most {MAX_CHARS} characters; this one has {n}."
            ))),
            _ => Ok(Self(body)),
        }
    }

    /// An image's caption: `None` when `text` is blank, else as
    /// [`MessageBody::parse`].
    ///
    /// # Errors
    /// As [`MessageBody::parse`], but never for a blank text.
    pub fn parse_caption(text: &str) -> Result<Option<Self>, AppError> {
        if text.len() <= MAX_BYTES && text.trim().is_empty() {
            return Ok(None);
        }
        Self::parse(text).map(Some)
    }

    /// The checked text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for MessageBody {
    /// Deserializing checks too, with [`MessageBody::parse`]'s rules.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for MessageBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_trimmed_with_newlines_made_plain() {
        let body = MessageBody::parse("  one\r\ntwo\rthree\t \n").unwrap();
        assert_eq!(body.as_str(), "one\ntwo\nthree");
    }

    #[test]
    fn empty_long_oversize_and_control_characters_are_refused() {
        assert!(matches!(
            MessageBody::parse(" \n "),
            Err(AppError::BadRequest(_))
        ));
        assert!(MessageBody::parse(&"é".repeat(MAX_CHARS)).is_ok());
        assert!(matches!(
            MessageBody::parse(&"é".repeat(MAX_CHARS + 1)),
            Err(AppError::BadRequest(_))
        ));
        assert!(matches!(
            MessageBody::parse(&"a".repeat(MAX_BYTES + 1)),
            Err(AppError::PayloadTooLarge)
        ));
        assert!(matches!(
            MessageBody::parse("a\0b"),
            Err(AppError::BadRequest(_))
        ));
        assert!(serde_json::from_str::<MessageBody>("\"\"").is_err());
        assert_eq!(
            serde_json::from_str::<MessageBody>("\" hi \"")
                .unwrap()
                .as_str(),
            "hi"
        );
    }
}
