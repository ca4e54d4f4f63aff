//! Uploading and serving images (DESIGN §6: `POST /api/attachments`,
//! `GET /api/attachments/{id}` and `…/{id}/thumbnail`).
//!
//! An upload is an image only if its bytes decode as JPEG, PNG, WebP or
//! GIF (its name and declared type are ignored). It is turned upright by
//! its EXIF orientation and encoded again, which leaves EXIF and every
//! other piece of metadata behind: a JPEG stays a JPEG, a PNG a PNG, a
//! WebP becomes a PNG when it has transparency and a JPEG otherwise (the
//! encoder writes only lossless WebP, which would grow a photo many
//! times). A GIF, which cannot hold EXIF, is kept as uploaded so that an
//! animation still plays. The image and its thumbnail are stored in
//! Postgres, so every instance serves them and the embedded default needs
//! nothing else.

use std::io::Cursor;

use axum::{
    Json,
    extract::{Multipart, Path, State, multipart::MultipartRejection},
    http::header,
    response::IntoResponse,
};
use image::{
    DynamicImage, ImageFormat, ImageReader, codecs::jpeg::JpegEncoder, metadata::Orientation,
};

use super::{MAX_BYTES, THUMBNAIL_SIDE, store::ImageStore};
use crate::{
    auth::server::CurrentUser,
    dms::DmStatus,
    error::AppError,
    ids::{AttachmentId, DmId, UserId},
    messages::Attachment,
    server::state::AppState,
};

/// The longest side an image may have, in pixels.
pub const MAX_SIDE: u32 = 12_000;
/// The most memory decoding one image may take, in bytes.
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;
/// JPEG quality of a re-encoded image and of a thumbnail.
const JPEG_QUALITY: u8 = 90;
const THUMBNAIL_QUALITY: u8 = 80;

/// An image ready to store: encoded again without metadata, with its
/// thumbnail.
#[derive(Debug)]
pub struct Processed {
    /// `image/jpeg`, `image/png`, `image/webp` or `image/gif`.
    pub content_type: &'static str,
    /// Width in pixels, upright.
    pub width: u32,
    /// Height in pixels, upright.
    pub height: u32,
    /// The image's bytes.
    pub data: Vec<u8>,
    /// `image/jpeg` or `image/png` (with transparency).
    pub thumbnail_content_type: &'static str,
    /// The thumbnail's bytes: the longest side at most [`THUMBNAIL_SIDE`].
    pub thumbnail: Vec<u8>,
}

fn not_an_image() -> AppError {
    AppError::BadRequest("The file is not a JPEG, PNG, WebP or GIF image.".into())
}

fn encoding_failed(error: image::ImageError) -> AppError {
    tracing::error!(%error, "could not encode an image");
    AppError::Internal
}

/// `image` as JPEG, or as PNG when it has transparency.
fn encode(image: &DynamicImage, quality: u8) -> Result<(&'static str, Vec<u8>), AppError> {
    let mut out = Vec::new();
    if image.color().has_alpha() {
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .map_err(encoding_failed)?;
        Ok(("image/png", out))
    } else {
        JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(&image.to_rgb8())
            .map_err(encoding_failed)?;
        Ok(("image/jpeg", out))
    }
}

/// Checks `bytes` by decoding them and makes the image to store (see the
/// module's docs). CPU-bound: call it off the async workers.
///
/// # Errors
/// 400 when the bytes are not a JPEG, PNG, WebP or GIF image that decodes,
/// or when a side is over [`MAX_SIDE`] pixels.
pub fn process(bytes: &[u8]) -> Result<Processed, AppError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|_| not_an_image())?;
    let format = match reader.format() {
        Some(
            format @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif),
        ) => format,
        _ => return Err(not_an_image()),
    };
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(|error| refused(&error))?;
    let orientation =
        image::ImageDecoder::orientation(&mut decoder).unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|error| refused(&error))?;
    image.apply_orientation(orientation);
    let (content_type, data) = match format {
        ImageFormat::Gif => ("image/gif", bytes.to_vec()),
        ImageFormat::Png => {
            let mut out = Vec::new();
            image
                .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
                .map_err(encoding_failed)?;
            ("image/png", out)
        }
        _ => encode(&image, JPEG_QUALITY)?,
    };
    let small = if image.width() > THUMBNAIL_SIDE || image.height() > THUMBNAIL_SIDE {
        image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    } else {
        image.clone()
    };
    let (thumbnail_content_type, thumbnail) = encode(&small, THUMBNAIL_QUALITY)?;
    Ok(Processed {
        content_type,
        width: image.width(),
        height: image.height(),
        data,
        thumbnail_content_type,
        thumbnail,
    })
}

