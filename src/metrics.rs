//! Prometheus metrics: one process-wide recorder (the `metrics` crate's facade, rendered by its Prometheus exporter)
//! and the names of what the relay records. Counters and histograms are recorded where things happen; gauges that
//! describe state (subscriptions, registrations, presence, upstream connections) are set when `/metrics` is read.

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "pushrelay_connections";
pub const MESSAGES_IN: &str = "pushrelay_messages_in_total";
pub const MESSAGES_OUT: &str = "pushrelay_messages_out_total";
pub const EVENTS_STORED: &str = "pushrelay_events_stored_total";
pub const REQ_SECONDS: &str = "pushrelay_req_duration_seconds";
pub const WRITER_BATCH: &str = "pushrelay_writer_batch_size";
pub const SUBSCRIPTIONS: &str = "pushrelay_subscriptions";
pub const REGISTRATIONS: &str = "pushrelay_push_registrations";
pub const PUBKEYS: &str = "pushrelay_push_pubkeys";
pub const PUSH_JOBS: &str = "pushrelay_push_jobs_total";
pub const DEAD_TOKENS: &str = "pushrelay_push_dead_tokens_total";
pub const UPSTREAM_CONNECTIONS: &str = "pushrelay_upstream_connections";
pub const JOB_SOURCE_FAILURES: &str = "pushrelay_job_source_failures_total";
pub const UPSTREAM_REFUSED: &str = "pushrelay_upstream_refused_relays";
pub const SLOW_CLIENTS: &str = "pushrelay_slow_clients_total";
pub const WRITER_PANICS: &str = "pushrelay_writer_panics_total";
pub const MARMOT_TRIGGERS: &str = "pushrelay_marmot_triggers_total";
pub const MARMOT_WAKES: &str = "pushrelay_marmot_wakes_total";

// Every label value the code records, by metric. `prime` exports each series at 0 from the start, so that a
// dashboard or a `rate()` alert has a series before the first event; a new label value is added here (the test
// `every_recorded_label_value_is_known` finds the ones recorded in the source and not listed).

/// `MESSAGES_IN{verb}`: what a client sent (`invalid` when it did not parse).
pub const VERBS_IN: [&str; 9] =
    ["EVENT", "AUTH", "REQ", "COUNT", "CLOSE", "NEG-OPEN", "NEG-MSG", "NEG-CLOSE", "invalid"];
/// `MESSAGES_OUT{verb}`: what the relay sends (`verb_of`).
pub const VERBS_OUT: [&str; 10] =
    ["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "AUTH", "COUNT", "NEG-MSG", "NEG-ERR", "other"];
/// `EVENTS_STORED{class}`.
pub const EVENT_CLASSES: [&str; 4] = ["regular", "replaceable", "addressable", "ephemeral"];
/// `PUBKEYS{presence}`.
pub const PRESENCE: [&str; 2] = ["online", "offline"];
/// `UPSTREAM_CONNECTIONS{state}`.
pub const UPSTREAM_STATES: [&str; 3] = ["watching", "connected", "disconnected"];
/// `UPSTREAM_REFUSED{subscription}` (`upstream::parts::Part::name`).
pub const UPSTREAM_SUBSCRIPTIONS: [&str; 2] = ["public", "private"];
/// `SLOW_CLIENTS{reason}`.
pub const SLOW_CLIENT_REASONS: [&str; 2] = ["outbox_full", "send_timeout"];
/// `PUSH_JOBS{service}` and `DEAD_TOKENS{service}`: the push services (`push::device::Device::platform`), and
/// NIP-9a callbacks.
pub const PUSH_SERVICES: [&str; 5] = ["apns", "fcm", "unifiedpush", "webpush", "callback"];
/// `PUSH_JOBS{outcome}` of a job that reached its service, counted with `reason=""`.
pub const PUSH_DELIVERY_OUTCOMES: [&str; 3] = ["sent", "merged", "retried"];
/// `PUSH_JOBS{outcome="dropped",reason}` counted per service.
pub const PUSH_DROP_REASONS: [&str; 2] = ["too_old", "refused"];
/// `PUSH_JOBS{outcome="dropped",reason}` counted before any service is known: (service, reason).
pub const PUSH_UNROUTED_DROPS: [(&str, &str); 4] =
    [("unknown", "unusable_device"), ("any", "queue_full"), ("any", "intake_full"), ("callback", "host_cap")];

/// `MARMOT_TRIGGERS{outcome,reason=""}` (`push::marmot::stats::TriggerOutcome`).
pub const MARMOT_TRIGGER_OUTCOMES: [&str; 6] = ["woken", "no_token", "duplicate", "over_budget", "busy", "failed"];
/// `MARMOT_TRIGGERS{outcome="malformed",reason}` (`push::marmot::trigger::Malformed`).
pub const MARMOT_MALFORMED: [&str; 9] =
    ["wrap", "seal", "seal_signature", "rumor", "kind", "author", "tags", "base64", "size"];
/// `MARMOT_WAKES{platform,outcome}` (`push::marmot::stats::WakeOutcome`).
pub const MARMOT_PLATFORMS: [&str; 2] = ["apns", "fcm"];
pub const MARMOT_WAKE_OUTCOMES: [&str; 4] = ["sent", "rate_limited", "failed", "unconfigured"];

/// The recorder, installed on first use. Every relay in the process (tests start several) records into it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
        let batch_buckets = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(REQ_SECONDS.into()), &buckets)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(WRITER_BATCH.into()),
                    &batch_buckets,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's); then ours renders nothing new.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        prime();
        let _ = MESSAGE_COUNTERS.set(MessageCounters::look_up());
        handle
    })
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "Open WebSocket connections");
    metrics::describe_counter!(MESSAGES_IN, "Client messages received, by verb");
    metrics::describe_counter!(MESSAGES_OUT, "Messages sent to clients, by verb");
    metrics::describe_counter!(EVENTS_STORED, "Events committed, by kind class");
    metrics::describe_histogram!(REQ_SECONDS, "Time from REQ to EOSE");
    metrics::describe_histogram!(WRITER_BATCH, "Events per writer transaction");
    metrics::describe_gauge!(SUBSCRIPTIONS, "Open subscriptions");
    metrics::describe_gauge!(REGISTRATIONS, "Registered push devices");
    metrics::describe_gauge!(PUBKEYS, "Registered pubkeys, by presence");
    metrics::describe_counter!(
        PUSH_JOBS,
        "Push jobs by service, outcome (queued, sent, merged, retried, dropped) and reason (for dropped)"
    );
    metrics::describe_counter!(DEAD_TOKENS, "Devices removed because their service called the token dead");
    metrics::describe_gauge!(UPSTREAM_CONNECTIONS, "Watched relays, by connection state");
    metrics::describe_counter!(JOB_SOURCE_FAILURES, "Events stored without their push jobs: deriving them failed");
    metrics::describe_gauge!(
        UPSTREAM_REFUSED,
        "Watched relays refusing a subscription, by subscription (public, private)"
    );
    metrics::describe_counter!(
        SLOW_CLIENTS,
        "Connections closed for not reading, by reason (outbox_full, send_timeout)"
    );
    metrics::describe_counter!(WRITER_PANICS, "Write batches or commit listeners that panicked (answered error:)");
    metrics::describe_counter!(MARMOT_TRIGGERS, "Marmot push triggers, by outcome and (for malformed) reason");
    metrics::describe_counter!(MARMOT_WAKES, "Marmot wakes, by platform and outcome");
}

