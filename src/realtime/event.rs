//! The one contract of `GET /api/events`: [`Event`], compiled by the server
//! (whose writers build it and whose SSE encoder serialises it) and by the
//! browser (which decodes it). No other Rust code names an event kind.
//!
//! On the wire each event is one Server-Sent Event
//! ([the SSE format](https://html.spec.whatwg.org/multipage/server-sent-events.html)):
//! `event:` is the kind ([`Event::kind`]), `data:` the variant's fields as
//! JSON ([`Event::data`]), `id:` its position in the recipient's log.

use serde::{Deserialize, Serialize};

use crate::ids::{DmId, MessageId, UserId};
use crate::{
    dms::DmSummary,
    messages::{Message, Reactions},
};

/// `read`: `user_id` has read DM `dm_id` up to `seq` (a read receipt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadEvent {
    /// The DM.
    pub dm_id: DmId,
    /// Who read.
    pub user_id: UserId,
    /// Up to which `seq`.
    pub seq: i64,
}

/// `typing`: `user_id` is typing in DM `dm_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingEvent {
    /// The DM.
    pub dm_id: DmId,
    /// Who is typing.
    pub user_id: UserId,
}

/// `presence`: `user_id` came online or went offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// Whose presence.
    pub user_id: UserId,
    /// Whether they now have an open event stream.
    pub online: bool,
    /// When their last stream closed (RFC 3339), when offline and known.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<time::OffsetDateTime>,
}

/// `reaction`: the reactions of message `message_id` in DM `dm_id`
/// changed (a member added or took back one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReactionEvent {
    /// The DM.
    pub dm_id: DmId,
    /// The message.
    pub message_id: MessageId,
    /// All its reactions now.
    pub reactions: Reactions,
}

/// `resync`: the stream cannot replay what was missed (too far behind, or
/// behind the pruned log): refetch what is shown. No fields (`{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncEvent {}

/// One event on a user's stream. Serialised adjacently tagged, as the log
/// and the wire carry it: `{"kind": "message", "data": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// A message was sent, edited or deleted: the whole message, as
    /// `messages/list` returns it (the log's writers build it in SQL,
    /// `message_json` in the migrations, and in `messages::server::edit`).
    Message(Message),
    /// A DM's handshake changed (an invite, accept, decline or re-invite):
    /// the DM as the recipient's conversation list shows it (`dm/list`'s
    /// row: status, `invited_by_user_id`, the other user, last message,
    /// unread count), so that the sidebar and the chat page's buttons
    /// update without a request.
    Dm(DmSummary),
    /// A read receipt.
    Read(ReadEvent),
    /// A typing hint.
    Typing(TypingEvent),
    /// A presence change.
    Presence(PresenceEvent),
    /// Refetch what is shown.
    Resync(ResyncEvent),
    /// A message's reactions changed.
    Reaction(ReactionEvent),
}

impl Event {
    /// Every kind, as [`Event::kind`] names them (the browser listens for
    /// each).
    pub const KINDS: [&'static str; 7] = [
        "message", "dm", "read", "typing", "presence", "resync", "reaction",
    ];
    /// The kind of typing hints, which are not replayed once stale.
    pub const TYPING: &'static str = Self::KINDS[3];
    /// The kinds that matter only as they happen (typing, presence): the
    /// log keeps them a minute.
    pub const EPHEMERAL: [&'static str; 2] = [Self::KINDS[3], Self::KINDS[4]];

    /// The kind: the SSE `event:` field and the log's `kind` column.
    pub fn kind(&self) -> &'static str {
        let index = match self {
            Event::Message(_) => 0,
            Event::Dm(_) => 1,
            Event::Read(_) => 2,
            Event::Typing(_) => 3,
            Event::Presence(_) => 4,
            Event::Resync(_) => 5,
            Event::Reaction(_) => 6,
        };
        Self::KINDS[index]
    }

    /// The fields as JSON: the SSE `data:` field and the log's `payload`.
    pub fn data(&self) -> serde_json::Value {
        // Structs of ids, numbers, text and booleans always serialise.
        serde_json::to_value(self)
            .map(|mut tagged| tagged["data"].take())
            .unwrap_or_default()
    }