/// A decoding error as the uploader sees it: too many pixels, or not an
/// image.
fn refused(error: &image::ImageError) -> AppError {
    match error {
        image::ImageError::Limits(_) => AppError::BadRequest(format!(
            "The image is too large: at most {MAX_SIDE} pixels a side."
        )),
        _ => not_an_image(),
    }
}

/// `POST /api/attachments`: multipart fields `dm_id` and `file` (an image
/// of at most [`MAX_BYTES`] bytes). Stores the image for DM `dm_id` and
/// answers `{id, width, height, content_type}`; the upload becomes part
/// of a message when `messages/send` names it as `attachment_id`.
///
/// # Errors
/// 400 for a malformed form, a missing field or a file that is not an
/// image (see [`process`]); 413 over [`MAX_BYTES`]; 401 without a
/// session; 404 when the DM is not `me`'s; 409 when it is not ACTIVE or
/// the other member deleted their account; 403 across a block either way;
/// 429 past the message rate.
#[tracing::instrument(skip_all, fields(me = %me.id))]
pub async fn upload(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Attachment>, AppError> {
    let mut multipart = multipart.map_err(|rejection| {
        AppError::BadRequest(format!("An upload is a multipart form: {rejection}"))
    })?;
    let (mut dm_id, mut file) = (None::<DmId>, None::<Vec<u8>>);
    while let Some(mut field) = multipart.next_field().await.map_err(form_error)? {
        match field.name() {
            Some("dm_id") => {
                let text = field.text().await.map_err(form_error)?;
                dm_id = Some(
                    text.trim()
                        .parse()
                        .map_err(|_| AppError::BadRequest("dm_id is not a UUID.".into()))?,
                );
            }
            Some("file") => {
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(form_error)? {
                    if bytes.len() + chunk.len() > MAX_BYTES {
                        return Err(AppError::PayloadTooLarge);
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some(bytes);
            }
            _ => {}
        }
    }
    let dm_id = dm_id.ok_or_else(|| AppError::BadRequest("The form needs a dm_id.".into()))?;
    let file = file.ok_or_else(|| AppError::BadRequest("The form needs a file.".into()))?;
    check_member(&state, me.id, dm_id).await?;
    crate::messages::server::check_rate(&state, me.id)?;
    let processed = {
        let _permit = state
            .image_work
            .acquire()
            .await
            .map_err(|_| AppError::Unavailable)?;
        tokio::task::spawn_blocking(move || process(&file))
            .await
            .map_err(|_| AppError::Internal)??
    };
    let id = AttachmentId::new_v4();
    let Processed {
        content_type,
        width,
        height,
        data,
        thumbnail_content_type,
        thumbnail,
    } = processed;
    // In the object store when there is one; the row then has no bytes.
    let (data, thumbnail) = match &state.images {
        Some(store) => {
            store.put(id, data, thumbnail).await.map_err(|error| {
                tracing::error!(%error, "could not store an image");
                AppError::Unavailable
            })?;
            (None, None)
        }
        None => (Some(data), Some(thumbnail)),
    };
    let stored = sqlx::query!(
        "INSERT INTO attachments (id, dm_id, uploader_id, content_type, width, height, data,
                                  thumbnail_content_type, thumbnail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        id as AttachmentId,
        dm_id as DmId,
        me.id as UserId,
        content_type,
        width as i32,
        height as i32,
        data,
        thumbnail_content_type,
        thumbnail,
    )
    .execute(&state.pool)
    .await;
    if let Err(error) = stored {
        if let Some(store) = &state.images {
            store.delete(id).await;
        }
        return Err(error.into());
    }
    Ok(Json(Attachment {
        id,
        width: width as i32,
        height: height as i32,
        content_type: content_type.to_owned(),
    }))
}

/// A multipart error as a status: 413 past a size limit, else 400.
fn form_error(error: axum::extract::multipart::MultipartError) -> AppError {
    if error.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::PayloadTooLarge
    } else {
        AppError::BadRequest(format!(
            "The upload is not a well-formed form: {}",
            error.body_text()
        ))
    }
}

/// Whether `me` may add an image to DM `dm_id`: a member of it, ACTIVE,
/// the other member still there, and no block between the two (as for
/// reactions).
async fn check_member(state: &AppState, me: UserId, dm_id: DmId) -> Result<(), AppError> {
    let other = crate::dms::server::other_member(&state.pool, me, dm_id)
        .await?
        .ok_or(AppError::NotFound)?;
    if other.status != DmStatus::Active {
        return Err(AppError::Conflict(
            "Images can be sent once both have accepted.".into(),
        ));
    }
    if other.deleted {
        return Err(AppError::Conflict(
            "This conversation is read-only: the other person deleted their account.".into(),
        ));
    }
    if other.blocked {
        return Err(AppError::Forbidden);
    }
    Ok(())
}

/// The bytes of an image or its thumbnail, to a member of its DM.
async fn fetch(
    state: &AppState,
    me: UserId,
    id: &str,
    thumbnail: bool,
) -> Result<impl IntoResponse + use<>, AppError> {
    let id: AttachmentId = id.parse().map_err(|_| AppError::NotFound)?;
    let row = sqlx::query!(
        r#"SELECT CASE WHEN $3 THEN a.thumbnail_content_type ELSE a.content_type END AS "content_type!",
                  CASE WHEN $3 THEN a.thumbnail ELSE a.data END AS bytes
           FROM attachments a
           JOIN dm_members m ON m.dm_id = a.dm_id AND m.user_id = $2
           WHERE a.id = $1"#,
        id as AttachmentId,
        me as UserId,
        thumbnail,
    )
    .fetch_optional(&state.pool)
    .await?
    .ok_or(AppError::NotFound)?;
    let bytes = match (row.bytes, &state.images) {
        (Some(bytes), _) => axum::body::Bytes::from(bytes),
        (None, Some(store)) => store.get(id, thumbnail).await.map_err(|error| {
            tracing::error!(%error, %id, "could not read an image from its store");
            AppError::Unavailable
        })?,
        (None, None) => {
            tracing::error!(%id, "an image kept in an object store, with none configured");
            return Err(AppError::Unavailable);
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, row.content_type),
            // An id's image never changes; only its viewer may keep it.
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable".to_owned(),
            ),
            (header::CONTENT_DISPOSITION, "inline".to_owned()),
        ],
        bytes,
    ))
}

