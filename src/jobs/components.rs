//! `/admin/jobs`: the operator's runs page. It lists runs newest first,
//! filtered by status, with each run's steps and last error, and a
//! **Retry** button on failed runs; it reloads the list every
//! [`REFRESH`] while the tab is visible. Anyone who is not an operator
//! gets the 404 page.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use time::OffsetDateTime;

use super::{ADMIN_JOBS_PATH, JobRun, RetryJob, list_jobs};
use crate::{components::load_error::LoadError, error::AppError};

/// How often the page reloads the runs while visible.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// The status filters offered: (query value, label).
const FILTERS: [(&str, &str); 4] = [
    ("", "All"),
    ("failed", "Failed"),
    ("pending", "Pending"),
    ("done", "Done"),
];

/// `2026-12-03 10:53:49 UTC`.
fn when(at: OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// The runs page.
#[component]
pub fn JobsPage() -> impl IntoView {
    let query = use_query_map();
    let status = Memo::new(move |_| query.read().get("status").unwrap_or_default());
    let retry = ServerAction::<RetryJob>::new();
    let tick = RwSignal::new(0u64);
    #[cfg(feature = "hydrate")]
    if let Ok(ticker) = set_interval_with_handle(
        move || {
            let visible = web_sys::window()
                .and_then(|w| w.document())
                .is_none_or(|d| d.visibility_state() == web_sys::VisibilityState::Visible);
            if visible {
                tick.try_update(|t| *t += 1);
            }
        },
        REFRESH,
    ) {
        on_cleanup(move || ticker.clear());
    }
    let runs = Resource::new(
        move || (status.get(), tick.get(), retry.version().get()),
        |(status, _, _)| async move { list_jobs((!status.is_empty()).then_some(status), None).await },
    );
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
            {move || Suspend::new(async move {
                match runs.await {
                    Err(AppError::NotFound) => view! { <crate::app::NotFound /> }.into_any(),
                    Err(error) => {
                        view! { <LoadError what="The runs could not be loaded." error /> }
                            .into_any()
                    }
                    Ok(list) => view! { <Runs runs=list status=status.get_untracked() retry /> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// The filters and the table of runs.
#[component]
fn Runs(runs: Vec<JobRun>, status: String, retry: ServerAction<RetryJob>) -> impl IntoView {
    let failed = retry.value().get_untracked().and_then(Result::err);
    view! {
        <Title text="Background jobs" />
        <section class="jobs" aria-labelledby="jobs-title">
            <h1 id="jobs-title">"Background jobs"</h1>
            <nav aria-label="Filter runs" class="job-filters">
                {FILTERS
                    .into_iter()
                    .map(|(value, label)| {
                        let href = if value.is_empty() {
                            ADMIN_JOBS_PATH.to_owned()
                        } else {
                            format!("{ADMIN_JOBS_PATH}?status={value}")
                        };
                        let current = (status == value).then_some("page");
                        view! {
                            <a href=href aria-current=current>
                                {label}
                            </a>
                        }
                    })
                    .collect_view()}
            </nav>
            {failed
                .map(|error| {
                    view! {
                        <p class="form-error" role="alert">
                            "Retry failed: "
                            {error.to_string()}
                        </p>
                    }
                })}
            {if runs.is_empty() {
                view! { <p class="muted">"No runs."</p> }.into_any()
            } else {
                view! {
                    <table class="job-runs">
                        <thead>
                            <tr>
                                <th scope="col">"Run"</th>
                                <th scope="col">"Enqueued"</th>
                                <th scope="col">"Kind"</th>
                                <th scope="col">"Subject"</th>
                                <th scope="col">"Status"</th>
                                <th scope="col">"Attempts"</th>
                                <th scope="col">"Next attempt"</th>
                                <th scope="col">"Steps"</th>
                                <th scope="col">"Last error"</th>
                                <th scope="col">
                                    <span class="visually-hidden">"Actions"</span>
                                </th>
                            </tr>
                        </thead>
                        <tbody>
                            {runs
                                .into_iter()
                                .map(|run| view! { <RunRow run status=status.clone() retry /> })
                                .collect_view()}
                        </tbody>
                    </table>
                }
                    .into_any()
            }}
        </section>
    }
}

/// One run.
#[component]
fn RunRow(run: JobRun, status: String, retry: ServerAction<RetryJob>) -> impl IntoView {
    let subject = match &run.username {
        Some(username) => view! {
            "@"
            {username.clone()}
            <br />
            <span class="muted">{run.subject.clone()}</span>
        }
        .into_any(),
        None => run.subject.clone().into_any(),
    };
    let steps = run
        .steps
        .iter()
        .map(|step| {
            view! {
                <li>
                    <strong>{step.name.clone()}</strong>
                    ": "
                    {step.outcome.clone()}
                </li>
            }
        })
        .collect_view();
    let label = format!("Retry run {}", run.id);
    view! {
        <tr data-run=run.id data-status=run.status.as_str()>
            <td>{run.id}</td>
            <td>{when(run.created_at)}</td>
            <td>{run.kind.label()}</td>
            <td class="job-subject">{subject}</td>
            <td>
                <span class=format!("job-status job-{}", run.status.as_str())>
                    {run.status.as_str()}
                </span>
            </td>
            <td>{format!("{} of {}", run.attempts, run.max_attempts)}</td>
            <td>{run.next_attempt_at.map(when)}</td>
            <td>
                <ul class="job-steps">{steps}</ul>
            </td>
            <td class="job-error">{run.last_error.clone()}</td>
            <td>
                {run.status.can_retry()
                    .then(|| {
                        view! {
                            <ActionForm action=retry>
                                <input type="hidden" name="id" value=run.id />
                                <input type="hidden" name="status" value=status.clone() />
                                <button type="submit" aria-label=label.clone()>
                                    "Retry"
                                </button>
                            </ActionForm>
                        }
                    })}
            </td>
        </tr>
    }
}
