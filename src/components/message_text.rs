//! A message's text as the page shows it: `http://` and `https://` URLs
//! become links (found by the `linkify` crate), everything else stays text,
//! which Leptos escapes. No HTML is ever made from message text.

use leptos::prelude::*;

/// One piece of a message's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'a> {
    /// Plain text.
    Text(&'a str),
    /// An `http://` or `https://` URL.
    Link(&'a str),
}

/// Splits `text` into plain text and web links, in order. URLs of other
/// schemes (`javascript:`, `ftp:`, …) and bare domains stay text.
pub fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut finder = linkify::LinkFinder::new();
    finder.kinds(&[linkify::LinkKind::Url]);
    finder
        .spans(text)
        .map(|span| {
            let s = span.as_str();
            let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
            let web = lower.starts_with("http://") || lower.starts_with("https://");
            match span.kind() {
                Some(linkify::LinkKind::Url) if web => Segment::Link(s),
                _ => Segment::Text(s),
            }
        })
        .collect()
}

/// `text` with its web links as `<a>` elements that open in a new tab
/// without giving it this page (`rel="noopener noreferrer"`).
pub fn message_text(text: &str) -> impl IntoView + use<> {
    segments(text)
        .into_iter()
        .map(|segment| match segment {
            Segment::Text(text) => text.to_owned().into_any(),
            Segment::Link(url) => view! {
                <a href=url.to_owned() target="_blank" rel="noopener noreferrer">
                    {url.to_owned()}
                </a>
            }
            .into_any(),
        })
        .collect::<Vec<_>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_links_are_found_and_the_rest_stays_text() {
        assert_eq!(
            segments("see https://example.com/a?b=1, then <b>http://x.test</b>."),
            vec![
                Segment::Text("see "),
                Segment::Link("https://example.com/a?b=1"),
                Segment::Text(", then <b>"),
                Segment::Link("http://x.test"),
                Segment::Text("</b>."),
            ]
        );
    }

    #[test]
    fn other_schemes_and_bare_domains_are_not_links() {
        for text in [
            "javascript://alert(1)",
            "ftp://files.test/x",
            "example.com",
            "mailto:a@b.test",
        ] {
            assert!(
                segments(text).iter().all(|s| matches!(s, Segment::Text(_))),
                "{text}"
            );
        }
        assert_eq!(segments(""), vec![]);
    }
}
