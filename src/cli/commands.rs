//! The subcommands.

use super::{Cli, Command};
use rivven_engine::config::{self, LoadedConfig};
use rivven_engine::registry::{Category, Registry};
use rivven_engine::runtime::Runtime;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Exit code of an invalid configuration.
const EXIT_CONFIG: u8 = 2;

pub async fn dispatch(cli: Cli, registry: Registry) -> ExitCode {
    match cli.command {
        Command::Init => {
            print!("{}", super::init::EXAMPLE);
            ExitCode::SUCCESS
        }
        Command::Check => check(&cli.config, &registry).await,
        Command::Run => run(&cli.config, &registry).await,
        Command::Spec { connector } => spec(connector.as_deref(), &registry),
        Command::Discover { source, json } => discover(&cli.config, &source, json, &registry).await,
        Command::Status { url, json } => super::status::status(&cli.config, url, json).await,
    }
}

/// Load and validate, printing every error.
fn load(path: &std::path::Path, registry: &Registry) -> Result<LoadedConfig, ExitCode> {
    let loaded = config::load(path).map_err(|errs| {
        eprintln!("{errs}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    loaded.validate_connectors(registry).map_err(|errs| {
        eprintln!("{errs}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok(loaded)
}

async fn check(path: &std::path::Path, registry: &Registry) -> ExitCode {
    let loaded = match load(path, registry) {
        Ok(l) => l,
        Err(code) => return code,
    };
    println!("{}: configuration valid", loaded.file);
    let mut failed = 0;
    let mut report = |what: String, r: Result<String, rivven_engine::Error>| match r {
        Ok(detail) => println!("  ok      {what}: {detail}"),
        Err(e) => {
            failed += 1;
            println!("  FAILED  {what}: {e}");
        }
    };
    let state_dir = loaded.state_dir();
    let probe = state_dir.join(".rivven-check");
    let state = std::fs::create_dir_all(&state_dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe))
        .map(|_| format!("embedded topic log in {} is writable", state_dir.display()))
        .map_err(|e| rivven_engine::Error::io("settings.state_dir", e));
    report("topics".into(), state);
    for (name, s) in &loaded.config.sources {
        if !s.enabled {
            println!("  skip    source {name} ({}): disabled", s.connector);
            continue;
        }
        if let Some(f) = registry.source(&s.connector) {
            report(
                format!("source {name} ({})", s.connector),
                f.check(&s.config).await,
            );
        }
    }
    for (name, s) in &loaded.config.sinks {
        if !s.enabled {
            println!("  skip    sink {name} ({}): disabled", s.connector);
            continue;
        }
        if let Some(f) = registry.sink(&s.connector) {
            report(
                format!("sink {name} ({})", s.connector),
                f.check(&s.config).await,
            );
        }
    }
    if failed > 0 {
        println!("{failed} check(s) failed");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn bind(
    key: &str,
    ep: &rivven_engine::config::EndpointSettings,
) -> Result<tokio::net::TcpListener, String> {
    let addr = format!("{}:{}", ep.host, ep.port);
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("settings.{key}: cannot listen on {addr}: {e}"))
}

async fn run(path: &std::path::Path, registry: &Registry) -> ExitCode {
    let loaded = match load(path, registry) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let runtime = match Runtime::new(&loaded, registry) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = &loaded.config.settings;
    let shutdown = runtime.shutdown_token();
    let status = runtime.status();
    // Health and metrics on their ports; one server when they share an address.
    let mut endpoints = Vec::new();
    if settings.health.enabled {
        endpoints.push(("health", &settings.health));
    }
    if settings.metrics.enabled
        && !(settings.health.enabled
            && settings.health.port == settings.metrics.port
            && settings.health.host == settings.metrics.host)
    {
        endpoints.push(("metrics", &settings.metrics));
    }
    for (key, ep) in endpoints {
        match bind(key, ep).await {
            Ok(listener) => {
                tracing::info!(endpoint = key, addr = %format!("{}:{}", ep.host, ep.port), "serving /health, /status, /metrics");
                tokio::spawn(rivven_engine::status::serve(
                    listener,
                    status.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    tokio::spawn(signals(shutdown.clone()));
    match runtime.run().await {
        Ok(report) if report.failed.is_empty() => {
            tracing::info!(stopped = report.stopped, "all pipelines ended");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!("error: pipeline(s) failed: {}", report.failed.join(", "));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// First SIGINT/SIGTERM: graceful drain. Second: exit at once.
async fn signals(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutdown requested: draining (signal again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("second signal: exiting without draining");
    std::process::exit(130);
}

fn spec(connector: Option<&str>, registry: &Registry) -> ExitCode {
    let Some(name) = connector else {
        let mut by_cat: BTreeMap<Category, Vec<(String, &'static str, &'static str, String)>> =
            BTreeMap::new();
        for f in registry.sources() {
            let i = f.info();
            by_cat.entry(i.category).or_default().push((
                i.name.into(),
                "source",
                i.description,
                i.tags.join(", "),
            ));
        }
        for f in registry.sinks() {
            let i = f.info();
            by_cat.entry(i.category).or_default().push((
                i.name.into(),
                "sink",
                i.description,
                i.tags.join(", "),
            ));
        }
        for (cat, mut items) in by_cat {
            println!(
                "{}:",
                serde_json::to_value(cat)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            );
            items.sort();
            for (name, kind, desc, tags) in items {
                println!("  {name:<16} {kind:<7} {desc} [{tags}]");
            }
        }
        return ExitCode::SUCCESS;
    };
    let schema = registry
        .source(name)
        .map(|f| (f.info(), "source", f.config_schema()))
        .or_else(|| {
            registry
                .sink(name)
                .map(|f| (f.info(), "sink", f.config_schema()))
        });
    match schema {
        Some((info, kind, schema)) => {
            let doc = serde_json::json!({
                "connector": info.name,
                "kind": kind,
                "category": info.category,
                "description": info.description,
                "tags": info.tags,
                "config": schema,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        None => {
            let mut names: Vec<&str> = registry.source_names();
            names.extend(registry.sink_names());
            names.sort();
            names.dedup();
            eprintln!(
                "error: unknown connector `{name}`; available: {}",
                names.join(", ")
            );
            ExitCode::FAILURE
        }
    }
}

async fn discover(
    path: &std::path::Path,
    source: &str,
    json: bool,
    registry: &Registry,
) -> ExitCode {
    let loaded = match load(path, registry) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Some(spec) = loaded.config.sources.get(source) else {
        let names: Vec<&String> = loaded.config.sources.keys().collect();
        eprintln!(
            "error: no source `{source}` in {}; sources: {names:?}",
            loaded.file
        );
        return ExitCode::FAILURE;
    };
    let Some(factory) = registry.source(&spec.connector) else {
        return ExitCode::FAILURE;
    };
    match factory.discover(&spec.config).await {
        Ok(streams) if json => {
            let doc: Vec<_> = streams
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "namespace": s.namespace,
                        "fields": s.schema.fields().iter().map(|f| serde_json::json!({
                            "name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable(),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(streams) => {
            for s in streams {
                match &s.namespace {
                    Some(ns) => println!("{ns}.{}", s.name),
                    None => println!("{}", s.name),
                }
                for f in s.schema.fields() {
                    let null = if f.is_nullable() { "" } else { " not null" };
                    println!("  {:<20} {}{null}", f.name(), f.data_type());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
