//! `fjord`: run a node or a local dev cluster, manage topics, produce and consume.
//!
//! # Layout
//! - `serve`: one node (`fjord_server::run`) until SIGINT/SIGTERM.
//! - `dev`: a local cluster of `fjord serve` child processes.
//! - `topic`, `produce`, `consume`, `cluster`: client commands over `fjord_client`.
//! - `security`: `fjord user` and `fjord acl`.
//! - `bench`: load generators and measurements (`fjord bench produce|consume|e2e`).
//! - `output`: text or JSON-lines output, and the JSON shapes.
//! - `signals`: waiting for SIGINT/SIGTERM.
//!
//! Exit codes: 0 on success (and when standard output is closed early, as by `| head`),
//! 1 on an error (the message, with the server's reason, goes to standard error), 2 on a
//! usage error.

mod bench;
mod cluster;
mod consume;
mod dev;
mod group;
mod health;
mod output;
mod produce;
mod records;
mod security;
mod serve;
mod signals;
mod time_arg;
mod topic;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use fjord_client::{Client, ClientConfig};
use tracing_subscriber::EnvFilter;

use crate::output::{Format, Output};

const DEFAULT_BROKERS: &str = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

#[derive(Debug, Parser)]
#[command(
    name = "fjord",
    version,
    about = "fjord: a Raft-replicated event log",
    after_help = "Start a local 3-node cluster with `fjord dev`, then in another terminal:\n  \
        fjord topic create demo --partitions 3 --replication 3\n  \
        echo hello | fjord produce demo\n  \
        fjord consume demo --from-beginning --count 1"
)]
struct Cli {
    /// Nodes to contact, HOST:PORT separated by commas; any reachable subset of the
    /// cluster will do.
    #[arg(
        long,
        global = true,
        env = "FJORD_BROKERS",
        value_delimiter = ',',
        default_value = DEFAULT_BROKERS,
        value_name = "HOST:PORT,...",
        display_order = 900
    )]
    brokers: Vec<String>,

    /// A bearer token (from `fjord user create`), sent with every request.
    #[arg(
        long,
        global = true,
        env = "FJORD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        display_order = 902
    )]
    token: Option<String>,

    /// Output format: text, or json (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, display_order = 901)]
    format: Format,

    /// Log format on standard error: text, or json (one JSON object per line, for log
    /// shippers: timestamp, level, target, fields, span).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "FJORD_LOG_FORMAT",
        default_value_t = LogFormat::Text,
        display_order = 902
    )]
    log_format: LogFormat,
    #[command(flatten)]
    tls: TlsArgs,

    #[command(subcommand)]
    command: Command,
}

/// TLS to the nodes (client commands): with a CA, every broker address is dialed with TLS
/// (`https://`).
#[derive(Debug, clap::Args)]
struct TlsArgs {
    /// CA bundle (PEM) that verifies the nodes' certificates; turns TLS on.
    #[arg(
        long,
        global = true,
        env = "FJORD_TLS_CA",
        value_name = "PEM",
        display_order = 902
    )]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM), for nodes that ask for one (`--tls-client-auth`).
    #[arg(
        long,
        global = true,
        env = "FJORD_TLS_CERT",
        value_name = "PEM",
        display_order = 903
    )]
    tls_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        env = "FJORD_TLS_KEY",
        value_name = "PEM",
        display_order = 904
    )]
    tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The client's TLS settings; `None` without a CA.
    fn load(&self) -> anyhow::Result<Option<fjord_client::ClientTls>> {
        match &self.tls_ca {
            Some(ca) => Ok(Some(fjord_client::ClientTls::from_files(
                ca,
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
            )?)),
            None if self.tls_cert.is_some() || self.tls_key.is_some() => {
                anyhow::bail!("--tls-cert and --tls-key need --tls-ca (FJORD_TLS_CA)")
            }
            None => Ok(None),
        }
    }
}

// Parsed once per process: the node's settings (Serve) being the largest costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a cluster until SIGINT or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Run a local cluster of N nodes (separate processes) until Ctrl-C.
    Dev(dev::DevArgs),
    /// Create, list, describe or delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Write one record per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print records of a topic as they arrive.
    Consume(consume::ConsumeArgs),
    /// List, describe, reset or delete consumer groups.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Show the state of the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Create, list or delete users (bearer-token identities).
    #[command(subcommand)]
    User(security::UserCommand),
    /// Add, list or remove ACL entries.
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// Ask each node in --brokers whether it serves (grpc.health.v1.Health); exits 0 only if
    /// every one answers SERVING: for probes and scripts.
    Health(health::HealthArgs),
    /// Measure throughput and latency of a running cluster.
    #[command(subcommand, after_help = bench::AFTER_HELP)]
    Bench(bench::BenchCommand),
}

