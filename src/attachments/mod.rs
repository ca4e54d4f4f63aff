//! Images in messages: uploaded to a DM by one of its members
//! (`POST /api/attachments`), then sent as a message's `attachment_id`, and
//! served to the DM's members only. What is checked and stored is in
//! `server.rs`; the composer's **Attach image** and the upload's progress
//! in `components.rs`.

pub mod components;
#[cfg(feature = "ssr")]
pub mod server;
#[cfg(feature = "ssr")]
pub mod store;

/// The largest image one upload may carry, in bytes (10 MiB); one byte
/// more is refused with 413.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;

/// The upload's path.
pub const UPLOAD_PATH: &str = "/api/attachments";

/// The media types an image may have, by what its bytes decode as.
pub const ACCEPTED: &str = "image/jpeg,image/png,image/webp,image/gif";

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 320;

/// The size a thumbnail of a `width` × `height` image has (its longest
/// side at most [`THUMBNAIL_SIDE`], never enlarged), so that a page can
/// reserve its place before it loads.
pub fn thumbnail_size(width: i32, height: i32) -> (i32, i32) {
    let side = THUMBNAIL_SIDE as i32;
    let (width, height) = (width.max(1), height.max(1));
    if width <= side && height <= side {
        return (width, height);
    }
    if width >= height {
        (
            side,
            (height as i64 * side as i64 / width as i64).max(1) as i32,
        )
    } else {
        (
            (width as i64 * side as i64 / height as i64).max(1) as i32,
            side,
        )
    }
}

/// The URL of an image, full size.
pub fn url(id: crate::ids::AttachmentId) -> String {
    format!("{UPLOAD_PATH}/{id}")
}

/// The URL of an image's thumbnail.
pub fn thumbnail_url(id: crate::ids::AttachmentId) -> String {
    format!("{UPLOAD_PATH}/{id}/thumbnail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_shape_and_never_grow() {
        assert_eq!(thumbnail_size(100, 50), (100, 50));
        assert_eq!(thumbnail_size(640, 480), (320, 240));
        assert_eq!(thumbnail_size(480, 640), (240, 320));
        assert_eq!(thumbnail_size(10_000, 1), (320, 1));
    }
}