/// `GET /api/attachments/{id}`: the image, full size, to the members of
/// its DM; cached by the browser for a year (an id's image never changes).
///
/// # Errors
/// 401 without a session; 404 for an unknown id or someone who is not a
/// member of the image's DM.
pub async fn image(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    fetch(&state, me.id, &id, false).await
}

/// `GET /api/attachments/{id}/thumbnail`: as [`image`], the thumbnail
/// (JPEG, or PNG with transparency; the longest side at most
/// [`THUMBNAIL_SIDE`] pixels).
///
/// # Errors
/// As [`image`].
pub async fn thumbnail(
    State(state): State<AppState>,
    CurrentUser(me): CurrentUser,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, AppError> {
    fetch(&state, me.id, &id, true).await
}

/// Deletes images uploaded more than a day ago that no message carries
/// (an upload whose send never came), from `store` too. Returns how many
/// went.
///
/// # Errors
/// The database error.
pub async fn prune_unsent(
    pool: &sqlx::PgPool,
    store: Option<&ImageStore>,
) -> Result<u64, sqlx::Error> {
    let gone = sqlx::query_scalar!(
        r#"DELETE FROM attachments a
            WHERE a.created_at < now() - interval '1 day'
              AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.attachment_id = a.id)
           RETURNING a.id AS "id: AttachmentId""#
    )
    .fetch_all(pool)
    .await?;
    if let Some(store) = store {
        for id in &gone {
            store.delete(*id).await;
        }
    }
    Ok(gone.len() as u64)
}
