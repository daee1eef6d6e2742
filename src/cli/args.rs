//! The command line: global options and subcommands.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Arrow-columnar change data capture and data movement.
#[derive(Debug, Parser)]
#[command(name = "rivven-connect", version, about, propagate_version = true)]
pub struct Cli {
    /// Pipeline configuration file.
    #[arg(
        short,
        long,
        global = true,
        env = "RIVVEN_CONFIG",
        default_value = "rivven-connect.yaml"
    )]
    pub config: PathBuf,
    /// More logging: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Arguments of the legacy `postgres` subcommand.
#[derive(Debug, clap::Args)]
pub struct PostgresArgs {
    /// `postgres://user:password@host:port/database` (the password is never printed).
    #[arg(long)]
    pub connection: String,
    /// Replication slot (created when absent).
    #[arg(long, default_value = "rivven_slot")]
    pub slot: String,
    /// Publication (created when absent).
    #[arg(long, default_value = "rivven_pub")]
    pub publication: String,
    /// Topic; default `cdc.<database>`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Tables to capture (`table` or `schema.table`, comma-separated); default: all.
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Snapshot mode (initial, always, never, initial_only, when_needed, no_data).
    #[arg(long, default_value = "initial")]
    pub snapshot_mode: String,
    /// Directory of the embedded topic log and state.
    #[arg(long, default_value = "./rivven-state")]
    pub state_dir: PathBuf,
    /// Also print the change events as JSON lines on standard output.
    #[arg(long)]
    pub print: bool,
    /// External broker: not available in this build (the embedded log is used); giving it
    /// is an error rather than being ignored.
    #[arg(long)]
    pub broker: Option<String>,
}

/// Output of `tap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TapFormat {
    /// A text table per batch.
    Table,
    /// One JSON object per row.
    Json,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a commented example configuration that runs as is on the embedded topic log.
    Init,
    /// Validate the configuration, then test every connector's connectivity.
    Check,
    /// Run every enabled pipeline until they finish or SIGINT/SIGTERM drains them.
    Run,
    /// Show a connector's config JSON Schema, or the catalogue when no name is given.
    Spec {
        /// Connector name.
        #[arg(conflicts_with = "transform")]
        connector: Option<String>,
        /// Show a transform type's config JSON Schema instead (`cdc_features`: a source's
        /// `config.cdc_features` block); without a type, list the transform types.
        #[arg(long, value_name = "TYPE", num_args = 0..=1, default_missing_value = "")]
        transform: Option<String>,
    },
    /// List the streams a configured source produces, with their Arrow schemas.
    Discover {
        /// Source name (a key under `sources:`).
        source: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Legacy mode: PostgreSQL CDC without a config file, into the embedded topic log
    /// (optionally printed as JSON lines).
    Postgres(PostgresArgs),
    /// Print the batches of a topic or of a pipeline stage of a running process, live,
    /// through its Flight endpoint (`settings.flight`).
    Tap {
        /// Topic to read, or a tap of a pipeline stage: `<pipeline>.<stage>` with stage
        /// `source`, `transformed`, `sink` or `dead_letter`.
        target: String,
        /// Start at this offset, or at this time (RFC 3339, e.g. 2026-01-01T00:00:00Z);
        /// default: the end (only what arrives from now on).
        #[arg(long, value_name = "OFFSET|TIME")]
        from: Option<String>,
        /// Output: `table` (a text table per batch) or `json` (one object per row).
        #[arg(long, value_enum, default_value_t = TapFormat::Table)]
        format: TapFormat,
        /// Stop after this many rows.
        #[arg(long)]
        limit: Option<u64>,
        /// Flight endpoint, `http://host:port` or `https://host:port`; default:
        /// settings.flight of the configuration.
        #[arg(long)]
        url: Option<String>,
    },
    /// Show the status of the pipelines of a running process.
    Status {
        /// Status endpoint; default: settings.health of the configuration.
        #[arg(long)]
        url: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}
