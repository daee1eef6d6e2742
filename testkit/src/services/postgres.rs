//! PostgreSQL 15 with logical replication, SCRAM passwords and TLS.

use super::launch::{is_executable, is_root, launch, random_secret, run, service_dir, user_ids};
use super::service::Service;
use crate::process::{free_port, wait_for_port};
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A private PostgreSQL 15 server: `wal_level=logical`, SCRAM passwords over TCP,
/// `synchronous_commit` on (logical decoding reads flushed WAL only), `fsync` off (the
/// data dir is a throwaway temp dir; crash tests kill our process, not the server).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Postgres {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// Directory holding `psql`, `pg_recvlogical`, ... of the same version.
    pub bin_dir: PathBuf,
    pub version: String,
    /// TLS is on (`ssl=on`, plain connections still accepted): the PEM of the CA that
    /// signed the server certificate, whose only name is `DNS:localhost` (so checking the
    /// host name fails when connecting to `127.0.0.1`). `None` without openssl.
    pub ca_cert: Option<PathBuf>,
}

impl Postgres {
    pub fn start() -> Result<Postgres, Unavailable> {
        let svc = Service::Postgres;
        let bin_dir = match std::env::var_os(svc.binary_env()) {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from("/usr/lib/postgresql/15/bin"),
        };
        for b in ["postgres", "initdb"] {
            if !is_executable(&bin_dir.join(b)) {
                return Err(Unavailable::new(
                    svc.name(),
                    format!(
                        "{} not found (install postgresql-15 or set {})",
                        bin_dir.join(b).display(),
                        svc.binary_env()
                    ),
                ));
            }
        }
        let dir = service_dir(svc)?;
        let password = random_secret();
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))
            .map_err(|e| Unavailable::new(svc.name(), e.to_string()))?;
        // postgres refuses to run as root: run it as the `postgres` user.
        let ids = if is_root() {
            let ids = user_ids("postgres").ok_or_else(|| {
                Unavailable::new(svc.name(), "running as root and there is no postgres user")
            })?;
            for p in [&dir, &pwfile] {
                std::os::unix::fs::chown(p, Some(ids.0), Some(ids.1))
                    .map_err(|e| Unavailable::new(svc.name(), format!("chown: {e}")))?;
            }
            Some(ids)
        } else {
            None
        };
        let as_user = |cmd: &mut Command| {
            use std::os::unix::process::CommandExt;
            if let Some((uid, gid)) = ids {
                cmd.uid(uid).gid(gid);
            }
        };
        let certs = super::certs::make_certs(&dir, "DNS:localhost").ok();
        if let (Some((_, crt, key)), Some((uid, gid))) = (&certs, ids) {
            for p in [crt, key] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .map_err(|e| Unavailable::new(svc.name(), format!("chown: {e}")))?;
            }
        }
        if let Some((_, _, key)) = &certs {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Unavailable::new(svc.name(), format!("chmod: {e}")))?;
        }
        let data = dir.join("data");
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "--no-instructions"]);
        as_user(&mut initdb);
        run(&mut initdb).map_err(|e| Unavailable::new(svc.name(), format!("initdb: {e}")))?;
        let port = free_port();
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D").arg(&data).arg("-p").arg(port.to_string());
        for (k, v) in [
            ("listen_addresses", "127.0.0.1".to_string()),
            ("unix_socket_directories", dir.display().to_string()),
            ("wal_level", "logical".into()),
            ("max_wal_senders", "32".into()),
            ("max_replication_slots", "32".into()),
            ("max_connections", "200".into()),
            ("synchronous_commit", "on".into()),
            ("fsync", "off".into()),
            ("full_page_writes", "off".into()),
            ("shared_buffers", "128MB".into()),
            ("max_wal_size", "4GB".into()),
        ] {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        if let Some((_, crt, key)) = &certs {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", crt.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        as_user(&mut cmd);
        let pg = Postgres {
            ca_cert: certs.as_ref().map(|c| c.0.clone()),
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            password,
            bin_dir,
            version: String::new(),
        };
        // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients.
        launch(svc, cmd, libc::SIGINT, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
                && pg.psql("postgres", "SELECT 1").is_ok()
        })?;
        let version = pg
            .psql("postgres", "SHOW server_version")
            .map_err(|e| Unavailable::new(svc.name(), e))?;
        Ok(Postgres {
            version: version.trim().to_string(),
            ..pg
        })
    }

    /// `postgres://user:password@127.0.0.1:port/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{db}",
            self.user, self.password, self.host, self.port
        )
    }

    /// A libpq key=value connection string for `db`.
    pub fn conn_str(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={db}",
            self.host, self.port, self.user, self.password
        )
    }

    /// Run SQL through `psql` over TCP (SCRAM) and return its unaligned, tuples-only
    /// output; an error carries psql's message.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        run(Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
            ])
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5"))
    }

    /// Create a database (see [`crate::unique_name`]) and return its name.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(name.to_string())
    }

    /// Create a database named after `prefix` (see [`crate::unique_name`]) that is dropped,
    /// with the replication slots made in it, when the returned guard is dropped.
    pub fn temp_database(&self, prefix: &str) -> Result<TempDatabase, String> {
        let name = self.create_database(&crate::unique_name(prefix))?;
        Ok(TempDatabase {
            pg: self.clone(),
            name,
        })
    }

    /// Drop database `name` and its replication slots (inactive slots pin WAL on a shared
    /// server and count against `max_replication_slots`), ending its sessions first.
    pub fn drop_database(&self, name: &str) -> Result<(), String> {
        let quoted = name.replace('\'', "''");
        self.psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{quoted}' AND pid <> pg_backend_pid()"
            ),
        )?;
        // A terminated walsender releases its slot a moment after it is signalled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let left = self.psql(
                "postgres",
                &format!(
                    "SELECT count(pg_drop_replication_slot(slot_name)) FILTER (WHERE NOT active), \
                            count(*) FILTER (WHERE active) \
                     FROM pg_replication_slots WHERE database = '{quoted}'"
                ),
            )?;
            if left.trim().ends_with("|0") || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        )
        .map(drop)
    }
}

/// A database made for one test or benchmark (see [`Postgres::temp_database`]).
#[derive(Debug)]
pub struct TempDatabase {
    /// The server it lives on.
    pub pg: Postgres,
    /// Its name.
    pub name: String,
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if let Err(e) = self.pg.drop_database(&self.name) {
            eprintln!("warning: dropping test database {}: {e}", self.name);
        }
    }
}
