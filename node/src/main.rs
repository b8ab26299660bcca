//! The `causeway` binary: `serve` runs a node, `cluster` a local cluster, `bench` loads one, and
//! `get`, `put`, `delete`, `list`, `status`, `backup`, `restore` and `admin` talk to a running one.

use causeway::cli::ClientCommand;
use causeway::server::config::{SeedEnv, ServeArgs};
use causeway::server::launcher::{ChildLogs, ClusterArgs};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// glibc malloc showed up as ~10% of request handling in profiles; mimalloc is cheaper per call.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Log filter when neither `--log` nor `RUST_LOG` is given.
const DEFAULT_LOG: &str = "info,fjall=warn,lsm_tree=warn";

#[derive(Parser, Debug)]
#[command(
    name = "causeway",
    version,
    about = "A replicated, sharded, causally consistent key-value store"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax; RUST_LOG overrides it) [default: info,fjall=warn,lsm_tree=warn; cluster nodes: warn]
    #[arg(long, env = "CAUSEWAY_LOG", global = true)]
    log: Option<String>,
    /// Log line format on stderr
    #[arg(long, env = "CAUSEWAY_LOG_FORMAT", value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// human-readable lines (coloured only when stderr is a terminal)
    Text,
    /// one JSON object per line
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (with no flags: a single-node dev store on 127.0.0.1:8080, data in ./causeway-data)
    Serve(Box<ServeArgs>),
    /// Run a local cluster of N nodes on loopback until Ctrl-C (generates a CA, node certificates and an admin token under its data directory)
    Cluster(ClusterArgs),
    /// Generate a development CA (once) and node certificates for a list of addresses
    Certs(causeway::server::certs::CertsArgs),
    /// Manage the bearer tokens of a tokens file: add (prints the token once), list, remove
    Tokens(causeway::server::auth::TokensArgs),
    /// Load a cluster (or etcd, or the bare HTTP ceiling) and report throughput and latencies
    Bench(causeway::cli::bench::BenchArgs),
    /// Write N keys straight into a stopped node's data directory, indexed like API writes (for benchmarks)
    BulkLoad(causeway::server::bulk_load::BulkLoadArgs),
    /// Serve the HTTP ceiling for benchmarks: an axum handler that answers 200 and does nothing
    #[command(hide = true)]
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:9990")]
        listen: String,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

fn init_logs(filter: Option<&str>, format: Option<LogFormat>) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter.unwrap_or(DEFAULT_LOG)))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format.unwrap_or(LogFormat::Text) {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().init(),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log.as_deref(), cli.log_format)?;
    causeway::server::tls::install_provider();
    causeway::server::fail_stop::install();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let settings = args.resolve(SeedEnv::from_env()?)?;
                causeway::server::serve(settings).await
            }
            Command::Cluster(args) => {
                let logs = ChildLogs {
                    filter: cli.log,
                    format: cli.log_format.map(|f| {
                        f.to_possible_value()
                            .map_or_else(String::new, |v| v.get_name().to_owned())
                    }),
                };
                causeway::server::launcher::run(args, logs).await
            }
            Command::Bench(args) => causeway::cli::bench::run(args).await.map(drop),
            Command::Certs(args) => causeway::server::certs::run(&args),
            Command::BulkLoad(args) => causeway::server::bulk_load::run(&args),
            Command::Tokens(args) => causeway::server::auth::run(&args),
            Command::Ceiling { listen } => causeway::cli::bench::serve_ceiling(&listen).await,
            Command::Client(cmd) => causeway::cli::run(cmd).await,
        }
    })
}
