//! Prometheus metrics: one process-wide recorder (the `metrics` crate's facade, rendered by its Prometheus exporter)
//! and the names of what the relay records. Counters and histograms are recorded where things happen; gauges that
//! describe state (subscriptions, registrations, presence, upstream connections) are set when `/metrics` is read.

use std::sync::OnceLock;

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
}

/// The verb of a protocol message as sent (`["EVENT",...` gives `EVENT`), for the message counters.
pub fn verb_of(message: &str) -> &'static str {
    const VERBS: [&str; 9] = ["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "AUTH", "COUNT", "NEG-MSG", "NEG-ERR"];
    let verb = message.get(2..).and_then(|rest| rest.split('"').next()).unwrap_or("");
    VERBS.into_iter().find(|known| *known == verb).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert_eq!(verb_of(r#"["EVENT","s",{}]"#), "EVENT");
        assert_eq!(verb_of(r#"["OK","id",true,""]"#), "OK");
        assert_eq!(verb_of("x"), "other");
    }
}
