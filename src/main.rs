use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pushrelay::clock::Clock;
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
    /// Print what the database holds: events, waiting pushes, devices, pubkeys online and offline.
    Stats,
    /// Print registered devices per platform, or one pubkey's registrations (tokens shortened).
    Devices {
        /// A pubkey, hex or npub.
        #[arg(long)]
        pubkey: Option<String>,
    },
    /// Write every stored event to standard output as JSON Lines (`pushrelay export > events.jsonl`).
    Export,
    /// Give free space back to the file system and refresh the query planner's statistics.
    Vacuum,
    /// Store the events of a JSON Lines file (`-` for standard input): verified, de-duplicated, replaceable rules
    /// applied; never pushed. The relay may be running.
    Import { file: PathBuf },
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
    match cli.command {
        Some(Command::Keys) => return print_keys(&config),
        Some(Command::Import { file }) => return import(&config, &file).await,
        Some(Command::Devices { pubkey }) => {
            let config = &config;
            return with_store(config, |store| async move {
                pushrelay::admin::inspect::devices(config, store, pubkey.as_deref()).await
            })
            .await;
        }
        Some(Command::Stats) => {
            let config = &config;
            return with_store(config, |store| async move { pushrelay::admin::inspect::stats(config, store).await })
                .await;
        }
        Some(Command::Export) => {
            return with_store(&config, |store| async move {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let written = pushrelay::admin::export::export(&*store, &mut out).await?;
                std::io::Write::flush(&mut out).map_err(|e| format!("cannot write: {e}"))?;
                eprintln!("{written} events exported");
                Ok(String::new())
            })
            .await;
        }
        Some(Command::Vacuum) => {
            return with_store(&config, |store| async move {
                store.vacuum().await.map_err(|e| e.to_string())?;
                Ok("vacuumed\n".to_owned())
            })
            .await;
        }
        Some(Command::Run) | None => {}
    }
    let relay = match RelayHandle::start(config).await {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("pushrelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    serve_until_stopped(&relay, &cli.config).await;
    tracing::info!("shutting down");
    relay.shutdown().await;
    ExitCode::SUCCESS
}

/// Until SIGINT or SIGTERM; SIGHUP reloads the configuration file (a broken file is refused and logged).
async fn serve_until_stopped(relay: &RelayHandle, config_path: &Path) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut hangup = signal(SignalKind::hangup()).expect("can install a SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = terminate.recv() => return,
            _ = hangup.recv() => match Config::load(config_path) {
                Ok(config) => relay.reload(config),
                Err(e) => tracing::error!("configuration not reloaded: {e}"),
            },
        }
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

async fn import(config: &Config, file: &Path) -> ExitCode {
    let store = match pushrelay::store::open(&config.database, &config.database.node(), Clock::system()).await {
        Ok((store, _)) => store,
        Err(e) => {
            eprintln!("pushrelay: cannot open the database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (input, size): (Box<dyn BufRead>, Option<u64>) = if file == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        match std::fs::File::open(file) {
            Ok(opened) => {
                let size = opened.metadata().ok().map(|m| m.len());
                (Box::new(BufReader::new(opened)), size)
            }
            Err(e) => {
                eprintln!("pushrelay: cannot open {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
    };
    // Drawn on standard error, and only when it is a terminal.
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner(),
    };
    let imported = pushrelay::admin::import::import(&*store, input, |bytes| bar.inc(bytes)).await;
    bar.finish_and_clear();
    store.close().await;
    match imported {
        Ok(summary) => {
            for refusal in &summary.refusals {
                eprintln!("refused: {refusal}");
            }
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pushrelay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an admin command on the store, then closes it.
async fn with_store<F, Fut>(config: &Config, command: F) -> ExitCode
where
    F: FnOnce(std::sync::Arc<dyn pushrelay::store::Store>) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let store = match pushrelay::store::open(&config.database, &config.database.node(), Clock::system()).await {
        Ok((store, _)) => store,
        Err(e) => {
            eprintln!("pushrelay: cannot open the database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = command(store.clone()).await;
    store.close().await;
    report(outcome)
}

/// Prints a command's text, or its error.
fn report(outcome: Result<String, String>) -> ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pushrelay: {e}");
            ExitCode::FAILURE
        }
    }
}
