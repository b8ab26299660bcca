//! The `causeway` binary: `serve` runs a node, `cluster` a local cluster, `bench` loads one, and
//! `get`, `put`, `delete`, `list`, `status` talk to a running one.

use causeway::server::cli::{ClientCommand, ClientOpts, ClusterArgs};
use causeway::server::config::{SeedEnv, ServeArgs};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// glibc malloc showed up as ~10% of request handling in profiles; mimalloc is cheaper per call.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "causeway",
    version,
    about = "A replicated, sharded, causally consistent key-value store"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it
    #[arg(
        long,
        env = "CAUSEWAY_LOG",
        default_value = "info,fjall=warn,lsm_tree=warn",
        global = true
    )]
    log: String,
    #[command(flatten)]
    client: ClientOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node (with no flags: a single-node dev store on 127.0.0.1:8080, data in ./causeway-data)
    Serve(ServeArgs),
    /// Run a local cluster of N nodes on loopback until Ctrl-C
    Cluster(ClusterArgs),
    /// Load a cluster (or etcd, or the bare HTTP ceiling) and report throughput and latencies
    Bench(causeway::bench::BenchArgs),
    /// Serve the HTTP ceiling for benchmarks: an axum handler that answers 200 and does nothing
    #[command(hide = true)]
    Ceiling {
        #[arg(long, default_value = "127.0.0.1:9990")]
        listen: String,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(&cli.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let settings = args.resolve(SeedEnv::from_env()?)?;
                causeway::server::serve(settings).await
            }
            Command::Cluster(args) => causeway::server::cli::cluster(args).await,
            Command::Bench(args) => causeway::bench::run(args).await.map(drop),
            Command::Ceiling { listen } => causeway::bench::serve_ceiling(&listen).await,
            Command::Client(cmd) => causeway::server::cli::run(&cli.client, cmd).await,
        }
    })
}
