//! Typed ids: a [`UserId`], a [`DmId`], a [`MessageId`] and an
//! [`AttachmentId`] are each a UUID
//! that cannot be passed where another is expected.
//!
//! On the wire and in the database they are the bare UUID (serde and sqlx
//! `transparent`), so the JSON shapes of DESIGN §6 do not change.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        #[cfg_attr(feature = "ssr", derive(sqlx::Type), sqlx(transparent))]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random (version 4) id.
            #[cfg(feature = "ssr")]
            pub fn new_v4() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl $name {
            /// The id whose UUID is `v` (fixed ids in tests).
            pub const fn from_u128(v: u128) -> Self {
                Self(Uuid::from_u128(v))
            }
        }

        impl fmt::Display for $name {
            /// The hyphenated UUID, as in URLs and forms.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            /// Parses any UUID text form.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

typed_id!(
    /// A user's id (`users.id`), used in URLs (`/chat/{user_id}`).
    UserId
);
typed_id!(
    /// A DM's id (`dms.id`).
    DmId
);
typed_id!(
    /// A message's id (`messages.id`).
    MessageId
);
typed_id!(
    /// An uploaded image's id (`attachments.id`).
    AttachmentId
);
