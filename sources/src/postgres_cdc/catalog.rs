//! The ordinary SQL connection (tokio-postgres): server checks, publication and slot
//! management, the type catalog, table shapes, and snapshot reads.

use super::config::{PostgresCdcConfig, SslMode};
use super::conn::quote_ident;
use super::pgoutput::{Relation, RelationColumn};
use super::types::TypeCatalog;
use rivven_engine::{Error, Result};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Session settings that pin every text output format the decoders parse.
pub const SESSION_SETTINGS: &str = "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; \
     SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// The same settings as startup `options` for the replication connection.
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO,YMD -c TimeZone=UTC \
     -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex";

pub fn pg_error(context: &str, e: tokio_postgres::Error) -> Error {
    let msg = match e.as_db_error() {
        Some(db) => format!(
            "{context}: {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        ),
        None => {
            // The cause chain says why (e.g. which certificate check failed).
            let mut m = format!("{context}: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                m.push_str(&format!(": {c}"));
                cause = c.source();
            }
            m
        }
    };
    match e.as_db_error().map(|d| d.code().code()) {
        // Authentication: the user's to fix.
        Some(code) if code.starts_with("28") => Error::config(msg),
        // Object in use (an active slot), connection, resources, operator intervention:
        // transient.
        Some(code)
            if code == "55006"
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57") =>
        {
            Error::connect(msg)
        }
        Some(_) => Error::connect(msg).retryable(false),
        None => Error::connect(msg),
    }
}

/// Connect the SQL session and pin its output formats.
pub async fn connect(cfg: &PostgresCdcConfig) -> Result<Client> {
    let mut c = tokio_postgres::Config::new();
    c.host(&cfg.host)
        .port(cfg.port)
        .user(&cfg.user)
        .dbname(&cfg.database)
        .application_name("rivven-connect")
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms));
    if let Some(p) = &cfg.password {
        c.password(p.expose());
    }
    let context = format!("connect to {}:{}/{}", cfg.host, cfg.port, cfg.database);
    let client = match super::tls::client_config(cfg.sslmode, cfg.sslrootcert.as_deref())? {
        None => {
            let (client, connection) = c.connect(NoTls).await.map_err(|e| pg_error(&context, e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "postgres SQL connection ended");
                }
            });
            client
        }
        Some(config) => {
            c.ssl_mode(if cfg.sslmode == SslMode::Prefer {
                tokio_postgres::config::SslMode::Prefer
            } else {
                tokio_postgres::config::SslMode::Require
            });
            let (client, connection) = c
                .connect(super::tls::MakeRustls { config })
                .await
                .map_err(|e| pg_error(&context, e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "postgres SQL connection ended");
                }
            });
            client
        }
    };
    client
        .batch_execute(SESSION_SETTINGS)
        .await
        .map_err(|e| pg_error("session settings", e))?;
    Ok(client)
}

/// Domains and user-defined array types.
pub async fn load_types(client: &Client) -> Result<TypeCatalog> {
    let mut cat = TypeCatalog::default();
    for row in client
        .query(
            "SELECT oid, typtype::text, typbasetype, typtypmod, typelem, typcategory::text \
             FROM pg_type WHERE typtype IN ('d', 'e') OR (typcategory = 'A' AND oid >= 16384)",
            &[],
        )
        .await
        .map_err(|e| pg_error("read pg_type", e))?
    {
        let oid: u32 = row.get(0);
        let typtype: String = row.get(1);
        if typtype == "d" {
            cat.domains.insert(oid, (row.get(2), row.get(3)));
        } else if typtype == "e" {
            cat.enums.insert(oid);
        } else {
            cat.arrays.insert(oid, row.get(4));
        }
    }
    Ok(cat)
}

/// The declared dimensions (`attndims`) of the array columns of table `oid` with more
/// than one, by column name: the current definition (pgoutput's Relation messages do not
/// carry them).
pub async fn array_dims(
    client: &Client,
    oid: u32,
) -> Result<std::collections::HashMap<String, u8>> {
    let rows = client
        .query(
            // attndims is int4 up to PostgreSQL 15 and int2 from 16 on.
            "SELECT attname, attndims::int4 FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attndims > 1",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error("read pg_attribute", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i32>(1).clamp(0, 6) as u8))
        .collect())
}

