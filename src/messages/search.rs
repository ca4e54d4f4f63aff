//! The sidebar's **Search messages**: a `GET` form (`?find=…`, so it works
//! before and without the WASM bundle) and its results, each a link to the
//! conversation at that message (`/chat/{user_id}?at={seq}`), with the
//! words that matched marked. The chat page's **Search this conversation**
//! does the same within the open DM (`?search=…`).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use super::{SearchHit, search_messages};
use crate::{
    auth::{SessionInfo, components::Session},
    components::{avatar::Avatar, load_error::LoadError},
    error::AppError,
    ids::{DmId, UserId},
    users::User,
};

/// One piece of a result's text: `true` for a word the search matched.
pub type Piece = (String, bool);

/// `text` in pieces, the words (runs of letters and digits) that `query`
/// names marked, whatever their case. The `simple` configuration of the
/// search matches whole words the same way.
pub fn highlight(text: &str, query: &str) -> Vec<Piece> {
    let words = |s: &str| -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut start = None;
        for (i, c) in s.char_indices() {
            match (c.is_alphanumeric(), start) {
                (true, None) => start = Some(i),
                (false, Some(from)) => {
                    spans.push((from, i));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(from) = start {
            spans.push((from, s.len()));
        }
        spans
    };
    let terms: Vec<String> = words(query)
        .into_iter()
        .map(|(a, b)| query[a..b].to_lowercase())
        .filter(|term| term != "or")
        .collect();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut at = 0;
    for (a, b) in words(text) {
        if terms.contains(&text[a..b].to_lowercase()) {
            if a > at {
                pieces.push((text[at..a].to_owned(), false));
            }
            pieces.push((text[a..b].to_owned(), true));
            at = b;
        }
    }
    if at < text.len() {
        pieces.push((text[at..].to_owned(), false));
    }
    pieces
}

/// The search form and, for `?find=…`, the results (none signed out).
#[component]
pub fn MessageSearch() -> impl IntoView {
    let Session { info, .. } = expect_context::<Session>();
    let query = use_query_map();
    let find = move || query.read().get("find").unwrap_or_default();
    let results = Resource::new(find, move |find| async move {
        let signed_in = matches!(info.await, Ok(SessionInfo { user: Some(_), .. }));
        if find.trim().is_empty() || !signed_in {
            return Ok(None);
        }
        search_messages(find, None, None).await.map(Some)
    });
    view! {
        <section aria-labelledby="search-title" class="message-search">
            <h2 id="search-title" class="visually-hidden">"Search messages"</h2>
            <form method="get" action="/" role="search" class="search">
                <input
                    type="search"
                    name="find"
                    aria-label="Search messages"
                    maxlength="100"
                    placeholder="Search messages"
                    value=find
                />
            </form>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let find = find();
                    match results.await {
                        Ok(None) => ().into_any(),
                        Ok(Some(hits)) if hits.is_empty() => {
                            view! { <p class="muted">"No messages found."</p> }.into_any()
                        }
                        Ok(Some(hits)) => view! {
                            <ul class="list" aria-label="Search results">
                                {hits.into_iter().map(|hit| result_row(hit, &find)).collect_view()}
                            </ul>
                        }
                        .into_any(),
                        Err(error) => view! {
                            <LoadError what="The search failed." error />
                        }
                        .into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The chat page's query parameter for a search in the open DM.
pub const IN_DM: &str = "search";

/// Searches DM `dm_id` for `query` (see [`search_messages`]).
///
/// # Errors
/// As [`search_messages`].
pub async fn in_dm(query: String, dm_id: DmId) -> Result<Vec<SearchHit>, AppError> {
    search_messages(query, Some(dm_id), None).await
}

/// **Search this conversation**, for the chat page's header: a `GET` form
/// (`?search=…`) that the router submits without a reload once hydrated.
#[component]
pub fn ConversationSearchForm() -> impl IntoView {
    let value = move || use_query_map().read().get(IN_DM).unwrap_or_default();
    view! {
        <leptos_router::components::Form method="GET" action="" attr:role="search" attr:class="search in-dm">
            <input
                type="search"
                name=IN_DM
                aria-label="Search this conversation"
                maxlength="100"
                placeholder="Search this conversation"
                prop:value=value
            />
        </leptos_router::components::Form>
    }
}

/// The results of **Search this conversation**, newest first, each a link
/// to the message in the thread (`?at={seq}`, which also closes them);
/// **Close search** goes back to the conversation.
pub fn conversation_results(
    results: Result<Vec<SearchHit>, AppError>,
    query: &str,
    me: UserId,
    other: &User,
) -> impl IntoView + use<> {
    let close = format!("/chat/{}", other.id);
    let body = match results {
        Ok(hits) if hits.is_empty() => {
            view! { <p class="muted">"No messages found."</p> }.into_any()
        }
        Ok(hits) => view! {
            <ul class="list" aria-label="Results in this conversation">
                {hits
                    .into_iter()
                    .map(|hit| {
                        let who = if hit.message.sender_id == me {
                            "You".to_owned()
                        } else {
                            other.display_name()
                        };
                        let href = format!("/chat/{}?at={}", other.id, hit.message.seq);
                        view! {
                            <li>
                                <a href=href>
                                    <span class="name">{who}</span>
                                    <span class="preview">{marked(&hit.message.body, query)}</span>
                                </a>
                            </li>
                        }
                    })
                    .collect_view()}
            </ul>
        }
        .into_any(),
        Err(error) => view! { <LoadError what="The search failed." error /> }.into_any(),
    };
    view! {
        <section class="in-dm-results" aria-label="Search results">
            {body}
            <a href=close class="close-search">"Close search"</a>
        </section>
    }
}

/// `text` with the words of `query` marked.
fn marked(text: &str, query: &str) -> impl IntoView + use<> {
    highlight(text, query)
        .into_iter()
        .map(|(text, matched)| {
            if matched {
                view! { <mark>{text}</mark> }.into_any()
            } else {
                text.into_any()
            }
        })
        .collect_view()
}

fn result_row(hit: SearchHit, find: &str) -> impl IntoView {
    let SearchHit {
        message,
        other_user,
    } = hit;
    let href = format!("/chat/{}?at={}", other_user.id, message.seq);
    let pieces = marked(&message.body, find);
    view! {
        <li>
            <a href=href>
                <Avatar user=other_user.clone() />
                <span class="name">{other_user.display_name()}</span>
                <span class="preview">{pieces}</span>
            </a>
        </li>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_words_are_marked_in_any_case_and_nothing_else() {
        assert_eq!(
            highlight("The Flat, flatmate and FLAT.", "flat"),
            vec![
                ("The ".to_owned(), false),
                ("Flat".to_owned(), true),
                (", flatmate and ".to_owned(), false),
                ("FLAT".to_owned(), true),
                (".".to_owned(), false),
            ]
        );
        assert_eq!(
            highlight("Größe zählt", "\"GRÖSSE\" or zählt"),
            vec![("Größe ".to_owned(), false), ("zählt".to_owned(), true)]
        );
        assert_eq!(
            highlight("nothing", "else"),
            vec![("nothing".to_owned(), false)]
        );
    }
}
