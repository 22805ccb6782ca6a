//! `fjord serve`: runs one node until SIGINT or SIGTERM.
//!
//! # Where settings come from
//! Each setting is taken from the first of: its flag (`--data-dir`), its environment variable
//! (`FJORD_DATA_DIR`: `FJORD_` and the flag in upper snake case), the `--config FILE` (key
//! `data_dir`), the built-in default. The environment variables are given to every flag of
//! `serve` by [`with_env`], so a flag added later has one too; `--config` itself may come
//! from `FJORD_CONFIG`. The file is applied by [`with_config_file`]: its settings become
//! flags for the keys that neither the command line nor the environment sets, so one parser
//! (clap's) reads all three sources.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::parser::ValueSource;
use fjord_server::ServeConfig;

use crate::signals::shutdown_signal;

const MISSING: &str = "give --id, --listen, --data-dir and --peers, as flags, FJORD_* \
    environment variables or keys of --config FILE";

/// What every environment variable of `fjord serve` starts with.
pub const ENV_PREFIX: &str = "FJORD_";

/// Settings come from flags, `FJORD_*` environment variables and `--config FILE`, in that
/// order of precedence.
#[derive(Debug, clap::Args)]
#[command(override_usage = "fjord serve --config FILE [OPTIONS]\n       \
    fjord serve --id N --listen ADDR --data-dir DIR --peers ID=HOST:PORT,... [OPTIONS]")]
#[command(
    after_help = "Example (node 1 of 3; clients on 7101, the other nodes on 7201):\n  \
    fjord serve --id 1 --listen 127.0.0.1:7101 --data-dir /var/lib/fjord \\\n    \
    --peers 1=127.0.0.1:7201,2=127.0.0.1:7202,3=127.0.0.1:7203\n\n\
    Every flag can also come from an environment variable, FJORD_ and the flag in upper snake\n\
    case (--data-dir: FJORD_DATA_DIR), or from a key of the --config file, the flag with\n\
    underscores (data_dir). A flag beats its environment variable, which beats the file.\n\n\
    Logs go to standard error; set RUST_LOG (default: info) to change the level."
)]
pub struct ServeArgs {
    /// Read settings from this TOML file (keys as the flags, with underscores: id, listen,
    /// data_dir, peers, ...); flags and FJORD_* environment variables override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub node: Option<ServeConfig>,
}

impl ServeArgs {
    /// The node's settings, checked.
    pub fn resolve(self) -> anyhow::Result<ServeConfig> {
        let config = self.node.context(MISSING)?;
        config.validate()?;
        Ok(config)
    }
}

/// The environment variable of a `fjord serve` flag: `data-dir` → `FJORD_DATA_DIR`.
pub fn env_name(long: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        long.replace('-', "_").to_ascii_uppercase()
    )
}

/// Gives every long flag of the `serve` subcommand its environment variable ([`env_name`]),
/// unless it names one itself. Clap reads a flag's environment variable only when the flag is
/// not on the command line.
pub fn with_env(cli: clap::Command) -> clap::Command {
    cli.mut_subcommand("serve", |serve| {
        serve.mut_args(|arg| match arg.get_long() {
            Some(long) if arg.get_env().is_none() => {
                // Clap keeps `'static` names (its `string` feature is off): one short string
                // per flag, once per process.
                let name: &'static str = Box::leak(env_name(long).into_boxed_str());
                arg.env(name)
            }
            _ => arg,
        })
    })
}

/// The one global flag a config file may set for a node.
const NODE_GLOBAL_FLAG: &str = "log-format";