/// The shape of `schema.table` as pgoutput would describe it (generated columns excluded).
pub async fn relation(client: &Client, schema: &str, table: &str) -> Result<Relation> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let head = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_class c \
             WHERE c.oid = to_regclass($1)",
            &[&qualified],
        )
        .await
        .map_err(|e| pg_error("read pg_class", e))?
        .ok_or_else(|| Error::config(format!("table {schema}.{table} does not exist")))?;
    let oid: u32 = head.get(0);
    let ident: String = head.get(1);
    let rows = client
        .query(
            "SELECT a.attname, a.atttypid, a.atttypmod, \
               COALESCE(a.attnum = ANY(i.indkey), false), a.attndims::int4 \
             FROM pg_attribute a \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid \
               AND (i.indisreplident OR (i.indisprimary AND NOT EXISTS ( \
                 SELECT 1 FROM pg_index r WHERE r.indrelid = a.attrelid AND r.indisreplident))) \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
               AND a.attgenerated = '' \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| pg_error("read pg_attribute", e))?;
    let full = ident == "f";
    Ok(Relation {
        oid,
        namespace: schema.to_string(),
        name: table.to_string(),
        replica_identity: ident.as_bytes().first().copied().unwrap_or(b'd'),
        columns: rows
            .iter()
            .map(|r| RelationColumn {
                name: r.get(0),
                type_oid: r.get(1),
                type_modifier: r.get(2),
                key: full || r.get::<_, bool>(3),
                dims: r.get::<_, i32>(4).clamp(0, 6) as u8,
            })
            .collect(),
    })
}

/// `(reltuples, relpages)` of a table; `None` when it was never analyzed.
pub async fn size_estimate(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Option<(i64, i64)>> {
    let qualified = format!("{}.{}", quote_ident(schema), quote_ident(table));
    let row = client
        .query_opt(
            "SELECT reltuples::int8, relpages::int8 FROM pg_class WHERE oid = to_regclass($1)",
            &[&qualified],
        )
        .await
        .map_err(|e| pg_error("read pg_class", e))?;
    Ok(row
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
        .filter(|(rows, _)| *rows >= 0))
}

/// The selected tables of the publication, `(schema, table)`, sorted.
pub async fn publication_tables(
    client: &Client,
    cfg: &PostgresCdcConfig,
) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY 1, 2",
            &[&cfg.publication],
        )
        .await
        .map_err(|e| pg_error("read pg_publication_tables", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .filter(|(s, t)| cfg.selects(s, t))
        .collect())
}

/// What a publication publishes of one table (PostgreSQL 15+): its column list and row
/// filter. Both `None` on older servers, when the table is not in the publication, or when
/// the publication does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The published columns (all of them when the publication has no column list).
    pub columns: Option<Vec<String>>,
    /// The row filter, as PostgreSQL deparses it (`(status = 'active'::text)`).
    pub row_filter: Option<String>,
}

impl Published {
    /// Whether column `name` is published.
    pub fn has_column(&self, name: &str) -> bool {
        self.columns
            .as_ref()
            .is_none_or(|c| c.iter().any(|n| n == name))
    }
}

/// The column list and row filter `publication` applies to `schema.table`. Read through
/// `to_jsonb`, so servers before 15 (no `attnames`, `rowfilter`) answer `None`s.
pub async fn published(
    client: &Client,
    publication: &str,
    schema: &str,
    table: &str,
) -> Result<Published> {
    let row = client
        .query_opt(
            "SELECT (to_jsonb(t) -> 'attnames')::text, to_jsonb(t) ->> 'rowfilter' \
             FROM pg_publication_tables t \
             WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&publication, &schema, &table],
        )
        .await
        .map_err(|e| pg_error("read pg_publication_tables", e))?;
    let Some(row) = row else {
        return Ok(Published::default());
    };
    let columns = row
        .get::<_, Option<String>>(0)
        .filter(|j| j != "null")
        .map(|j| {
            serde_json::from_str::<Vec<String>>(&j)
                .map_err(|e| Error::internal(format!("pg_publication_tables.attnames: {e}")))
        })
        .transpose()?;
    Ok(Published {
        columns,
        row_filter: row.get::<_, Option<String>>(1),
    })
}

/// Whether the configured publication exists.
pub async fn publication_exists(client: &Client, cfg: &PostgresCdcConfig) -> Result<bool> {
    Ok(client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(|e| pg_error("read pg_publication", e))?
        .is_some())
}

