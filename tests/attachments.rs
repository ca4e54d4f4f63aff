//! Images (DESIGN §6: `POST /api/attachments`, `GET /api/attachments/{id}`
//! and `…/thumbnail`, `messages/send` with `attachment_id`): checked by
//! decoding, stored upright without EXIF, served to the DM's members only.
#![cfg(feature = "ssr")]

mod common;

use std::io::Cursor;

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use common::{Person, accepted_dm, active, call, person, send_message};
use image::{ImageEncoder, codecs::jpeg::JpegEncoder};
use knock::{attachments::MAX_BYTES, server::state::AppState};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

const BOUNDARY: &str = "knock-test-boundary";

/// A multipart form with the fields given: `("dm_id", None, text)` or
/// `("file", Some(name), bytes)`.
fn form(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, bytes) in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file_name {
            Some(file_name) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\n\
                     Content-Type: image/jpeg\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// `POST /api/attachments` with `body` as `who`.
async fn post_form(state: &AppState, who: Option<&Person>, body: Vec<u8>) -> common::Reply {
    let mut request = Request::post("/api/attachments").header(
        header::CONTENT_TYPE,
        format!("multipart/form-data; boundary={BOUNDARY}"),
    );
    if let Some(who) = who {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", who.token));
    }
    common::send(state.clone(), request.body(Body::from(body)).unwrap()).await
}

/// Uploads `bytes` as `photo.jpg` to DM `dm` as `who`.
async fn upload(state: &AppState, who: &Person, dm: &Value, bytes: &[u8]) -> common::Reply {
    let dm = dm.as_str().unwrap().to_owned();
    post_form(
        state,
        Some(who),
        form(&[
            ("dm_id", None, dm.as_bytes()),
            ("file", Some("photo.jpg"), bytes),
        ]),
    )
    .await
}

/// `GET path` as `who`: the status and the body's bytes.
async fn get(state: &AppState, who: Option<&Person>, path: &str) -> (StatusCode, Vec<u8>, String) {
    let mut request = Request::get(path);
    if let Some(who) = who {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", who.token));
    }
    let reply = common::send(state.clone(), request.body(Body::empty()).unwrap()).await;
    let cache = reply
        .headers
        .get(header::CACHE_CONTROL)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (reply.status, reply.bytes, cache)
}

/// EXIF (TIFF, little-endian) naming the camera `SecretCam` and saying the
/// picture must be turned a quarter clockwise to stand upright
/// (orientation 6).
fn exif_rotated_by_secret_cam() -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    // Make: ASCII, 10 bytes at offset 38.
    tiff.extend_from_slice(&0x010Fu16.to_le_bytes());
    tiff.extend_from_slice(&2u16.to_le_bytes());
    tiff.extend_from_slice(&10u32.to_le_bytes());
    tiff.extend_from_slice(&38u32.to_le_bytes());
    // Orientation: SHORT 6.
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&6u16.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    tiff.extend_from_slice(b"SecretCam\0");
    tiff
}

/// A `width` × `height` JPEG, with `exif` when given.
fn jpeg(width: u32, height: u32, exif: Option<Vec<u8>>) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = Vec::new();
    let mut encoder = JpegEncoder::new_with_quality(&mut out, 85);
    if let Some(exif) = exif {
        encoder.set_exif_metadata(exif).unwrap();
    }
    encoder
        .write_image(&pixels, width, height, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn stored(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM attachments")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn an_image_is_stored_upright_without_exif_and_served_to_members_only(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let cy = person(&pool, "cy").await;
    let original = jpeg(640, 480, Some(exif_rotated_by_secret_cam()));
    assert!(contains(&original, b"SecretCam"));
    let reply = upload(&state, &ada, &dm, &original).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let attachment = reply.json();
    // Turned upright: the sides swap.
    assert_eq!(
        (
            &attachment["width"],
            &attachment["height"],
            &attachment["content_type"]
        ),
        (&json!(480), &json!(640), &json!("image/jpeg"))
    );
    let id = attachment["id"].as_str().unwrap();

    let full = format!("/api/attachments/{id}");
    let thumbnail = format!("/api/attachments/{id}/thumbnail");
    for who in [&ada, &bob] {
        let (status, data, cache) = get(&state, Some(who), &full).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            cache.contains("private") && cache.contains("immutable"),
            "{cache}"
        );
        assert!(!contains(&data, b"SecretCam"), "the camera's name is gone");
        assert!(!contains(&data, b"Exif\0\0"), "no EXIF block is left");
        let served = image::load_from_memory_with_format(&data, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((served.width(), served.height()), (480, 640));
        let (status, small, _) = get(&state, Some(who), &thumbnail).await;
        assert_eq!(status, StatusCode::OK);
        let small = image::load_from_memory(&small).unwrap();
        assert_eq!((small.width(), small.height()), (240, 320));
    }

    // Someone outside the DM, or signed out, gets nothing.
    assert_eq!(get(&state, Some(&cy), &full).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&state, Some(&cy), &thumbnail).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&state, None, &full).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&state, Some(&ada), "/api/attachments/not-a-uuid")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[sqlx::test]