/// The command line with the settings of `serve --config FILE` (or `FJORD_CONFIG`) added as
/// flags, for the keys that neither a flag nor an environment variable sets. Any other command
/// line comes back unchanged; so does one that does not parse, for clap to report.
pub fn with_config_file(
    cli: &clap::Command,
    mut args: Vec<OsString>,
) -> Result<Vec<OsString>, clap::Error> {
    // A parse that does not insist on the required flags: the file may hold them.
    let relaxed = cli
        .clone()
        .mut_subcommand("serve", |serve| serve.mut_args(|arg| arg.required(false)));
    let Ok(matches) = relaxed.try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some(("serve", given)) = matches.subcommand() else {
        return Ok(args);
    };
    let Some(path) = given.get_one::<PathBuf>("config") else {
        return Ok(args);
    };
    let serve = cli
        .find_subcommand("serve")
        .expect("the command has a serve subcommand");
    let explicit = |id: &str| {
        matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let file_error = |reason: String| {
        clap::Error::raw(
            clap::error::ErrorKind::InvalidValue,
            format!("config file {}: {reason}\n", path.display()),
        )
    };
    let table = read_table(path).map_err(file_error)?;
    // The flags a node takes: its own, and of the global ones the log format (the others,
    // --brokers, --format, --token..., are a client's).
    let flags: Vec<&clap::Arg> = serve
        .get_arguments()
        .chain(
            cli.get_arguments()
                .filter(|a| a.get_long() == Some(NODE_GLOBAL_FLAG)),
        )
        .collect();
    args.extend(file_args(&flags, &table, explicit).map_err(file_error)?);
    Ok(args)
}

fn read_table(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.parse::<toml::Table>().map_err(|e| e.to_string())
}

/// The flags standing for a config file's keys: `--KEY=VALUE` (underscores of the key as
/// dashes) for each key whose flag `explicit` (given its clap id) says is not set otherwise.
/// A table under a key that is not a flag prefixes its keys (`[tls] cert` is `tls_cert`); a
/// table or array as the value of a flag is written as on the command line (`peers`:
/// `1=a:7101,2=b:7101`). Unknown keys are refused, as is `config`.
pub fn file_args(
    serve: &[&clap::Arg],
    table: &toml::Table,
    explicit: impl Fn(&str) -> bool,
) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    add_file_args(serve, "", table, &explicit, &mut out)?;
    Ok(out)
}

fn add_file_args(
    serve: &[&clap::Arg],
    prefix: &str,
    table: &toml::Table,
    explicit: &dyn Fn(&str) -> bool,
    out: &mut Vec<OsString>,
) -> Result<(), String> {
    for (key, value) in table {
        let key = format!("{prefix}{key}");
        let long = key.replace('_', "-");
        let arg = serve
            .iter()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config");
        let Some(arg) = arg else {
            match value {
                toml::Value::Table(inner) => {
                    add_file_args(serve, &format!("{key}_"), inner, explicit, out)?;
                    continue;
                }
                _ => return Err(format!("unknown key {key:?} (not a `fjord serve` flag)")),
            }
        };
        if explicit(arg.get_id().as_str()) {
            continue;
        }
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => out.push(format!("--{long}").into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(format!("{key} must be true or false")),
            }
            continue;
        }
        let delimiter = arg.get_value_delimiter().unwrap_or(',');
        out.push(format!("--{long}={}", flag_value(&key, value, delimiter)?).into());
    }
    Ok(())
}

/// A TOML value as it is written on the command line: an array's items joined by the flag's
/// own delimiter (`;` for `--superusers`, whose names may hold commas), a table's entries as
/// `k=v,k=v`.
fn flag_value(key: &str, value: &toml::Value, delimiter: char) -> Result<String, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        _ => Err(format!(
            "{key}: a nested array or table is not a flag value"
        )),
    };
    match value {
        toml::Value::Array(items) => Ok(items
            .iter()
            .map(scalar)
            .collect::<Result<Vec<_>, _>>()?
            .join(&delimiter.to_string())),
        toml::Value::Table(entries) => Ok(entries
            .iter()
            .map(|(k, v)| Ok(format!("{k}={}", scalar(v)?)))
            .collect::<Result<Vec<_>, String>>()?
            .join(",")),
        v => scalar(v),
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let id = config.id;
    tracing::info!(
        id,
        listen = %config.listen,
        peer_listen = %config.peer_listen_address()?,
        data_dir = %config.data_dir.display(),
        advertise = %config.advertised_address(),
        "starting node"
    );
    fjord_server::run(config, shutdown_signal())
        .await
        .with_context(|| format!("node {id} failed"))?;
    tracing::info!(id, "node stopped");
    Ok(())
}
