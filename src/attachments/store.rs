//! Where an image's bytes live. By default in Postgres
//! (`attachments.data` and `.thumbnail`), so every instance serves them
//! and the embedded database needs nothing else. With
//! `KNOCK_ATTACHMENT_STORE` set, in the object store it names (the
//! `object_store` crate): `s3://bucket/prefix` for Amazon S3 or an
//! S3-compatible store, configured by the `AWS_*` variables that crate
//! reads (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …), or `file:///path` for a
//! directory. The row in `attachments` then has no bytes, and the image and
//! its thumbnail are the objects `{prefix}/{id}` and
//! `{prefix}/{id}.thumbnail`.

use std::sync::Arc;

use axum::body::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};

use crate::ids::AttachmentId;

/// An object store and the path in it under which images are kept.
#[derive(Debug, Clone)]
pub struct ImageStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl ImageStore {
    /// The store that `url` (`KNOCK_ATTACHMENT_STORE`) names, configured by
    /// the `AWS_*` environment variables for `s3://`.
    ///
    /// # Errors
    /// One line saying why `url` names no store this build supports.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let options = std::env::vars()
            .filter(|(key, _)| key.starts_with("AWS_"))
            .map(|(key, value)| (key.to_ascii_lowercase(), value));
        let (store, prefix) =
            object_store::parse_url_opts(&parsed, options).map_err(|e| e.to_string())?;
        Ok(Self {
            store: Arc::from(store),
            prefix,
        })
    }

    fn path(&self, id: AttachmentId, thumbnail: bool) -> Path {
        self.prefix.clone().join(if thumbnail {
            format!("{id}.thumbnail")
        } else {
            id.to_string()
        })
    }

    /// Stores image `id` and its thumbnail.
    ///
    /// # Errors
    /// The store's error.
    pub async fn put(
        &self,
        id: AttachmentId,
        data: Vec<u8>,
        thumbnail: Vec<u8>,
    ) -> Result<(), object_store::Error> {
        self.store
            .put(&self.path(id, false), PutPayload::from(data))
            .await?;
        self.store
            .put(&self.path(id, true), PutPayload::from(thumbnail))
            .await?;
        Ok(())
    }

    /// Image `id`, or its thumbnail.
    ///
    /// # Errors
    /// The store's error (`NotFound` for an object that is not there).
    pub async fn get(
        &self,
        id: AttachmentId,
        thumbnail: bool,
    ) -> Result<Bytes, object_store::Error> {
        self.store
            .get(&self.path(id, thumbnail))
            .await?
            .bytes()
            .await
    }

    /// Deletes image `id` and its thumbnail; one already gone is no error.
    pub async fn delete(&self, id: AttachmentId) {
        for thumbnail in [false, true] {
            match self.store.delete(&self.path(id, thumbnail)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => tracing::warn!(%error, %id, "could not delete an image's object"),
            }
        }
    }
}