/// Registers every metric with each known label set, at 0. Counters and gauges are added 0 (a gauge already moved
/// keeps its value); a histogram only registered renders its buckets, `_sum` and `_count` at 0.
fn prime() {
    for (name, key, values) in [
        (MESSAGES_IN, "verb", &VERBS_IN[..]),
        (MESSAGES_OUT, "verb", &VERBS_OUT[..]),
        (EVENTS_STORED, "class", &EVENT_CLASSES[..]),
        (SLOW_CLIENTS, "reason", &SLOW_CLIENT_REASONS[..]),
        (DEAD_TOKENS, "service", &PUSH_SERVICES[..]),
    ] {
        for &value in values {
            metrics::counter!(name, key => value).increment(0);
        }
    }
    for service in PUSH_SERVICES {
        metrics::counter!(PUSH_JOBS, "service" => service, "outcome" => "queued").increment(0);
        for outcome in PUSH_DELIVERY_OUTCOMES {
            metrics::counter!(PUSH_JOBS, "service" => service, "outcome" => outcome, "reason" => "").increment(0);
        }
        for reason in PUSH_DROP_REASONS {
            metrics::counter!(PUSH_JOBS, "service" => service, "outcome" => "dropped", "reason" => reason).increment(0);
        }
    }
    for (service, reason) in PUSH_UNROUTED_DROPS {
        metrics::counter!(PUSH_JOBS, "service" => service, "outcome" => "dropped", "reason" => reason).increment(0);
    }
    metrics::counter!(JOB_SOURCE_FAILURES).increment(0);
    metrics::counter!(WRITER_PANICS).increment(0);
    for outcome in MARMOT_TRIGGER_OUTCOMES {
        metrics::counter!(MARMOT_TRIGGERS, "outcome" => outcome, "reason" => "").increment(0);
    }
    for reason in MARMOT_MALFORMED {
        metrics::counter!(MARMOT_TRIGGERS, "outcome" => "malformed", "reason" => reason).increment(0);
    }
    for platform in MARMOT_PLATFORMS {
        for outcome in MARMOT_WAKE_OUTCOMES {
            metrics::counter!(MARMOT_WAKES, "platform" => platform, "outcome" => outcome).increment(0);
        }
    }
    for name in [CONNECTIONS, SUBSCRIPTIONS, REGISTRATIONS] {
        metrics::gauge!(name).increment(0.0);
    }
    for presence in PRESENCE {
        metrics::gauge!(PUBKEYS, "presence" => presence).increment(0.0);
    }
    for state in UPSTREAM_STATES {
        metrics::gauge!(UPSTREAM_CONNECTIONS, "state" => state).increment(0.0);
    }
    for subscription in UPSTREAM_SUBSCRIPTIONS {
        metrics::gauge!(UPSTREAM_REFUSED, "subscription" => subscription).increment(0.0);
    }
    for name in [REQ_SECONDS, WRITER_BATCH] {
        // Registering is enough: the exporter renders a registered histogram with every bucket at 0.
        let _registered = metrics::histogram!(name);
    }
}

