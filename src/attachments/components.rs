//! The composer's image: **Attach image** (a file chooser), a pasted image
//! or one dropped on the conversation starts an upload to
//! `POST /api/attachments`, shown with its progress and **Cancel upload**;
//! once stored, its thumbnail waits above the composer (with **Remove
//! image**) until the message is sent. Uploads need the WASM bundle.
//! [`MessageImage`] shows a message's image in the thread.

use leptos::prelude::*;

use super::{ACCEPTED, thumbnail_size, thumbnail_url, url};
use crate::{ids::DmId, messages::Attachment};

/// Where the composer's upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// On its way: `percent` of the file sent.
    Sending {
        /// The file's name.
        name: String,
        /// 0–100.
        percent: u8,
    },
    /// Stored: sent with the next message.
    Ready {
        /// The file's name.
        name: String,
        /// The stored image.
        attachment: Attachment,
    },
    /// Refused or lost, with why.
    Failed {
        /// The file's name.
        name: String,
        /// What went wrong, for the person.
        error: String,
    },
}

/// The composer's upload: what it shows, and (in the browser) the request
/// on its way so that it can be cancelled.
#[derive(Debug, Clone, Copy)]
pub struct Uploads {
    /// What the composer shows.
    pub state: RwSignal<Option<Upload>>,
    #[cfg(feature = "hydrate")]
    current: StoredValue<Option<browser::InFlight>, LocalStorage>,
}

impl Default for Uploads {
    fn default() -> Self {
        Self::new()
    }
}

impl Uploads {
    /// No upload.
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(None),
            #[cfg(feature = "hydrate")]
            current: StoredValue::new_local(None),
        }
    }

    /// The stored image waiting to be sent, if any.
    pub fn ready(&self) -> Option<Attachment> {
        self.state.with(|state| match state {
            Some(Upload::Ready { attachment, .. }) => Some(attachment.clone()),
            _ => None,
        })
    }

    /// Whether an upload is on its way.
    pub fn sending(&self) -> bool {
        self.state
            .with(|state| matches!(state, Some(Upload::Sending { .. })))
    }

    /// Stops an upload on its way (nothing is stored) and forgets a stored
    /// one (it is never sent; the server prunes it).
    pub fn clear(&self) {
        #[cfg(feature = "hydrate")]
        if let Some(Some(request)) = self.current.try_update_value(Option::take) {
            request.abort();
        }
        self.state.set(None);
    }

    /// Uploads `file` to DM `dm_id`, in place of any upload before it.
    #[cfg(feature = "hydrate")]
    pub fn start(&self, dm_id: DmId, file: web_sys::File) {
        self.clear();
        let name = file.name();
        if file.size() > super::MAX_BYTES as f64 {
            self.state.set(Some(Upload::Failed {
                name,
                error: "it is over 10 MB.".into(),
            }));
            return;
        }
        self.state.set(Some(Upload::Sending {
            name: name.clone(),
            percent: 0,
        }));
        let this = *self;
        leptos::task::spawn_local(async move {
            let answer = browser::upload(dm_id, &file, this).await;
            this.current.try_set_value(None);
            // A cancelled upload has already been cleared.
            if this.sending_untracked() {
                this.state.try_set(Some(match answer {
                    Ok(attachment) => Upload::Ready { name, attachment },
                    Err(error) => Upload::Failed { name, error },
                }));
            }
        });
    }

    #[cfg(feature = "hydrate")]
    fn sending_untracked(&self) -> bool {
        self.state
            .try_with_untracked(|state| matches!(state, Some(Upload::Sending { .. })))
            .unwrap_or(false)
    }

    /// Starts uploading the first file of `files`, if there is one; says
    /// whether it did.
    #[cfg(feature = "hydrate")]
    pub fn start_first(&self, dm_id: DmId, files: Option<web_sys::FileList>) -> bool {
        match files.and_then(|files| files.get(0)) {
            Some(file) => {
                self.start(dm_id, file);
                true
            }
            None => false,
        }
    }
}

/// **Attach image**: a file chooser for JPEG, PNG, WebP and GIF images,
/// usable once the page has hydrated.
#[component]
pub fn AttachImage(
    /// The DM the image is for.
    dm_id: DmId,
    /// The composer's upload.
    uploads: Uploads,
    /// Whether the WASM bundle runs.
    hydrated: RwSignal<bool>,
) -> impl IntoView {
    #[cfg(not(feature = "hydrate"))]
    let _ = (dm_id, uploads);
    let on_change = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            if let Some(input) = ev
                .target()
                .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            {
                uploads.start_first(dm_id, input.files());
                // The same file chosen again is a change too.
                input.set_value("");
            }
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = ev;
    };
    view! {
        <label class="attach" class:disabled=move || !hydrated.get()>
            <input
                type="file"
                class="visually-hidden"
                accept=ACCEPTED
                disabled=move || !hydrated.get()
                on:change=on_change
            />
            "Attach image"
        </label>
    }
}

