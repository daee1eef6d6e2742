//! Command-line interface.

mod args;
mod commands;
mod init;
mod progress;
mod status;
mod tap;

pub use args::{Cli, Command, LogFormat, PostgresArgs, TapFormat};
use clap::Parser;
use rivven_engine::registry::Registry;
use std::process::ExitCode;

fn init_logging(verbose: u8, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // object_store reports each retry of a request at info; its failures reach us as
    // errors, so by default only its warnings show.
    let default = match verbose {
        0 => "info,object_store=warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Log lines print above `run`'s progress bars when a terminal shows them.
        .with_writer(|| progress::LogWriter)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Parse the command line and run it with `registry`.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(commands::dispatch(cli, registry))
}