/// The per-message counters' handles, looked up once the recorder is installed: `metrics::counter!` with a label
/// builds and hashes its key and searches the registry at every call, and these count every message in and out
/// (a live event to each subscriber: BENCHMARKS.md, fan-out).
struct MessageCounters {
    inbound: Vec<Counter>,
    outbound: Vec<Counter>,
    /// `REQ_SECONDS`, recorded once per REQ.
    req_seconds: Histogram,
}

static MESSAGE_COUNTERS: OnceLock<MessageCounters> = OnceLock::new();

impl MessageCounters {
    fn look_up() -> Self {
        Self {
            inbound: VERBS_IN.iter().map(|&verb| metrics::counter!(MESSAGES_IN, "verb" => verb)).collect(),
            outbound: VERBS_OUT.iter().map(|&verb| metrics::counter!(MESSAGES_OUT, "verb" => verb)).collect(),
            req_seconds: metrics::histogram!(REQ_SECONDS),
        }
    }
}

/// Counts a client's message by its verb (one of `VERBS_IN`).
pub fn count_in(verb: &'static str) {
    count(verb, &VERBS_IN, |counters| &counters.inbound, MESSAGES_IN);
}

/// Counts a message sent to a client, by its verb (`verb_of`).
pub fn count_out(message: &str) {
    count(verb_of(message), &VERBS_OUT, |counters| &counters.outbound, MESSAGES_OUT);
}

/// Records how long a REQ took to its EOSE.
pub fn record_req_seconds(seconds: f64) {
    match MESSAGE_COUNTERS.get() {
        Some(cached) => cached.req_seconds.record(seconds),
        None => metrics::histogram!(REQ_SECONDS).record(seconds),
    }
}

fn count(verb: &'static str, verbs: &[&str], of: fn(&MessageCounters) -> &Vec<Counter>, name: &'static str) {
    let cached = MESSAGE_COUNTERS.get().zip(verbs.iter().position(|known| *known == verb));
    match cached {
        Some((counters, at)) => of(counters)[at].increment(1),
        // No recorder of ours (a test that never asked for one): the facade's current recorder, if any.
        None => metrics::counter!(name, "verb" => verb).increment(1),
    }
}

/// The verb of a protocol message as sent (`["EVENT",...` gives `EVENT`), for the message counters.
pub fn verb_of(message: &str) -> &'static str {
    let verb = message.get(2..).and_then(|rest| rest.split('"').next()).unwrap_or("");
    VERBS_OUT.into_iter().find(|known| *known == verb && *known != "other").unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label values written as literals where metrics are recorded (`"reason" => "outbox_full"`, a push dropped
    /// with `Dropped("too_old")`) must be among the known ones, or `prime` would not export them from the start.
    #[test]
    fn every_recorded_label_value_is_known() {
        let drop_reasons: Vec<&str> =
            PUSH_DROP_REASONS.into_iter().chain(PUSH_UNROUTED_DROPS.into_iter().map(|(_, r)| r)).collect();
        let known = |key: &str, value: &str| match key {
            "verb" => VERBS_IN.contains(&value) || VERBS_OUT.contains(&value),
            "class" => EVENT_CLASSES.contains(&value),
            "presence" => PRESENCE.contains(&value),
            "state" => UPSTREAM_STATES.contains(&value),
            "service" => PUSH_SERVICES.contains(&value) || PUSH_UNROUTED_DROPS.iter().any(|(s, _)| *s == value),
            "outcome" => ["queued", "dropped"].contains(&value) || PUSH_DELIVERY_OUTCOMES.contains(&value),
            "reason" => SLOW_CLIENT_REASONS.contains(&value) || drop_reasons.contains(&value),
            _ => true,
        };
        let mut unknown = Vec::new();
        let mut files = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("metrics.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let literal = |rest: &str| rest.strip_prefix('"').and_then(|r| r.split('"').next()).map(str::to_owned);
            for (i, _) in text.match_indices("\" => \"") {
                let key = text[..i].rsplit('"').next().unwrap_or("");
                if let Some(value) = literal(&text[i + 5..])
                    && !known(key, &value)
                {
                    unknown.push(format!("{}: {key}={value}", path.display()));
                }
            }
            for (i, _) in text.match_indices("Dropped(\"") {
                if let Some(value) = literal(&text[i + 8..])
                    && !known("reason", &value)
                {
                    unknown.push(format!("{}: reason={value}", path.display()));
                }
            }
        }
        assert!(unknown.is_empty(), "label values recorded but not listed in src/metrics.rs: {unknown:?}");
    }

    #[test]
    fn verbs() {
        assert_eq!(verb_of(r#"["EVENT","s",{}]"#), "EVENT");
        assert_eq!(verb_of(r#"["OK","id",true,""]"#), "OK");
        assert_eq!(verb_of("x"), "other");
    }
}