/// How logs are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Logs go to standard error. Nodes log at `info` by default; client commands only show
/// errors, so their standard error stays readable. `RUST_LOG` overrides both.
fn init_tracing(default_directive: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_directive));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a terminal: `fjord dev` sends node logs to files.
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

/// The client settings every command shares: the token and the TLS files.
fn client_config(token: Option<String>, tls: &TlsArgs) -> anyhow::Result<ClientConfig> {
    Ok(ClientConfig {
        token: token.map(fjord_client::Token),
        tls: tls.load()?,
        ..ClientConfig::default()
    })
}

fn client(brokers: Vec<String>, token: Option<String>, tls: &TlsArgs) -> anyhow::Result<Client> {
    Ok(Client::connect(brokers, client_config(token, tls)?)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { format: cli.format };
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Dev(args) => dev::run(args, out, cli.tls.load()?).await,
        Command::Topic(cmd) => {
            topic::run(client(cli.brokers, cli.token, &cli.tls)?, out, cmd).await
        }
        Command::Produce(args) => {
            produce::run(client(cli.brokers, cli.token, &cli.tls)?, out, args).await
        }
        Command::Consume(args) => {
            consume::run(client(cli.brokers, cli.token, &cli.tls)?, out, args).await
        }
        Command::Group(cmd) => {
            group::run(client(cli.brokers, cli.token, &cli.tls)?, out, cmd).await
        }
        Command::Cluster(cmd) => {
            cluster::run(client(cli.brokers, cli.token, &cli.tls)?, out, cmd).await
        }
        Command::User(cmd) => {
            security::run_user(client(cli.brokers, cli.token, &cli.tls)?, out, cmd).await
        }
        Command::Acl(cmd) => {
            security::run_acl(client(cli.brokers, cli.token, &cli.tls)?, out, cmd).await
        }
        Command::Health(args) => {
            let config = client_config(cli.token, &cli.tls)?;
            health::run(cli.brokers, config, out, args).await
        }
        Command::Bench(cmd) => {
            bench::run(cli.brokers, client_config(cli.token, &cli.tls)?, out, cmd).await
        }
    }
}

/// Whether the error is only that standard output was closed (`fjord consume | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether the error is that no node could be reached at all.
fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<fjord_client::ClientError>(),
            Some(fjord_client::ClientError::Transport { .. })
        )
    })
}

/// The command line, with `fjord serve`'s environment variables and `--config` file applied
/// (see `serve`: a flag beats its `FJORD_*` variable, which beats the file).
fn parse_cli(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = serve::with_env(Cli::command());
    let args = serve::with_config_file(&command, args)?;
    let matches = command.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
}

