//! The subcommands.

use super::args::{Cli, Command, PostgresArgs};
use rivven_engine::config::{self, LoadedConfig};
use rivven_engine::pipelines::Pipelines;
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
        Command::Spec {
            transform: Some(kind),
            ..
        } => spec_transform(&kind, &registry),
        Command::Spec { connector, .. } => spec(connector.as_deref(), &registry),
        Command::Discover { source, json } => discover(&cli.config, &source, json, &registry).await,
        Command::Status { url, json } => super::status::status(&cli.config, url, json).await,
        Command::Tap {
            target,
            from,
            format,
            limit,
            url,
        } => super::tap::tap(&cli.config, &target, from, format, limit, url).await,
        Command::Postgres(args) => legacy_postgres(&args, &registry).await,
    }
}

/// Load the file and resolve every pipeline against the registry (each connector config
/// and transform list parsed once), printing every error.
fn load(
    path: &std::path::Path,
    registry: &Registry,
) -> Result<(LoadedConfig, Pipelines), ExitCode> {
    let loaded = config::load(path).map_err(|errs| {
        eprintln!("{errs}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    resolve(loaded, registry)
}

fn resolve(
    loaded: LoadedConfig,
    registry: &Registry,
) -> Result<(LoadedConfig, Pipelines), ExitCode> {
    let pipelines = Pipelines::resolve(&loaded, registry).map_err(|errs| {
        eprintln!("{errs}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((loaded, pipelines))
}

async fn check(path: &std::path::Path, registry: &Registry) -> ExitCode {
    let (loaded, pipelines) = match load(path, registry) {
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
    for p in &pipelines.sources {
        let (name, connector) = (&p.name, &p.connector_name);
        if !p.enabled {
            println!("  skip    source {name} ({connector}): disabled");
            continue;
        }
        let reached = p.connector.check().await;
        let reached_ok = reached.is_ok();
        report(format!("source {name} ({connector})"), reached);
        let Some(plan) = p.transforms.as_ref().filter(|_| reached_ok) else {
            continue;
        };
        let at = format!("sources.{name}");
        let r = match p.connector.discover().await {
            Err(e) => Err(e),
            Ok(streams) => {
                let errs = plan.check_streams(&streams);
                if errs.is_empty() {
                    Ok(format!(
                        "compile against {} discovered stream(s)",
                        streams.len()
                    ))
                } else {
                    Err(rivven_engine::Error::config(
                        errs.into_iter()
                            .map(|e| loaded.error_at(e.under(&at)).to_string())
                            .collect::<Vec<_>>()
                            .join("\n          "),
                    ))
                }
            }
        };
        report(format!("transforms of source {name}"), r);
    }
    for p in &pipelines.sinks {
        let (name, connector) = (&p.name, &p.connector_name);
        if !p.enabled {
            println!("  skip    sink {name} ({connector}): disabled");
            continue;
        }
        report(
            format!("sink {name} ({connector})"),
            p.connector.check().await,
        );
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
    match load(path, registry) {
        Ok((loaded, pipelines)) => run_loaded(&loaded, &pipelines).await,
        Err(code) => code,
    }
}

/// The parts of a `postgres://user:password@host:port/database` URL.
#[derive(Debug, PartialEq, Eq)]
struct PgUrl {
    user: String,
    password: Option<String>,
    host: String,
    port: u16,
    database: String,
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encoding is not UTF-8".to_string())
}

fn parse_pg_url(url: &str) -> Result<PgUrl, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("--connection must start with postgres:// or postgresql://")?;
    if rest.contains('?') {
        return Err("--connection: query parameters are not supported".into());
    }
    let (userinfo, hostpath) = rest.rsplit_once('@').ok_or("--connection: missing user@")?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
        None => (percent_decode(userinfo)?, None),
    };
    let (hostport, database) = hostpath
        .split_once('/')
        .ok_or("--connection: missing /database")?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| "--connection: bad port")?),
        None => (hostport, 5432),
    };
    if user.is_empty() || host.is_empty() || database.is_empty() {
        return Err("--connection: user, host and database are required".into());
    }
    Ok(PgUrl {
        user,
        password,
        host: host.to_string(),
        port,
        database: percent_decode(database)?,
    })
}

/// `rivven-connect postgres ...`: the same engine, with a pipeline built from flags.
async fn legacy_postgres(args: &PostgresArgs, registry: &Registry) -> ExitCode {
    if let Some(b) = &args.broker {
        eprintln!(
            "error: --broker {b}: external brokers are not available in this build; changes \
             go to the embedded topic log in --state-dir"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let url = match parse_pg_url(&args.connection) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    const PASSWORD_VAR: &str = "RIVVEN_LEGACY_PG_PASSWORD";
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("cdc.{}", url.database));
    let mut yaml = format!(
        "version: \"1.0\"\nsources:\n  postgres:\n    connector: postgres-cdc\n    topic: {}\n    config:\n      host: {}\n      port: {}\n      database: {}\n      user: {}\n      slot_name: {}\n      publication: {}\n      snapshot_mode: {}\n",
        json(&topic),
        json(&url.host),
        url.port,
        json(&url.database),
        json(&url.user),
        json(&args.slot),
        json(&args.publication),
        json(&args.snapshot_mode),
    );
    if url.password.is_some() {
        yaml.push_str(&format!("      password: \"${{{PASSWORD_VAR}}}\"\n"));
    }
    if !args.tables.is_empty() {
        let list: Vec<String> = args.tables.iter().map(|t| json(t)).collect();
        yaml.push_str(&format!("      tables: [{}]\n", list.join(", ")));
    }
    if args.print {
        yaml.push_str(&format!(
            "sinks:\n  print:\n    connector: stdout\n    topics: [{}]\n    consumer_group: print\n    config: {{format: json}}\n",
            json(&topic)
        ));
    }
    // Legacy mode serves no HTTP endpoints (no ports to collide with).
    yaml.push_str(&format!(
        "settings:\n  state_dir: {}\n  health: {{enabled: false, port: 0}}\n  metrics: {{enabled: false, port: 0}}\n",
        json(&args.state_dir.display().to_string())
    ));
    let password = url.password.clone();
    let loaded = match config::load_str(
        &yaml,
        "<postgres flags>",
        std::path::PathBuf::from("."),
        |k| {
            if k == PASSWORD_VAR {
                password.clone()
            } else {
                None
            }
        },
    ) {
        Ok(l) => l,
        Err(errs) => {
            eprintln!("{errs}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match resolve(loaded, registry) {
        Ok((loaded, pipelines)) => run_loaded(&loaded, &pipelines).await,
        Err(code) => code,
    }
}

/// Run a loaded configuration: status endpoints, signal handling, the runtime.
async fn run_loaded(loaded: &LoadedConfig, pipelines: &Pipelines) -> ExitCode {
    let runtime = match Runtime::new(loaded, pipelines) {
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
    if settings.flight.enabled {
        let f = &settings.flight;
        let ep = rivven_engine::config::EndpointSettings {
            enabled: true,
            host: f.host.clone(),
            port: f.port,
        };
        let tls = match crate::flight::tls_config(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        match bind("flight", &ep).await {
            Ok(listener) => {
                tracing::info!(addr = %format!("{}:{}", f.host, f.port), auth = f.token.is_some(), tls = tls.is_some(), "serving Arrow Flight");
                let (f, log, taps, status, shutdown) = (
                    f.clone(),
                    runtime.log().clone(),
                    runtime.taps(),
                    status.clone(),
                    shutdown.clone(),
                );
                tokio::spawn(async move {
                    if let Err(e) =
                        crate::flight::serve(listener, f, tls, log, taps, status, shutdown).await
                    {
                        tracing::error!(error = %e, "the Flight endpoint stopped");
                    }
                });
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    tokio::spawn(signals(shutdown.clone()));
    let bars_done = tokio_util::sync::CancellationToken::new();
    let prints_rows = pipelines
        .sinks
        .iter()
        .any(|s| s.enabled && s.connector_name == "stdout");
    let bars = tokio::spawn(super::progress::show(
        status.clone(),
        bars_done.clone(),
        prints_rows,
    ));
    let ended = runtime.run().await;
    bars_done.cancel();
    let _ = bars.await;
    match ended {
        Ok(report) if report.failed.is_empty() => {
            tracing::info!(stopped = report.stopped, "all pipelines ended");
            ExitCode::SUCCESS
        }
        Ok(report) => {
            eprintln!("error: pipeline(s) failed: {}", report.failed.join(", "));
            ExitCode::from(report.exit_code())
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

/// `spec --transform [TYPE]`: the transform types, or one type's config JSON Schema.
fn spec_transform(kind: &str, registry: &Registry) -> ExitCode {
    let Some(t) = registry.transforms() else {
        eprintln!("error: transforms are not available in this build");
        return ExitCode::FAILURE;
    };
    let kinds = t.kinds();
    if kind.is_empty() {
        for k in &kinds {
            let aliases = if k.aliases.is_empty() {
                String::new()
            } else {
                format!(" (also {})", k.aliases.join(", "))
            };
            println!("  {:<26} {}{aliases}", k.name, k.description);
        }
        println!(
            "  {:<26} a source's config.cdc_features block",
            "cdc_features"
        );
        return ExitCode::SUCCESS;
    }
    match t.config_schema(kind) {
        Some(schema) => {
            let info = kinds
                .iter()
                .find(|k| k.name == kind || k.aliases.contains(&kind));
            let doc = serde_json::json!({
                "transform": info.map_or(kind, |i| i.name),
                "aliases": info.map_or(&[][..], |i| i.aliases),
                "description": info.map_or("a source's config.cdc_features block", |i| i.description),
                "config": schema,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            ExitCode::SUCCESS
        }
        None => {
            let names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
            eprintln!(
                "error: unknown transform type `{kind}`; available: {}, cdc_features",
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
    let (loaded, pipelines) = match load(path, registry) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Some(p) = pipelines.sources.iter().find(|p| p.name == source) else {
        let names: Vec<&String> = loaded.config.sources.keys().collect();
        eprintln!(
            "error: no source `{source}` in {}; sources: {names:?}",
            loaded.file
        );
        return ExitCode::FAILURE;
    };
    match p.connector.discover().await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_urls() {
        assert_eq!(
            parse_pg_url("postgres://rep:p%40ss:w@db.example:6543/shop").unwrap(),
            PgUrl {
                user: "rep".into(),
                password: Some("p@ss:w".into()),
                host: "db.example".into(),
                port: 6543,
                database: "shop".into(),
            }
        );
        let u = parse_pg_url("postgresql://u@localhost/d").unwrap();
        assert_eq!((u.port, u.password), (5432, None));
        for bad in [
            "mysql://u@h/d",
            "postgres://h/d",
            "postgres://u@h",
            "postgres://u@h/d?sslmode=require",
        ] {
            assert!(parse_pg_url(bad).is_err(), "{bad}");
        }
    }
}
