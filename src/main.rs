use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushrelay::{Config, RelayHandle};
use tracing_subscriber::EnvFilter;

/// A Nostr relay with push notifications built in.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file; every key can also be set as PUSHRELAY_SECTION__KEY.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the relay (what runs when no command is given).
    Run,
    /// Print the relay's push pubkey (hex and npub), creating the key file if it is missing.
    Keys,
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
    if let Some(Command::Keys) = cli.command {
        return print_keys(&config);
    }
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

fn print_keys(config: &Config) -> ExitCode {
    match pushrelay::push::keys::load_or_create(&config.push.secret_key_file) {
        Ok(keys) => {
            let pubkey = keys.public_key();
            println!("hex:  {}", pubkey.to_hex());
            println!(
                "npub: {}",
                nostr::nips::nip19::ToBech32::to_bech32(&pubkey).expect("a public key always encodes")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pushrelay: {e}");
            ExitCode::FAILURE
        }
    }
}
