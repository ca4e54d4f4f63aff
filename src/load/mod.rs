//! The load generator behind `knock-load` (see `docs/benchmarks.md`): real
//! chat traffic against a running Knock over HTTP and SSE on loopback.
//!
//! [`run`] creates users through signed Clerk webhooks (Svix's scheme),
//! signs them in with session tokens from the server's dev key, pairs them
//! into ACTIVE DMs through the public endpoints, opens one SSE stream per
//! user, and sends from `senders` concurrent tasks, at a target rate or as
//! fast as they can, until a deadline or a message budget. It then waits for
//! every stream to see the last message of its DM and checks that each
//! stream got each `seq` of its DM exactly once, in order.
//!
//! Latencies are recorded in microseconds in HDR histograms: *send* is
//! request → 2xx; *delivery* is request → the `message` event at the other
//! member's stream.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{auth::server::SessionKeys, messages::Message, realtime::Event};

/// How many setup requests run at once.
const SETUP_CONCURRENCY: usize = 32;
/// How long to wait, after sending stops, for the last deliveries.
const DRAIN: Duration = Duration::from_secs(15);

/// Where the load goes.
pub struct Target {
    /// The server's origin, e.g. `http://127.0.0.1:3000`.
    pub base: String,
    /// The server's dev session key (tokens are minted with it).
    pub keys: Arc<SessionKeys>,
    /// The server's `CLERK_WEBHOOK_SIGNING_SECRET` (`whsec_…`).
    pub webhook_secret: String,
}

/// How much load.
#[derive(Debug, Clone)]
pub struct Config {
    /// Users (made in pairs; an odd last one is dropped).
    pub users: usize,
    /// Concurrent senders, each the member of one DM (round robin).
    pub senders: usize,
    /// Messages per second over all senders; `None`: as fast as they can.
    pub rate: Option<f64>,
    /// How long to send.
    pub duration: Duration,
    /// The most messages to send, whatever the duration.
    pub max_messages: u64,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Messages the server accepted.
    pub sent: u64,
    /// Failed requests while sending.
    pub errors: u64,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Opening one stream for each of the run's new users, 32 at a time
    /// (users coming online at once, as after a restart).
    pub streams_opened: Duration,
    /// Request → 2xx, µs.
    pub send_latency: Histogram<u64>,
    /// Request → `message` event at the other member, µs.
    pub delivery_latency: Histogram<u64>,
    /// `(stream, seq)` deliveries that never came.
    pub lost: u64,
    /// Deliveries that came more than once.
    pub doubled: u64,
    /// Deliveries that came after a higher `seq` of the same DM.
    pub reordered: u64,
}

impl Report {
    /// Accepted messages per second.
    pub fn throughput(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setup request failed.
    #[error("{0}")]
    Setup(String),
}

fn setup(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Setup(format!("{what}: {e}"))
}

/// One load user: Knock's id and a session token.
#[derive(Debug, Clone)]
pub struct LoadUser {
    /// Knock's id.
    pub id: Uuid,
    /// A session token (Bearer).
    pub token: String,
}

/// Users made through the webhook, in ACTIVE DMs: `users[2k]` and
/// `users[2k + 1]` share `dms[k]`.
#[derive(Debug, Clone)]
pub struct Population {
    /// The users.
    pub users: Vec<LoadUser>,
    /// Their DMs.
    pub dms: Vec<Uuid>,
}

/// An HTTP client for load: keeps up to `connections` idle connections.
///
/// # Errors
/// The client cannot be built.
pub fn client(connections: usize) -> Result<reqwest::Client, LoadError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections.max(SETUP_CONCURRENCY))
        .build()
        .map_err(|e| setup("HTTP client", e))
}

/// Makes `users` users (rounded down to pairs) in ACTIVE DMs.
///
/// # Errors
/// [`LoadError::Setup`] when a request fails.
pub async fn populate(
    client: &reqwest::Client,
    target: &Target,
    users: usize,
) -> Result<Population, LoadError> {
    let users = make_users(client, target, users - users % 2).await?;
    let dms = pair(client, &target.base, &users).await?;
    Ok(Population { users, dms })
}