async fn a_file_that_is_not_the_image_it_claims_is_400_and_stores_nothing(pool: PgPool) {
    let (state, ada, _bob, dm) = active(&pool).await;
    let png = {
        let mut out = Vec::new();
        image::RgbImage::new(8, 8)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    };
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "text named photo.jpg",
            b"just some text, not a picture".to_vec(),
        ),
        ("a PNG cut short", png[..png.len() / 2].to_vec()),
        ("a JPEG header alone", jpeg(32, 32, None)[..20].to_vec()),
        ("an empty file", Vec::new()),
    ];
    for (what, bytes) in cases {
        let reply = upload(&state, &ada, &dm, &bytes).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            reply.body
        );
        assert_eq!(reply.json()["error"]["code"], "bad_request", "{what}");
    }
    assert_eq!(stored(&pool).await, 0);
}

#[sqlx::test]
async fn an_upload_one_byte_over_10_mb_is_413(pool: PgPool) {
    let (state, ada, _bob, dm) = active(&pool).await;
    let over = vec![0u8; MAX_BYTES + 1];
    let reply = upload(&state, &ada, &dm, &over).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.body
    );
    // At the limit the size is fine; these bytes are simply not an image.
    let at = vec![0u8; MAX_BYTES];
    let reply = upload(&state, &ada, &dm, &at).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    assert_eq!(stored(&pool).await, 0);
}

