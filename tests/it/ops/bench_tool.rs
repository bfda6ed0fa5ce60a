//! The load tool runs each scenario end to end on a tiny scale (the figures themselves are in BENCHMARKS.md:
//! benchmarks are not timed tests).

use crate::common::push::push_config;
use crate::common::*;
use serde_json::Value;

async fn bench(relay: &TestRelay, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushrelay-bench"))
        .args(args)
        .args(["--url", &relay.url, "--json", "--pid", &std::process::id().to_string()])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[tokio::test]
async fn every_scenario_runs_on_a_tiny_scale() {
    let relay = TestRelay::start_with(|c| c.limits.max_connections_per_ip = 1000).await;
    let ingest = bench(&relay, &["ingest", "--events", "300", "--connections", "3"]).await;
    assert_eq!((ingest["accepted"].as_u64(), ingest["refused"].as_u64()), (Some(300), Some(0)), "{ingest}");
    assert!(ingest["events_per_relay_cpu-second"].as_f64().unwrap() > 0.0, "{ingest}");
    assert!(ingest["OK_latency_p99"].as_f64().is_some());

    let req = bench(&relay, &["req", "--populate", "300", "--requests", "30", "--connections", "2"]).await;
    assert_eq!(req["requests"], 30);
    assert!(req["events_returned"].as_u64().unwrap() > 0, "{req}");

    let fanout = bench(&relay, &["fanout", "--subscribers", "5", "--rate", "20", "--seconds", "1"]).await;
    assert_eq!(fanout["deliveries"], 100, "{fanout}");

    let idle = bench(&relay, &["idle", "--connections", "50"]).await;
    assert_eq!(idle["connections"], 50);
    assert!(idle["per_connection"].as_f64().is_some(), "{idle}");

    let verify = bench(&relay, &["verify", "--events", "200"]).await;
    assert!(verify["events_per_core-second"].as_f64().unwrap() > 0.0, "{verify}");
}

#[tokio::test]
async fn the_push_scenario_times_pushes_through_its_apns_stand_in() {
    // The stand-in's address must be in the relay's configuration before either starts.
    let apns_listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let relay = TestRelay::start_with(|config| {
        let dir = config.push.secret_key_file.parent().unwrap().to_owned();
        push_config(config, &format!("http://{apns_listen}"), &dir);
        config.push.device_burst = 1000;
    })
    .await;
    let args = ["push", "--apns-listen", &apns_listen, "--devices", "5", "--events", "20", "--rate", "50"];
    let push = bench(&relay, &args).await;
    assert_eq!(push["pushes_arrived"], 20, "{push}");
    assert!(push["publish_to_APNs_p99"].as_f64().unwrap() > 0.0, "{push}");
}