/// Opens `count` streams of `user` and sends one message to them from the
/// other member of their DM: the time from the request to each stream's
/// `message` event, µs (the fan-out of one message to many streams).
///
/// # Errors
/// [`LoadError::Setup`] when a stream or the send fails.
pub async fn fan_out(
    client: &reqwest::Client,
    target: &Target,
    population: &Population,
    count: usize,
) -> Result<Histogram<u64>, LoadError> {
    let (sender, receiver, dm) = (
        &population.users[0],
        &population.users[1],
        population.dms[0],
    );
    let streams: Vec<EventStream> = stream::iter(0..count)
        .map(|_| EventStream::open(client, &target.base, &receiver.token))
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| setup("streams", e))?;
    // Let the new streams settle (presence, first look at the log).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    let body = json!({ "dm_id": dm, "body": "fan-out", "client_id": Uuid::new_v4() });
    let message = call(client, &target.base, &sender.token, "messages/send", body)
        .await
        .map_err(|e| setup("send", e))?;
    let id: Uuid = message["id"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| setup("send", "no id"))?;
    let mut latency = Histogram::new(3).expect("3 significant figures");
    let deadline = Instant::now() + DRAIN;
    for stream in &streams {
        loop {
            if let Some(at) = stream.arrival(id) {
                let _ = latency.record((at - asked).as_micros() as u64);
                break;
            }
            if Instant::now() > deadline {
                return Err(setup("fan-out", "a stream never got the message"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(latency)
}

/// Posts a Clerk `user.created` event signed as Svix signs it.
async fn deliver_user(
    client: &reqwest::Client,
    target: &Target,
    webhook: &svix::webhooks::Webhook,
    clerk_id: &str,
    username: &str,
) -> Result<(), LoadError> {
    let now = time::OffsetDateTime::now_utc();
    let body = json!({
        "type": "user.created",
        "object": "event",
        "data": {
            "id": clerk_id, "object": "user", "username": username,
            "first_name": "Load", "last_name": username,
            "email_addresses": [], "created_at": now.unix_timestamp() * 1000,
            "updated_at": now.unix_timestamp() * 1000,
        },
    })
    .to_string();
    let msg_id = format!("msg_{}", Uuid::new_v4().simple());
    let signature = webhook
        .sign(&msg_id, now.unix_timestamp(), body.as_bytes())
        .map_err(|e| setup("sign a webhook", e))?;
    let response = client
        .post(format!("{}/api/webhooks/clerk", target.base))
        .header("svix-id", &msg_id)
        .header("svix-timestamp", now.unix_timestamp().to_string())
        .header("svix-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| setup("webhook", e))?;
    if !response.status().is_success() {
        return Err(setup("webhook", response.status()));
    }
    Ok(())
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    endpoint: &str,
    body: Value,
) -> Result<Value, String> {
    let response = client
        .post(format!("{base}/api/{endpoint}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{endpoint}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

/// Makes `count` users through the webhook and signs each in once (their
/// first request creates them if the webhook is not processed yet).
async fn make_users(
    client: &reqwest::Client,
    target: &Target,
    count: usize,
) -> Result<Vec<LoadUser>, LoadError> {
    let webhook = svix::webhooks::Webhook::new(&target.webhook_secret)
        .map_err(|e| setup("webhook secret", e))?;
    let run = &Uuid::new_v4().simple().to_string()[..8];
    stream::iter(0..count)
        .map(|i| {
            let webhook = &webhook;
            async move {
                let clerk_id = format!("user_load{run}{i}");
                deliver_user(client, target, webhook, &clerk_id, &format!("load{run}{i}")).await?;
                let token = target
                    .keys
                    .mint_dev_token(&clerk_id)
                    .ok_or_else(|| setup("tokens", "the server's key cannot sign"))?;
                let session = call(client, &target.base, &token, "session", json!({}))
                    .await
                    .map_err(|e| setup("session", e))?;
                let id = session["user"]["id"]
                    .as_str()
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| setup("session", "no user"))?;
                Ok(LoadUser { id, token })
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Pairs users 2k and 2k+1 into an ACTIVE DM; returns the DM ids.
async fn pair(
    client: &reqwest::Client,
    base: &str,
    users: &[LoadUser],
) -> Result<Vec<Uuid>, LoadError> {
    stream::iter(users.chunks_exact(2))
        .map(|pair| async move {
            let dm = call(
                client,
                base,
                &pair[0].token,
                "dm/invite",
                json!({ "other_user_id": pair[1].id }),
            )
            .await
            .map_err(|e| setup("invite", e))?;
            call(
                client,
                base,
                &pair[1].token,
                "dm/accept",
                json!({ "dm_id": dm["id"] }),
            )
            .await
            .map_err(|e| setup("accept", e))?;
            dm["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| setup("invite", "no DM id"))
        })
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Sends `messages` messages in the first DM of `population`, then asks for
/// the other member's chat page `requests` times, one after another: the
/// time to the whole page, µs (the page is rendered in order, complete).
///
/// # Errors
/// [`LoadError::Setup`] when a request fails.
pub async fn render_chat(
    client: &reqwest::Client,
    target: &Target,
    population: &Population,
    messages: usize,
    requests: usize,
) -> Result<Histogram<u64>, LoadError> {
    let (sender, reader, dm) = (
        &population.users[0],
        &population.users[1],
        population.dms[0],
    );
    for n in 0..messages {
        let body =
            json!({ "dm_id": dm, "body": format!("message {n}"), "client_id": Uuid::new_v4() });
        call(client, &target.base, &sender.token, "messages/send", body)
            .await
            .map_err(|e| setup("send", e))?;
    }
    let url = format!("{}/chat/{}", target.base, sender.id);
    let mut latency = Histogram::new(3).expect("3 significant figures");
    for _ in 0..requests {
        let asked = Instant::now();
        let page = client
            .get(&url)
            .header("cookie", format!("__session={}", reader.token))
            // A page that never completes is an error, not a hang.
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| setup("page", e))?
            .text()
            .await
            .map_err(|e| setup("page", e))?;
        let _ = latency.record(asked.elapsed().as_micros() as u64);
        if !page.contains(&format!("message {}", messages - 1)) {
            return Err(setup("page", "the page lacks the newest message"));
        }
    }
    Ok(latency)
}

/// The words the search benchmark's messages are made of, the most
/// frequent first.
const WORDS: [&str; 64] = [
    "the", "and", "you", "to", "it", "is", "that", "for", "we", "on", "at", "have", "be", "this",
    "with", "are", "do", "not", "can", "what", "will", "so", "but", "just", "get", "about", "time",
    "see", "know", "tomorrow", "lunch", "meeting", "train", "coffee", "tonight", "weekend", "call",
    "later", "dinner", "movie", "office", "flat", "keys", "party", "birthday", "station", "ticket",
    "holiday", "garden", "bike", "rain", "concert", "recipe", "museum", "library", "market",
    "invoice", "dentist", "airport", "bakery", "harbour", "violin", "glacier", "origami",
];

/// The words of the benchmark's `n`th message: 6 to 15 of [`WORDS`], the
/// earlier ones far more often (about a cube law), and in one message of
/// 1,000 the rare word `flowerpot`.
pub fn search_text(n: u64) -> String {
    // A fixed pseudo-random sequence (SplitMix64), the same every run.
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) as f64 / u64::MAX as f64
    };
    let count = 6 + (next() * 10.0) as usize;
    let mut words: Vec<&str> = (0..count)
        .map(|_| WORDS[((next().powi(3)) * WORDS.len() as f64) as usize % WORDS.len()])
        .collect();
    if n % 1000 == 7 {
        words.push("flowerpot");
    }
    words.join(" ")
}

/// The search benchmark's queries: what each one is, and its text.
pub const SEARCHES: [(&str, &str); 5] = [
    ("the most frequent word", "the"),
    ("a word in about one message of ten", "coffee"),
    ("a rare word (one message of 1,000)", "flowerpot"),
    ("two words", "lunch tomorrow"),
    ("a word in no message", "zeppelin"),
];

/// Sends `messages` messages of [`search_text`] in the first DM of
/// `population` (from both members, `concurrency` at a time), then runs
/// each of [`SEARCHES`] `searches` times as its first user, one after
/// another: for each, the results of the last run and the time from the
/// request to the whole answer, µs.
///
/// # Errors
/// [`LoadError::Setup`] when a request fails.
pub async fn search(
    client: &reqwest::Client,
    target: &Target,
    population: &Population,
    messages: u64,
    searches: usize,
) -> Result<Vec<(usize, Histogram<u64>)>, LoadError> {
    let dm = population.dms[0];
    let members = [&population.users[0], &population.users[1]];
    stream::iter(0..messages)
        .map(|n| {
            let sender = members[(n % 2) as usize];
            let body = json!({ "dm_id": dm, "body": search_text(n), "client_id": Uuid::new_v4() });
            call(client, &target.base, &sender.token, "messages/send", body)
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .map(|sent| sent.map(|_| ()).map_err(|e| setup("send", e)))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let mut figures = Vec::new();
    for (_, query) in SEARCHES {
        let mut latency = Histogram::new(3).expect("3 significant figures");
        let mut found = 0;
        for _ in 0..searches {
            let asked = Instant::now();
            let hits = call(
                client,
                &target.base,
                &members[0].token,
                "messages/search",
                json!({ "query": query }),
            )
            .await
            .map_err(|e| setup("search", e))?;
            let _ = latency.record(asked.elapsed().as_micros() as u64);
            found = hits.as_array().map_or(0, Vec::len);
        }
        figures.push((found, latency));
    }
    Ok(figures)
}

/// One `message` event as a stream saw it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    dm: Uuid,
    seq: i64,
    message: Uuid,
    at: Instant,
}

/// An open SSE stream of one user, recording `message` events.
pub struct EventStream {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EventStream {
    /// Opens `/api/events` with `token`; returns once the server answered.
    ///
    /// # Errors
    /// The request failed or was refused.
    pub async fn open(client: &reqwest::Client, base: &str, token: &str) -> Result<Self, String> {
        use eventsource_stream::Eventsource;
        let response = client
            .get(format!("{base}/api/events"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("events: {}", response.status()));
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = response.bytes_stream().eventsource();
            while let Some(Ok(event)) = events.next().await {
                let at = Instant::now();
                if let Ok(Event::Message(Message {
                    dm_id,
                    id: message_id,
                    seq,
                    ..
                })) = Event::decode(&event.event, &event.data)
                {
                    record.lock().unwrap_or_else(|e| e.into_inner()).push(Seen {
                        dm: dm_id.0,
                        seq,
                        message: message_id.0,
                        at,
                    });
                }
            }
        });
        Ok(Self { seen, task })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// When the stream first saw message `id`, if it did.
    pub fn arrival(&self, id: Uuid) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|s| s.message == id)
            .map(|s| s.at)
    }
}

/// What the senders share.
struct Sending {
    deadline: Instant,
    budget: u64,
    started: AtomicU64,
    errors: AtomicU64,
    /// Message id → (request start, answer time, sending user's index),
    /// and the highest seq per DM.
    sent: Mutex<(HashMap<Uuid, SentMessage>, HashMap<Uuid, i64>)>,
}

/// (request start, answer time, sending user's index).
type SentMessage = (Instant, Instant, usize);

/// Runs the load of `config` against `target`.
///
/// # Errors
/// [`LoadError::Setup`] when users, DMs or streams cannot be made.
pub async fn run(target: &Target, config: &Config) -> Result<Report, LoadError> {
    let client = client(config.senders)?;
    let Population { users, dms } = populate(&client, target, config.users).await?;
    if users.is_empty() {
        return Err(setup("users", "at least two are needed"));
    }
    let opening = Instant::now();
    let streams: Vec<EventStream> = stream::iter(&users)
        .map(|u| EventStream::open(&client, &target.base, &u.token))
        .buffered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| setup("streams", e))?;
    let streams_opened = opening.elapsed();

    let start = Instant::now();
    let shared = Arc::new(Sending {
        deadline: start + config.duration,
        budget: config.max_messages,
        started: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        sent: Mutex::new((HashMap::new(), HashMap::new())),
    });
    let per_sender = config
        .rate
        .map(|rate| Duration::from_secs_f64(config.senders as f64 / rate.max(0.001)));
    let senders = (0..config.senders).map(|k| {
        let (client, shared, base) = (client.clone(), shared.clone(), target.base.clone());
        let sender = k % users.len();
        let user = users[sender].clone();
        let dm = dms[(k % users.len()) / 2];
        tokio::spawn(async move {
            let mut next = Instant::now();
            let mut n = 0u64;
            while Instant::now() < shared.deadline
                && shared.started.fetch_add(1, Ordering::Relaxed) < shared.budget
            {
                if let Some(every) = per_sender {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                }
                n += 1;
                let body = json!({ "dm_id": dm, "body": format!("load {k} {n}"), "client_id": Uuid::new_v4() });
                let asked = Instant::now();
                match call(&client, &base, &user.token, "messages/send", body).await {
                    Ok(message) => {
                        let answered = Instant::now();
                        let id = message["id"].as_str().and_then(|v| v.parse().ok());
                        let seq = message["seq"].as_i64();
                        if let (Some(id), Some(seq)) = (id, seq) {
                            let mut sent = shared.sent.lock().unwrap_or_else(|e| e.into_inner());
                            sent.0.insert(id, (asked, answered, sender));
                            let top = sent.1.entry(dm).or_insert(0);
                            *top = (*top).max(seq);
                        }
                    }
                    Err(error) => {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "send failed");
                    }
                }
            }
        })
    });
    futures::future::join_all(senders).await;
    let elapsed = start.elapsed();
    let (sent, top) = {
        let sent = shared.sent.lock().unwrap_or_else(|e| e.into_inner());
        (sent.0.clone(), sent.1.clone())
    };

    // Each stream must see every seq of its DM up to the top.
    let dm_of = |i: usize| dms[i / 2];
    let drained = Instant::now() + DRAIN;
    while Instant::now() < drained {
        let done = streams.iter().enumerate().all(|(i, s)| {
            let want = top.get(&dm_of(i)).copied().unwrap_or(0);
            want == 0 || s.seen().iter().any(|e| e.dm == dm_of(i) && e.seq == want)
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut report = Report {
        sent: sent.len() as u64,
        errors: shared.errors.load(Ordering::Relaxed),
        elapsed,
        streams_opened,
        send_latency: Histogram::new(3).expect("3 significant figures"),
        delivery_latency: Histogram::new(3).expect("3 significant figures"),
        lost: 0,
        doubled: 0,
        reordered: 0,
    };
    for (asked, answered, _) in sent.values() {
        let _ = report
            .send_latency
            .record((*answered - *asked).as_micros() as u64);
    }
    for (i, stream) in streams.iter().enumerate() {
        let dm = dm_of(i);
        let seen: Vec<Seen> = stream.seen().into_iter().filter(|e| e.dm == dm).collect();
        let mut highest = 0;
        let mut count: HashMap<i64, u64> = HashMap::new();
        for event in &seen {
            if event.seq < highest {
                report.reordered += 1;
            }
            highest = highest.max(event.seq);
            *count.entry(event.seq).or_default() += 1;
        }
        let want = top.get(&dm).copied().unwrap_or(0);
        report.lost += (1..=want).filter(|seq| !count.contains_key(seq)).count() as u64;
        report.doubled += count.values().map(|n| n - 1).sum::<u64>();
        // Delivery to the other member: a message this stream's user did
        // not send (the sender's own stream hears it too, not counted).
        for event in &seen {
            if let Some((asked, _, sender)) = sent.get(&event.message)
                && *sender != i
            {
                let _ = report
                    .delivery_latency
                    .record((event.at - *asked).as_micros() as u64);
            }
        }
    }
    Ok(report)
}