#[sqlx::test]
async fn uploads_that_are_not_allowed_change_nothing(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let cy = person(&pool, "cy").await;
    let dee = person(&pool, "dee").await;
    let picture = jpeg(16, 16, None);
    // An invite Cy has not answered.
    let invited = call(
        &state,
        Some(&ada),
        "dm/invite",
        json!({ "other_user_id": cy.id }),
    )
    .await
    .json()["id"]
        .clone();
    // Dee blocked Ada after they had talked.
    let blocked = accepted_dm(&state, &ada, &dee).await;
    call(
        &state,
        Some(&dee),
        "users/block",
        json!({ "user_id": ada.id }),
    )
    .await;
    let dm_text = dm.as_str().unwrap().to_owned();
    let with_picture = |dm: &str| {
        form(&[
            ("dm_id", None, dm.as_bytes()),
            ("file", Some("a.jpg"), &picture),
        ])
    };
    let cases: Vec<(&str, &Person, Vec<u8>, StatusCode)> = vec![
        (
            "not a member",
            &cy,
            with_picture(&dm_text),
            StatusCode::NOT_FOUND,
        ),
        (
            "not ACTIVE",
            &ada,
            with_picture(invited.as_str().unwrap()),
            StatusCode::CONFLICT,
        ),
        (
            "blocked",
            &ada,
            with_picture(blocked.as_str().unwrap()),
            StatusCode::FORBIDDEN,
        ),
        (
            "no dm_id",
            &ada,
            form(&[("file", Some("a.jpg"), &picture)]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no file",
            &bob,
            form(&[("dm_id", None, dm_text.as_bytes())]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a dm_id that is no UUID",
            &ada,
            with_picture("nope"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a form cut short",
            &ada,
            form(&[("dm_id", None, dm_text.as_bytes())])[..30].to_vec(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, who, body, status) in cases {
        let reply = post_form(&state, Some(who), body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
    }
    // Not a multipart form at all, and no session.
    let reply = call(&state, Some(&ada), "attachments", json!({ "dm_id": dm })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let reply = post_form(&state, None, form(&[("dm_id", None, dm_text.as_bytes())])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Bob deleted his account: the DM is read-only.
    knock::users::server::tombstone(&pool, "user_bob")
        .await
        .unwrap();
    let reply = upload(&state, &ada, &dm, &picture).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(stored(&pool).await, 0);
}

#[sqlx::test]
async fn an_image_is_sent_once_by_its_uploader_and_goes_with_its_message(pool: PgPool) {
    let (state, ada, bob, dm) = active(&pool).await;
    let cy = person(&pool, "cy").await;
    let other_dm = accepted_dm(&state, &ada, &cy).await;
    let attachment = upload(&state, &ada, &dm, &jpeg(64, 32, None)).await.json();
    let send = |who: &'static str, dm: &Value, body: &str, attachment: &Value| {
        let who = if who == "ada" {
            ada.clone()
        } else {
            bob.clone()
        };
        let (state, dm, body, attachment) = (
            state.clone(),
            dm.clone(),
            body.to_owned(),
            attachment.clone(),
        );
        async move {
            call(
                &state,
                Some(&who),
                "messages/send",
                json!({ "dm_id": dm, "body": body, "client_id": Uuid::new_v4(), "attachment_id": attachment }),
            )
            .await
        }
    };
    // Not Bob's upload, not this DM's, and not an upload at all.
    for (who, dm, id) in [
        ("bob", &dm, attachment["id"].clone()),
        ("ada", &other_dm, attachment["id"].clone()),
        ("ada", &dm, json!(Uuid::new_v4())),
    ] {
        let reply = send(who, dm, "", &id).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    }
    // Without a caption: the image alone.
    let sent = send("ada", &dm, "  ", &attachment["id"]).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let sent = sent.json();
    assert_eq!(sent["body"], "");
    assert_eq!(sent["attachment"], attachment);
    let listed = call(&state, Some(&bob), "messages/list", json!({ "dm_id": dm }))
        .await
        .json();
    assert_eq!(listed[0]["attachment"], attachment);
    // Sent once only.
    let again = send("ada", &dm, "again", &attachment["id"]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    // A message needs text or an image.
    let empty = send_message(&state, &ada, &dm, " ", Uuid::new_v4()).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    // Deleting the message deletes its image.
    call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": sent["id"] }),
    )
    .await;
    let id = attachment["id"].as_str().unwrap();
    assert_eq!(
        get(&state, Some(&bob), &format!("/api/attachments/{id}"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(stored(&pool).await, 0);
    let listed = call(&state, Some(&bob), "messages/list", json!({ "dm_id": dm }))
        .await
        .json();
    assert_eq!(listed[0].get("attachment"), None);
    assert_eq!(listed[0]["deleted"], true);
}

#[sqlx::test]
async fn with_an_object_store_the_bytes_live_there_and_go_with_the_message(pool: PgPool) {
    let (mut state, ada, bob, dm) = active(&pool).await;
    let dir = tempfile::tempdir().unwrap();
    state.images = Some(
        knock::attachments::store::ImageStore::from_url(&format!(
            "file://{}/images",
            dir.path().display()
        ))
        .unwrap(),
    );
    let attachment = upload(&state, &ada, &dm, &jpeg(400, 100, None))
        .await
        .json();
    let id = attachment["id"].as_str().unwrap().to_owned();
    // The row keeps no bytes; the directory has the image and thumbnail.
    let in_row: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT data FROM attachments WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(in_row, None);
    let files = dir.path().join("images");
    assert!(files.join(&id).is_file() && files.join(format!("{id}.thumbnail")).is_file());

    let (status, data, _) = get(&state, Some(&bob), &format!("/api/attachments/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(image::load_from_memory(&data).unwrap().width(), 400);
    let (status, small, _) = get(
        &state,
        Some(&bob),
        &format!("/api/attachments/{id}/thumbnail"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(image::load_from_memory(&small).unwrap().width(), 320);

    let sent = call(
        &state,
        Some(&ada),
        "messages/send",
        json!({ "dm_id": dm, "body": "", "client_id": Uuid::new_v4(), "attachment_id": id }),
    )
    .await
    .json();
    call(
        &state,
        Some(&ada),
        "messages/delete",
        json!({ "message_id": sent["id"] }),
    )
    .await;
    assert!(!files.join(&id).exists() && !files.join(format!("{id}.thumbnail")).exists());
    assert_eq!(stored(&pool).await, 0);
}

#[test]
fn an_attachment_store_that_is_no_url_or_unknown_is_refused() {
    use knock::attachments::store::ImageStore;
    assert!(ImageStore::from_url("not a url").is_err());
    assert!(ImageStore::from_url("ftp://example.test/images").is_err());
}