    /// Decodes an event from its kind and its data (JSON text), as the SSE
    /// stream and the log carry them.
    ///
    /// # Errors
    /// An unknown kind, or data that is not that kind's JSON.
    pub fn decode(kind: &str, data: &str) -> Result<Self, serde_json::Error> {
        let data: serde_json::Value = serde_json::from_str(data)?;
        serde_json::from_value(serde_json::json!({ "kind": kind, "data": data }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    use crate::{
        dms::{Dm, DmStatus},
        users::User,
    };

    fn every_variant() -> Vec<Event> {
        let (dm_id, user_id, message_id) = (
            DmId::from_u128(1),
            UserId::from_u128(2),
            MessageId::from_u128(3),
        );
        vec![
            Event::Message(Message {
                id: message_id,
                dm_id,
                seq: 7,
                sender_id: user_id,
                body: "hello\nthere".into(),
                client_id: Uuid::from_u128(4),
                created_at: time::macros::datetime!(2026-12-02 10:00:00.123 UTC),
                edited_at: None,
                deleted: false,
                reactions: Default::default(),
                reply_to: Some(crate::messages::ReplyTo {
                    id: MessageId::from_u128(5),
                    seq: 6,
                    sender_id: user_id,
                    excerpt: "the one before".into(),
                    deleted: false,
                }),
                attachment: Some(crate::messages::Attachment {
                    id: crate::ids::AttachmentId::from_u128(8),
                    width: 640,
                    height: 480,
                    content_type: "image/jpeg".into(),
                }),
            }),
            Event::Dm(DmSummary {
                dm: Dm {
                    id: dm_id,
                    status: DmStatus::Invited,
                    invited_by_user_id: user_id,
                    invite_note: Some("Hi from the meetup".into()),
                    muted: false,
                },
                other_user: User {
                    id: user_id,
                    username: "ada".into(),
                    first_name: Some("Ada".into()),
                    last_name: None,
                    image_url: None,
                },
                last_message: None,
                last_activity_at: time::macros::datetime!(2026-12-02 10:00 UTC),
                unread_count: 0,
                last_seq: 0,
                online: false,
                last_seen_at: Some(time::macros::datetime!(2026-12-03 09:55 UTC)),
            }),
            Event::Read(ReadEvent {
                dm_id,
                user_id,
                seq: 7,
            }),
            Event::Typing(TypingEvent { dm_id, user_id }),
            Event::Presence(PresenceEvent {
                user_id,
                online: false,
                last_seen_at: Some(time::macros::datetime!(2026-12-03 10:00 UTC)),
            }),
            Event::Resync(ResyncEvent {}),
            Event::Reaction(ReactionEvent {
                dm_id,
                message_id,
                reactions: Reactions(vec![crate::messages::Reaction {
                    emoji: "👍".into(),
                    user_ids: vec![user_id],
                }]),
            }),
        ]
    }

    #[test]
    fn every_variant_round_trips_through_kind_and_data() {
        let events = every_variant();
        assert_eq!(events.len(), Event::KINDS.len());
        for event in events {
            let data = event.data().to_string();
            assert_eq!(Event::decode(event.kind(), &data).unwrap(), event, "{data}");
        }
    }

    #[test]
    fn typing_and_presence_are_the_ephemeral_kinds() {
        for event in every_variant() {
            let ephemeral = matches!(event, Event::Typing(_) | Event::Presence(_));
            assert_eq!(Event::EPHEMERAL.contains(&event.kind()), ephemeral);
            assert_eq!(
                event.kind() == Event::TYPING,
                matches!(event, Event::Typing(_))
            );
        }
    }

    #[test]
    fn the_kind_is_serdes_tag() {
        for event in every_variant() {
            let tagged = serde_json::to_value(&event).unwrap();
            assert_eq!(tagged["kind"], event.kind());
            assert_eq!(tagged["data"], event.data());
        }
    }

    #[test]
    fn an_unknown_kind_or_malformed_data_is_an_error() {
        let read = r#"{"dm_id":"00000000-0000-0000-0000-000000000001",
                       "user_id":"00000000-0000-0000-0000-000000000002","seq":3}"#;
        assert!(Event::decode("read", read).is_ok());
        assert!(Event::decode("shout", read).is_err());
        assert!(Event::decode("read", "{}").is_err());
        assert!(Event::decode("read", "not json").is_err());
        assert!(Event::decode("dm", read).is_err());
    }
}