/// Above the composer: the upload's progress with **Cancel upload**, the
/// stored image with **Remove image**, or why it failed with **Dismiss**.
#[component]
pub fn UploadStatus(uploads: Uploads) -> impl IntoView {
    move || {
        uploads.state.get().map(|upload| match upload {
            Upload::Sending { name, percent } => view! {
                <div class="upload">
                    <span role="status">{format!("Uploading {name}… {percent}%")}</span>
                    <progress max="100" value=percent.to_string() aria-label="Upload progress"></progress>
                    <button type="button" class="link-button" on:click=move |_| uploads.clear()>
                        "Cancel upload"
                    </button>
                </div>
            }
            .into_any(),
            Upload::Ready { name, attachment } => {
                let (width, height) = thumbnail_size(attachment.width, attachment.height);
                // Shown small: a quarter of the thumbnail's size.
                view! {
                    <div class="upload">
                        <img
                            src=thumbnail_url(attachment.id)
                            width=width / 4
                            height=height / 4
                            alt=format!("Image to send: {name}")
                        />
                        <span>{name}</span>
                        <button type="button" class="link-button" on:click=move |_| uploads.clear()>
                            "Remove image"
                        </button>
                    </div>
                }
                .into_any()
            }
            Upload::Failed { name, error } => view! {
                <div class="upload">
                    <p class="form-error" role="alert">{format!("Could not upload {name}: {error}")}</p>
                    <button type="button" class="link-button" on:click=move |_| uploads.clear()>
                        "Dismiss"
                    </button>
                </div>
            }
            .into_any(),
        })
    }
}

/// A message's image in the thread: its thumbnail, with its place reserved
/// before it loads, linking to the image full size.
#[component]
pub fn MessageImage(attachment: Attachment) -> impl IntoView {
    let (width, height) = thumbnail_size(attachment.width, attachment.height);
    view! {
        <a
            class="message-image"
            href=url(attachment.id)
            target="_blank"
            rel="noopener"
            aria-label=format!("Open image full size ({} × {})", attachment.width, attachment.height)
        >
            <img src=thumbnail_url(attachment.id) width=width height=height alt="Image" loading="lazy" />
        </a>
    }
}

#[cfg(feature = "hydrate")]
mod browser {
    use leptos::prelude::*;
    use wasm_bindgen::{JsCast, closure::Closure};
    use web_sys::{FormData, ProgressEvent, XmlHttpRequest};

    use super::{Upload, Uploads};
    use crate::{
        auth::client::{Refresh, refresh},
        error::AppError,
        ids::DmId,
        messages::Attachment,
    };

    /// An upload on its way: the request, and its handlers, kept alive for
    /// as long as it may call them.
    pub struct InFlight {
        request: XmlHttpRequest,
        _handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
    }

    impl InFlight {
        /// Stops the request; its handlers are let go.
        pub fn abort(self) {
            let _ = self.request.abort();
            self.request.set_onloadend(None);
            if let Ok(upload) = self.request.upload() {
                upload.set_onprogress(None);
            }
        }
    }

    /// What one request answered: the status and body, or `None` when it
    /// was lost or aborted.
    async fn send(
        dm_id: DmId,
        file: &web_sys::File,
        bearer: Option<&str>,
        uploads: Uploads,
    ) -> Option<(u16, String)> {
        let form = FormData::new().ok()?;
        form.append_with_str("dm_id", &dm_id.to_string()).ok()?;
        form.append_with_blob_and_filename("file", file, &file.name())
            .ok()?;
        let request = XmlHttpRequest::new().ok()?;
        request.open("POST", super::super::UPLOAD_PATH).ok()?;
        request
            .set_request_header("Accept", "application/json")
            .ok()?;
        if let Some(token) = bearer {
            request
                .set_request_header("Authorization", &format!("Bearer {token}"))
                .ok()?;
        }
        let (done, finished) = futures::channel::oneshot::channel::<()>();
        let mut done = Some(done);
        let on_end = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            if let Some(done) = done.take() {
                let _ = done.send(());
            }
        });
        let on_progress = Closure::<dyn FnMut(web_sys::Event)>::new(move |ev: web_sys::Event| {
            let Ok(ev) = ev.dyn_into::<ProgressEvent>() else {
                return;
            };
            if ev.length_computable() && ev.total() > 0.0 {
                let percent = (ev.loaded() / ev.total() * 100.0).clamp(0.0, 100.0) as u8;
                uploads.state.try_update(|state| {
                    if let Some(Upload::Sending { percent: shown, .. }) = state {
                        *shown = percent;
                    }
                });
            }
        });
        request.set_onloadend(Some(on_end.as_ref().unchecked_ref()));
        request
            .upload()
            .ok()?
            .set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
        request.send_with_opt_form_data(Some(&form)).ok()?;
        uploads.current.try_set_value(Some(InFlight {
            request: request.clone(),
            _handlers: vec![on_end, on_progress],
        }));
        finished.await.ok()?;
        let status = request.status().ok()?;
        // 0: lost on the network, or aborted.
        (status != 0).then(|| {
            (
                status,
                request.response_text().ok().flatten().unwrap_or_default(),
            )
        })
    }

    /// Uploads `file` to DM `dm_id`; a 401 is renewed once as server
    /// functions do ([`crate::auth::client`]).
    pub async fn upload(
        dm_id: DmId,
        file: &web_sys::File,
        uploads: Uploads,
    ) -> Result<Attachment, String> {
        let lost = || "the connection was lost; try again.".to_owned();
        let (mut status, mut body) = send(dm_id, file, None, uploads).await.ok_or_else(lost)?;
        if status == 401
            && let Refresh::Token(token) = refresh().await
        {
            (status, body) = send(dm_id, file, Some(&token), uploads)
                .await
                .ok_or_else(lost)?;
        }
        if status == 200 {
            return serde_json::from_str(&body)
                .map_err(|_| "the server's answer was garbled.".into());
        }
        Err(match status {
            413 => "it is over 10 MB.".to_owned(),
            _ => serde_json::from_str::<AppError>(&body)
                .map(|error| error.to_string())
                .unwrap_or_else(|_| format!("the server answered {status}.")),
        })
    }
}
