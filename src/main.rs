use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pushrelay::{Config, RelayHandle};
use tracing_subscriber::EnvFilter;

/// A Nostr relay with push notifications built in.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file; every key can also be set as PUSHRELAY_SECTION__KEY.
    #[arg(long, default_value = "config.toml")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pushrelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let relay = match RelayHandle::start(config).await {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("pushrelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    relay.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
