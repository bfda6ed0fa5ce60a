//! `pushrelay-bench`: a load tool speaking plain NIP-01, so that it can drive any relay URL (ours, nostr-rs-relay,
//! rnostr, strfry) in the same way. Events are generated and signed before the clock starts.
//!
//! ```sh
//! cargo run --release --bin pushrelay-bench -- ingest --url ws://127.0.0.1:7777 --events 50000 --pid $(pgrep pushrelay)
//! cargo run --release --bin pushrelay-bench -- req --url ws://127.0.0.1:7777 --populate 100000
//! cargo run --release --bin pushrelay-bench -- fanout --url ws://127.0.0.1:7777 --subscribers 500
//! cargo run --release --bin pushrelay-bench -- idle --url ws://127.0.0.1:7777 --connections 10000 --pid ...
//! cargo run --release --bin pushrelay-bench -- push --url ws://127.0.0.1:7777 --apns-listen 127.0.0.1:7800
//! cargo run --release --bin pushrelay-bench -- verify --events 20000
//! cargo run --release --bin pushrelay-bench -- doors --url ws://127.0.0.1:7777 --seconds 10 --pid ...
//! ```
//! `--json` prints one JSON object instead of the table. With `--pid`, the relay's CPU time (and, for `idle`, its
//! memory) is read from /proc, so that rates can be given per relay CPU-second.

mod client;
mod doors;
mod events;
mod marmot;
mod push;
mod registrations;
mod report;
mod scenarios;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Load scenarios for Nostr relays")]
struct Cli {
    /// The relay to drive.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:7777")]
    url: String,
    /// The relay's process id, to read its CPU time and memory from /proc.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// One JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Connections publishing pre-signed events as fast as OKs come back.
    Ingest {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// EVENTs each connection keeps in flight.
        #[arg(long, default_value_t = 64)]
        window: usize,
    },
    /// A populated database, then mixed REQs (author+kind with limit, by tag, by ids), each timed to EOSE.
    Req {
        /// Events published first (skip with 0 when the database is already populated by an earlier run).
        #[arg(long, default_value_t = 20_000)]
        populate: usize,
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// NIP-50 searches instead of the usual mix: `rare` (a word one note holds, with a word all hold) or
        /// `common` (a word every note holds: the index ranks all of them).
        #[arg(long)]
        search: Option<String>,
    },
    /// Many connections with live subscriptions; a publisher at a steady rate; delivery latency.
    Fanout {
        #[arg(long, default_value_t = 200)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: usize,
        #[arg(long, default_value_t = 10)]
        seconds: usize,
    },
    /// Offline devices registered, then direct messages to them at a steady rate; publish-to-APNs latency, through
    /// an APNs stand-in the relay must be pointed at (ours only: `[push.apns] endpoint`).
    Push {
        /// Where the APNs stand-in listens (HTTP/2 without TLS).
        #[arg(long, default_value = "127.0.0.1:7800")]
        apns_listen: String,
        #[arg(long, default_value_t = 1_000)]
        devices: usize,
        #[arg(long, default_value_t = 5_000)]
        events: usize,
        #[arg(long, default_value_t = 1_000)]
        rate: usize,
    },
    /// The ceiling of ingest: events (id and signature) this machine's cores verify per second, no relay involved.
    Verify {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
    },
    /// A flood at each door a stranger reaches (search, NIP-9a, the test button, NIP-97), one at a time, and a
    /// bystander's time to OK and to EOSE meanwhile (ours only; `scripts/doors` starts a relay with its defaults).
    Doors {
        /// Seconds each door is flooded.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// One door only: search, nip9a, test, nip97 or marmot.
        #[arg(long)]
        door: Option<String>,
    },
    /// Marmot push triggers at a steady rate, each of `--tokens` APNs tokens; publish-to-wake latency through an
    /// APNs stand-in the relay must be pointed at, relay CPU per trigger, and the floor (ours only: scripts/marmot).
    Marmot {
        #[arg(long, default_value = "127.0.0.1:7800")]
        apns_listen: String,
        #[arg(long, default_value_t = 1_000)]
        triggers: usize,
        /// Tokens in each trigger, 1 to 32.
        #[arg(long, default_value_t = 1)]
        tokens: usize,
        #[arg(long, default_value_t = 100)]
        rate: usize,
    },
    /// Offline devices registered (kind 22456, a fresh pubkey each), and what each costs the relay in memory and
    /// CPU (needs --pid; ours only: scripts/scale).
    Registrations {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// `small` (one #p, one #e) or `0xchat` (200 authors, 64 #p, 20 #e, six kinds).
        #[arg(long, default_value = "small")]
        shape: String,
    },
    /// Offline devices watching one public channel through #e, then one message to it: every push timed at an
    /// APNs stand-in the relay must be pointed at (ours only: scripts/scale with SHAPES=group).
    Group {
        #[arg(long, default_value = "127.0.0.1:7800")]
        apns_listen: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Other nodes on the same database sharing the fan-out: their CPU is counted with --pid's.
        #[arg(long)]
        also_pid: Vec<u32>,
    },
    /// Idle connections, and what each costs the relay in memory (needs --pid).
    Idle {
        #[arg(long, default_value_t = 1_000)]
        connections: usize,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let outcome = match cli.scenario {
        Scenario::Ingest { events, connections, window } => {
            scenarios::ingest(&cli.url, cli.pid, events, connections, window).await
        }
        Scenario::Req { populate, requests, connections, search } => {
            scenarios::req(&cli.url, cli.pid, populate, requests, connections, search.as_deref()).await
        }
        Scenario::Fanout { subscribers, rate, seconds } => {
            scenarios::fanout(&cli.url, cli.pid, subscribers, rate, seconds).await
        }
        Scenario::Push { apns_listen, devices, events, rate } => {
            push::push(&cli.url, cli.pid, &apns_listen, devices, events, rate).await
        }
        Scenario::Verify { events } => scenarios::verify(events),
        Scenario::Doors { seconds, door } => doors::doors(&cli.url, cli.pid, seconds, door.as_deref()).await,
        Scenario::Marmot { apns_listen, triggers, tokens, rate } => {
            marmot::marmot(&cli.url, cli.pid, &apns_listen, triggers, tokens, rate).await
        }
        Scenario::Registrations { count, shape } => {
            registrations::registrations(&cli.url, cli.pid, count, &shape).await
        }
        Scenario::Group { apns_listen, count, also_pid } => {
            registrations::group(&cli.url, cli.pid, &also_pid, &apns_listen, count).await
        }
        Scenario::Idle { connections } => scenarios::idle(&cli.url, cli.pid, connections).await,
    };
    match outcome {
        Ok(report) => report.print(cli.json),
        Err(e) => {
            eprintln!("pushrelay-bench: {e}");
            std::process::exit(1);
        }
    }
}