fn main() -> ExitCode {
    let cli = parse_cli(std::env::args_os().collect()).unwrap_or_else(|e| e.exit());
    init_tracing(
        match cli.command {
            Command::Serve(_) | Command::Dev(_) => "info",
            _ => "error",
        },
        cli.log_format,
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command
        && let Some(n) = args.node.as_ref().and_then(|c| c.worker_threads)
    {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks (producer partitions, consumer pollers) must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_unreachable(&e) {
                eprintln!(
                    "hint: is the cluster running? `fjord dev` starts a local one; --brokers or \
                     FJORD_BROKERS say where it is"
                );
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        serve::with_env(Cli::command()).debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_cli(
            std::iter::once("fjord")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect(),
        )
    }

    #[test]
    fn log_format_is_text_unless_json_is_asked_for() {
        if std::env::var_os("FJORD_LOG_FORMAT").is_none() {
            assert_eq!(
                parse(&["cluster", "status"]).unwrap().log_format,
                LogFormat::Text
            );
        }
        let cli = parse(&["--log-format", "json", "cluster", "status"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(parse(&["--log-format", "xml", "cluster", "status"]).is_err());
    }

    #[test]
    fn brokers_default_and_split_on_commas() {
        // FJORD_BROKERS may be set where the tests run; only check it when it is not.
        if std::env::var_os("FJORD_BROKERS").is_none() {
            let cli = parse(&["cluster", "status"]).unwrap();
            assert_eq!(
                cli.brokers,
                ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
            );
        }
        let cli = parse(&["topic", "list", "--brokers", "a:1,b:2", "--format", "json"]).unwrap();
        assert_eq!(cli.brokers, ["a:1", "b:2"]);
        assert_eq!(cli.format, Format::Json);
    }

    fn serve_config(args: &[&str]) -> Result<fjord_server::ServeConfig, clap::Error> {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        let Command::Serve(serve) = parse(&full)?.command else {
            panic!("not serve")
        };
        Ok(serve.node.expect("settings given"))
    }

    /// A config file in a directory of its own, removed with the returned guard.
    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fjord.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path.display().to_string())
    }

    #[test]
    fn a_file_s_list_of_superusers_keeps_names_with_commas_whole() {
        let (_dir, path) = config_file(
            "id = 1\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"d\"\n\
             peers = \"1=127.0.0.1:7201\"\ntls_peer_names = [\"a.example\", \"b.example\"]\n\
             superusers = [\"User:admin\", \"User:CN=ops,O=acme\"]\n",
        );
        let node = serve_config(&["--config", &path]).unwrap();
        assert_eq!(node.superusers, ["User:admin", "User:CN=ops,O=acme"]);
        assert_eq!(node.tls_peer_names, ["a.example", "b.example"]);
    }

    #[test]
    fn serve_takes_flags_a_file_or_both_and_flags_win() {
        let node = serve_config(&[
            "--id",
            "1",
            "--listen",
            "127.0.0.1:7101",
            "--data-dir",
            "d",
            "--peers",
            "1=127.0.0.1:7201",
        ])
        .unwrap();
        assert_eq!(node.id, 1);

        let (_dir, path) = config_file(
            "id = 1\nlisten = \"0.0.0.0:7101\"\ndata_dir = \"/var/lib/fjord\"\n\
             rebuild = true\ndefault_retention_ms = -1\n\
             [peers]\n1 = \"a:7101\"\n2 = \"b:7101\"\n",
        );
        let node = serve_config(&["--config", &path]).unwrap();
        assert_eq!((node.id, node.listen.port()), (1, 7101));
        assert_eq!(node.peers.0.len(), 2);
        assert!(node.rebuild);
        assert_eq!(node.default_retention_ms, -1);
        // A flag beats the file; keys the flag does not name stay the file's.
        let node = serve_config(&[
            "--config",
            &path,
            "--id",
            "2",
            "--election-timeout-ms",
            "900",
        ])
        .unwrap();
        assert_eq!((node.id, node.election_timeout_ms), (2, 900));
        assert_eq!(node.data_dir, std::path::PathBuf::from("/var/lib/fjord"));

        // The TLS flags of `serve` are the node's, not the client commands' (global) ones.
        let cli = parse(&[
            "serve",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:7101",
            "--data-dir",
            "d",
            "--peers",
            "1=127.0.0.1:7201",
            "--tls-cert",
            "n.pem",
            "--tls-key",
            "n.key",
            "--tls-ca",
            "ca.pem",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let node = args.node.expect("flags given");
        assert_eq!(
            node.tls_cert.as_deref(),
            Some(std::path::Path::new("n.pem"))
        );
        assert!(node.tls_settings().unwrap().is_some());
        let cli = parse(&["--tls-ca", "ca.pem", "cluster", "status"]).unwrap();
        assert_eq!(
            cli.tls.tls_ca.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );

        let e = parse(&["serve", "--id", "1"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        // Neither a file nor flags: clap lists the flags and shows both usages.
        let e = parse(&["serve"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        // A file that leaves a required setting out, when no flag gives it.
        let (_dir, partial) = config_file("id = 1\nlisten = \"0.0.0.0:7101\"\n");
        let e = parse(&["serve", "--config", &partial]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let node = serve_config(&["--config", &partial, "--data-dir", "d", "--peers", "1=a:1"]);
        assert_eq!(node.unwrap().id, 1);
    }

    #[test]
    fn a_node_s_file_may_set_its_log_format_and_no_client_flag() {
        let base = "id = 1\nlisten = \"0.0.0.0:1\"\ndata_dir = \"d\"\npeers = \"1=a:1\"\n";
        let (_dir, path) = config_file(&format!("{base}log_format = \"json\"\n"));
        let cli = parse(&["serve", "--config", &path]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        // The flag beats the file.
        let cli = parse(&["--log-format", "text", "serve", "--config", &path]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Text);
        let (_dir, path) = config_file(&format!("{base}brokers = \"a:1\"\n"));
        let e = parse(&["serve", "--config", &path]).unwrap_err();
        assert!(e.to_string().contains("unknown key \"brokers\""), "{e}");
    }

    #[test]
    fn serve_refuses_a_file_it_cannot_use() {
        for (text, says) in [
            ("id = 1\nnot_a_flag = 3\n", "unknown key \"not_a_flag\""),
            ("config = \"other.toml\"\n", "unknown key \"config\""),
            ("rebuild = 1\n", "rebuild must be true or false"),
            ("id = [[1]]\n", "nested array"),
            ("id = \n", "config file"),
        ] {
            let (_dir, path) = config_file(text);
            let e = parse(&["serve", "--config", &path]).unwrap_err();
            assert!(e.to_string().contains(says), "{text:?}: {e}");
        }
        let e = parse(&["serve", "--config", "/nonexistent/fjord.toml"]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/fjord.toml"), "{e}");
        // A value of the wrong type is refused by the flag's own parser.
        let (_dir, path) = config_file(
            "id = \"one\"\nlisten = \"0.0.0.0:1\"\ndata_dir = \"d\"\npeers = \"1=a:1\"\n",
        );
        let e = parse(&["serve", "--config", &path]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{e}");
    }

    /// The deploy/ example files read through the flags give what the server's own TOML
    /// reader gives.
    #[test]
    fn a_config_file_reads_as_the_server_reads_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        for n in 1..=3 {
            let path = dir.join(format!("node{n}.toml"));
            let by_flags = serve_config(&["--config", path.to_str().unwrap()]).unwrap();
            let by_serde = fjord_server::ServeConfig::from_toml_file(&path).unwrap();
            assert_eq!(
                format!("{by_flags:?}"),
                format!("{by_serde:?}"),
                "node{n}.toml"
            );
        }
    }

    #[test]
    fn every_serve_flag_has_its_environment_variable() {
        assert_eq!(serve::env_name("data-dir"), "FJORD_DATA_DIR");
        let command = serve::with_env(Cli::command());
        let serve = command.find_subcommand("serve").unwrap();
        let mut seen = 0;
        for arg in serve.get_arguments() {
            let long = arg.get_long().expect("serve flags are long");
            let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
            assert_eq!(env, serve::env_name(long), "--{long}");
            seen += 1;
        }
        assert!(seen >= 20, "only {seen} serve flags");
        // The client commands' flags are left alone.
        let produce = command.find_subcommand("produce").unwrap();
        assert!(produce.get_arguments().all(|a| a.get_env().is_none()));
    }

    #[test]
    fn consume_start_flags_conflict() {
        assert!(parse(&["consume", "t", "--from-beginning", "--offset", "3"]).is_err());
        assert!(parse(&["consume", "t", "--count", "0"]).is_err());
        let cli = parse(&["consume", "t", "--offset", "3", "--read", "ap"]).unwrap();
        let Command::Consume(args) = cli.command else {
            panic!("not consume")
        };
        assert_eq!(args.offset, Some(3));
        assert_eq!(args.read, consume::ReadArg::Ap);
    }

    #[test]
    fn dev_bounds_its_node_count() {
        assert!(parse(&["dev", "--nodes", "0"]).is_err());
        assert!(parse(&["dev", "--nodes", "10"]).is_err());
        let cli = parse(&["dev"]).unwrap();
        let Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        assert_eq!((args.nodes, args.base_port), (3, 7101));
    }

    #[test]
    fn bench_flags_are_checked_and_defaults_fit_the_client() {
        let cli = parse(&["bench", "produce"]).unwrap();
        let Command::Bench(bench::BenchCommand::Produce {
            run,
            produce,
            one_at_a_time,
            ..
        }) = cli.command
        else {
            panic!("not bench produce")
        };
        assert_eq!(
            (run.records, produce.in_flight, produce.producers),
            (100_000, 5, 1)
        );
        assert!(!one_at_a_time);
        let bad: &[&[&str]] = &[
            &["bench", "produce", "--in-flight", "6"],
            &["bench", "produce", "--in-flight", "0"],
            &["bench", "produce", "--records", "0"],
            &["bench", "produce", "--producers", "0"],
            &["bench", "produce", "--record-size", "-1"],
            &["bench", "produce", "--batch-max-bytes", "0"],
            &["bench", "produce", "--linger-ms", "60001"],
            &["bench", "produce", "--keys", "0"],
            &["bench", "produce", "--keys", "3", "--partition", "1"],
            &["bench", "produce", "--acks", "all"],
            &["bench", "produce", "--duration-max-secs", "0"],
            &["bench", "produce", "--partitions", "0"],
            &["bench", "consume", "--one-at-a-time"],
            &["bench", "consume", "--read", "quorum"],
            &["bench", "e2e", "--one-at-a-time"],
            &["bench", "scan"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        let cli = parse(&[
            "bench", "e2e", "--keys", "10", "--read", "ap", "--acks", "ap", "--format", "json",
        ])
        .unwrap();
        assert_eq!(cli.format, Format::Json);
        assert!(matches!(
            cli.command,
            Command::Bench(bench::BenchCommand::EndToEnd { .. })
        ));
    }

    #[test]
    fn bench_group_modes_check_their_flags() {
        let bad: &[&[&str]] = &[
            &["bench", "group-consume", "--members", "0"],
            &["bench", "group-consume", "--members", "101"],
            &["bench", "group-consume", "--one-at-a-time"],
            &["bench", "group-rebalance", "--members", "1"],
            &["bench", "group-rebalance", "--repeats", "0"],
            &["bench", "group-rebalance", "--repeats", "101"],
            &["bench", "group-rebalance", "--partitions", "0"],
            &["bench", "group-rebalance", "--max-wait-ms", "30001"],
            &["bench", "group-rebalance", "--max-wait-ms", "9"],
            &["bench", "group-idle"],
            &["bench", "group-idle", "--pids", "x"],
            &["bench", "group-idle", "--pids", "1", "--groups", "0"],
            &["bench", "group-idle", "--pids", "1", "--groups", "100001"],
            &["bench", "group-idle", "--pids", "1", "--concurrency", "0"],
            &["bench", "group-idle", "--pids", "1", "--duration-secs", "0"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
        let cli = parse(&["bench", "group-consume"]).unwrap();
        let Command::Bench(bench::BenchCommand::GroupConsume {
            members,
            group,
            include_join,
            ..
        }) = cli.command
        else {
            panic!("not bench group-consume")
        };
        assert_eq!((members, group, include_join), (3, None, false));
        let cli = parse(&["bench", "group-rebalance"]).unwrap();
        let Command::Bench(bench::BenchCommand::GroupRebalance(r)) = cli.command else {
            panic!("not bench group-rebalance")
        };
        assert_eq!((r.partitions, r.members, r.repeats), (100, 10, 5));
        let cli = parse(&["bench", "group-idle", "--pids", "11,12,13"]).unwrap();
        let Command::Bench(bench::BenchCommand::GroupIdle(i)) = cli.command else {
            panic!("not bench group-idle")
        };
        assert_eq!((i.groups, i.duration_secs), (10_000, 60));
        assert_eq!(i.pids, vec![11, 12, 13]);
    }

    #[test]
    fn dev_passes_flags_after_a_double_dash_to_its_nodes() {
        let cli = parse(&["dev", "--", "--group-heartbeat-interval-ms", "500"]).unwrap();
        let Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        assert_eq!(
            args.serve_args,
            vec!["--group-heartbeat-interval-ms".to_string(), "500".into()]
        );
        let Command::Dev(args) = parse(&["dev"]).unwrap().command else {
            panic!("not dev")
        };
        assert!(args.serve_args.is_empty());
    }

    #[test]
    fn acl_flags_parse_and_bad_values_are_refused() {
        let cli = parse(&[
            "acl",
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "write",
            "--resource-type",
            "topic",
            "--resource",
            "a",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.token.as_deref(), Some("t"));
        assert!(matches!(
            cli.command,
            Command::Acl(security::AclCommand::Add(_))
        ));
        assert!(
            parse(&[
                "acl",
                "add",
                "--principal",
                "User:a",
                "--operation",
                "everything",
                "--resource-type",
                "topic",
                "--resource",
                "a",
            ])
            .is_err()
        );
        assert!(parse(&["user", "create", "alice"]).is_ok());
        assert!(parse(&["acl", "list", "--format", "json"]).is_ok());
        assert!(
            parse(&[
                "acl",
                "add",
                "--principal",
                "User:a",
                "--operation",
                "write",
                "--resource-type",
                "producer",
                "--resource",
                "app-",
                "--pattern",
                "prefixed",
            ])
            .is_ok()
        );
    }

    #[test]
    fn broken_pipes_are_recognised_through_context() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        let e = anyhow::Error::new(io).context("printing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