/// Create the publication when it does not exist: for the configured tables, or for all
/// tables when none are configured.
pub async fn ensure_publication(client: &Client, cfg: &PostgresCdcConfig) -> Result<()> {
    let exists = publication_exists(client, cfg).await?;
    if exists {
        return Ok(());
    }
    let target = if cfg.tables.is_empty() {
        if cfg.schemas.is_empty() {
            "ALL TABLES".to_string()
        } else {
            format!(
                "TABLES IN SCHEMA {}",
                cfg.schemas
                    .iter()
                    .map(|s| quote_ident(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    } else {
        format!(
            "TABLE {}",
            cfg.table_names()
                .iter()
                .map(|(s, t)| format!("{}.{}", quote_ident(s), quote_ident(t)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR {target}",
            quote_ident(&cfg.publication)
        ))
        .await
        .map_err(|e| pg_error(&format!("create publication {}", cfg.publication), e))?;
    tracing::info!(publication = %cfg.publication, %target, "created publication");
    Ok(())
}

/// The slot's state: `None` when absent, else `(confirmed_flush_lsn, wal_status)`.
pub async fn slot_state(
    client: &Client,
    cfg: &PostgresCdcConfig,
) -> Result<Option<(Option<String>, Option<String>)>> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text, wal_status, database::text, plugin::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&cfg.slot_name],
        )
        .await
        .map_err(|e| pg_error("read pg_replication_slots", e))?;
    let Some(row) = row else { return Ok(None) };
    let db: Option<String> = row.get(2);
    let plugin: Option<String> = row.get(3);
    if db.as_deref() != Some(cfg.database.as_str()) || plugin.as_deref() != Some("pgoutput") {
        return Err(Error::config(format!(
            "slot_name: slot {} exists for database {:?} with plugin {:?}; it must be a \
             pgoutput slot of database {}",
            cfg.slot_name, db, plugin, cfg.database
        )));
    }
    Ok(Some((row.get(0), row.get(1))))
}

/// Drop the slot. A slot still held by a session that is going away (ours, just closed,
/// or a killed predecessor's) is waited for, up to 10 s.
pub async fn drop_slot(client: &Client, slot: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
        {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_db_error().is_some_and(|d| d.code().code() == "55006")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(pg_error(&format!("drop slot {slot}"), e)),
        }
    }
}

/// Each unmet prerequisite, as one message.
pub async fn prerequisites(client: &Client, cfg: &PostgresCdcConfig) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| pg_error("SHOW wal_level", e))?
        .get(0);
    if wal_level != "logical" {
        problems.push(format!(
            "wal_level is {wal_level}; set wal_level = logical in postgresql.conf and restart"
        ));
    }
    let can_replicate: bool = client
        .query_one(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| pg_error("read pg_roles", e))?
        .get(0);
    if !can_replicate {
        problems.push(format!(
            "user {} lacks the REPLICATION attribute: ALTER ROLE {} WITH REPLICATION",
            cfg.user,
            quote_ident(&cfg.user)
        ));
    }
    let pub_exists = publication_exists(client, cfg).await?;
    if pub_exists {
        let in_pub = publication_tables(client, cfg).await?;
        for (s, t) in cfg.table_names() {
            if !in_pub.iter().any(|(ps, pt)| *ps == s && *pt == t) {
                problems.push(format!(
                    "table {s}.{t} is not in publication {}: ALTER PUBLICATION {} ADD TABLE {}.{}",
                    cfg.publication,
                    quote_ident(&cfg.publication),
                    quote_ident(&s),
                    quote_ident(&t)
                ));
            }
        }
    }
    // The published tables, and the configured ones (which may not be published yet).
    let mut tables = if pub_exists {
        publication_tables(client, cfg).await?
    } else {
        Vec::new()
    };
    for t in cfg.table_names() {
        if !tables.contains(&t) {
            tables.push(t);
        }
    }
    for (s, t) in tables {
        match relation(client, &s, &t).await {
            Ok(r) if r.replica_identity == b'n' => problems.push(format!(
                "table {s}.{t} has REPLICA IDENTITY NOTHING: updates and deletes cannot be \
                 captured (ALTER TABLE ... REPLICA IDENTITY DEFAULT or FULL)"
            )),
            Ok(r) if r.replica_identity == b'd' && !r.columns.iter().any(|c| c.key) => problems
                .push(format!(
                    "table {s}.{t} has no primary key and REPLICA IDENTITY DEFAULT: the server \
                     rejects its updates and deletes once published (add a primary key or \
                     ALTER TABLE ... REPLICA IDENTITY FULL)"
                )),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    if let Some((_, Some(status))) = slot_state(client, cfg).await? {
        if status == "lost" {
            problems.push(format!(
                "slot {} is lost (its WAL was removed); drop it and restart with \
                 snapshot_mode initial to re-read the tables",
                cfg.slot_name
            ));
        }
    }
    Ok(problems)
}
