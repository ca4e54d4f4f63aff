//! `GET /metrics`: the server's counters in the Prometheus (OpenMetrics)
//! text format, with `prometheus-client`.
//!
//! - `knock_http_requests_total{method, route, status}` and
//!   `knock_http_request_duration_seconds{method, route}` (until the
//!   response head; `route` is the matched route, such as `/chat/{user_id}`,
//!   or `other`);
//! - `knock_event_streams_open`: event streams open on this instance;
//! - `knock_messages_sent_total`: messages this instance stored;
//! - `knock_job_runs{kind, status}`: runs of background jobs in the
//!   database (all instances), read at each scrape.
//!
//! On the main address only operators see it (404 for everyone else, as for
//! `/admin/jobs`); `KNOCK_METRICS_ADDR` serves it to anyone who can reach
//! that address, for a scraper on a private network.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use super::state::AppState;
use crate::{auth::server::CurrentUser, error::AppError};

/// The labels of a request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

/// The labels of a request duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The labels of a count of job runs.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    status: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// The server's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
    job_runs: Family<JobLabels, Gauge>,
    /// Event streams open on this instance.
    pub event_streams_open: Gauge,
    /// Messages stored by this instance (a retried send counts once).
    pub messages_sent: Counter,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("knock");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Durations = Family::new_with_constructor(duration_histogram);
        let job_runs = Family::<JobLabels, Gauge>::default();
        let event_streams_open = Gauge::default();
        let messages_sent = Counter::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by method and route",
            durations.clone(),
        );
        registry.register(
            "event_streams_open",
            "Event streams open on this instance",
            event_streams_open.clone(),
        );
        registry.register(
            "messages_sent",
            "Messages stored by this instance",
            messages_sent.clone(),
        );
        registry.register(
            "job_runs",
            "Runs of background jobs, by kind and status (all instances)",
            job_runs.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            job_runs,
            event_streams_open,
            messages_sent,
        }
    }
}

/// Holds one open event stream in [`Metrics::event_streams_open`] until
/// dropped.
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Counts an event stream as open until the returned guard drops.
    pub fn stream_opened(&self) -> OpenStream {
        self.event_streams_open.inc();
        OpenStream(self.event_streams_open.clone())
    }

    /// The text exposition, with the job runs read from the database now.
    ///
    /// # Errors
    /// The database error.
    pub async fn render(&self, pool: &sqlx::PgPool) -> Result<String, sqlx::Error> {
        let counts = crate::jobs::server::counts(pool).await?;
        self.job_runs.clear();
        for (kind, status, runs) in counts {
            self.job_runs
                .get_or_create(&JobLabels { kind, status })
                .set(runs);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        Ok(text)
    }
}

/// Middleware: counts and times every request by its matched route.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .durations
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn exposition(state: &AppState) -> Response {
    match state.metrics.render(&state.pool).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "could not read the job runs for /metrics");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// `GET /metrics` on the main address: operators only.
///
/// # Errors
/// 404 for anyone who is not an operator, signed in or not.
pub async fn metrics(
    State(state): State<AppState>,
    me: Result<CurrentUser, AppError>,
) -> Result<Response, AppError> {
    let Ok(CurrentUser(me)) = me else {
        return Err(AppError::NotFound);
    };
    if !crate::auth::server::is_operator(&state, me.id).await? {
        return Err(AppError::NotFound);
    }
    Ok(exposition(&state).await)
}

/// `GET /metrics` on `KNOCK_METRICS_ADDR`: anyone who reaches the address.
pub async fn open_metrics(State(state): State<AppState>) -> Response {
    exposition(&state).await
}
