//! "Active now" / "Active 5 minutes ago": the other member's presence in
//! words, for an ACTIVE DM only (DESIGN §5: an invite reveals nothing).

use std::time::Duration;

use leptos::prelude::*;
use time::OffsetDateTime;

use crate::ids::UserId;
use crate::realtime::Live;

/// How often the relative time is worked out again.
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
const REFRESH: Duration = Duration::from_secs(30);

/// The words for someone last seen `elapsed` ago: "Active just now" under
/// a minute, else "Active 5 minutes ago" (one unit, rounded down; the
/// `timeago` crate's English).
pub fn active_ago(elapsed: Duration) -> String {
    let ago = timeago::Formatter::new()
        .min_unit(timeago::TimeUnit::Minutes)
        .too_low("just now")
        .convert(elapsed);
    format!("Active {ago}")
}

/// What [`LastSeen`] says of `user` at `now`: "Active now" while online,
/// else [`active_ago`] of the moment their last stream closed, else
/// nothing (never seen, or hidden from me).
pub fn last_seen_text(
    online: bool,
    last_seen_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<String> {
    if online {
        return Some("Active now".into());
    }
    let elapsed = (now - last_seen_at?).max(time::Duration::ZERO);
    Some(active_ago(elapsed.unsigned_abs()))
}

/// The other member's presence in words, beside their name on the chat
/// page; shown only with `presence` (we share an ACTIVE DM). Reads what
/// the lists and `presence` events told [`Live`], so it renders once the
/// page has hydrated, and refreshes every 30 s.
#[component]
pub fn LastSeen(
    /// Whose.
    user: UserId,
    /// Whether their presence may be shown.
    presence: bool,
) -> impl IntoView {
    let live = expect_context::<Live>();
    let now = RwSignal::new(None::<OffsetDateTime>);
    // Set only in the browser, after hydration, so that the server's HTML
    // and the hydrating page agree.
    Effect::new(move |_| {
        now.try_set(Some(OffsetDateTime::now_utc()));
    });
    #[cfg(feature = "hydrate")]
    if let Ok(ticker) = set_interval_with_handle(
        move || {
            now.try_set(Some(OffsetDateTime::now_utc()));
        },
        REFRESH,
    ) {
        on_cleanup(move || ticker.clear());
    }
    // `try_get`: a `Transition` may still show this view for a moment after
    // its owner (and this signal) is gone.
    let text = move || {
        let now = now.try_get().flatten()?;
        last_seen_text(live.is_online(user), live.last_seen_at(user), now)
    };
    presence.then(|| view! { <span class="last-seen">{text}</span> })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn online_is_active_now_whatever_the_last_seen_time() {
        let now = datetime!(2026-12-03 10:00 UTC);
        assert_eq!(
            last_seen_text(true, Some(now - time::Duration::hours(3)), now).as_deref(),
            Some("Active now")
        );
    }

    #[test]
    fn offline_says_how_long_ago_in_one_unit() {
        let now = datetime!(2026-12-03 10:00 UTC);
        let ago = |d: time::Duration| last_seen_text(false, Some(now - d), now);
        assert_eq!(
            ago(time::Duration::seconds(20)).as_deref(),
            Some("Active just now")
        );
        assert_eq!(
            ago(time::Duration::seconds(330)).as_deref(),
            Some("Active 5 minutes ago")
        );
        assert_eq!(
            ago(time::Duration::hours(2)).as_deref(),
            Some("Active 2 hours ago")
        );
        // A clock a little behind the server's is not "in the future".
        assert_eq!(
            ago(time::Duration::seconds(-5)).as_deref(),
            Some("Active just now")
        );
    }

    #[test]
    fn never_seen_or_hidden_says_nothing() {
        let now = datetime!(2026-12-03 10:00 UTC);
        assert_eq!(last_seen_text(false, None, now), None);
    }
}
