//! One type per service: how to find its binary, start it privately, reach it, and run the
//! small administrative steps tests need (create a database, a bucket, ...).

use crate::process::{self, free_port, wait_for_port};
use crate::{cache_dir, Unavailable};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The services this crate can start, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Postgres,
    MariaDb,
    Tansu,
    S3,
    Azurite,
    Mosquitto,
    Nats,
    Python,
}

impl Service {
    pub const ALL: [Service; 8] = [
        Service::Postgres,
        Service::MariaDb,
        Service::Tansu,
        Service::S3,
        Service::Azurite,
        Service::Mosquitto,
        Service::Nats,
        Service::Python,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Postgres => "postgres",
            Service::MariaDb => "mariadb",
            Service::Tansu => "tansu",
            Service::S3 => "s3",
            Service::Azurite => "azurite",
            Service::Mosquitto => "mosquitto",
            Service::Nats => "nats",
            Service::Python => "python",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The environment variable that overrides where the service's binary is.
    pub fn binary_env(self) -> &'static str {
        match self {
            Service::Postgres => "RIVVEN_PG_BIN_DIR",
            Service::MariaDb => "RIVVEN_MARIADBD",
            Service::Tansu => "RIVVEN_TANSU",
            Service::S3 => "RIVVEN_S3S_FS",
            Service::Azurite => "RIVVEN_AZURITE_BLOB",
            Service::Mosquitto => "RIVVEN_MOSQUITTO",
            Service::Nats => "RIVVEN_NATS_SERVER",
            Service::Python => "RIVVEN_PYTHON",
        }
    }
}

/// The file `rivven-services up` writes and tests read (named by `RIVVEN_TEST_SERVICES`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ServiceFile {
    pub postgres: Option<Postgres>,
    pub mariadb: Option<MariaDb>,
    pub tansu: Option<Tansu>,
    pub s3: Option<S3>,
    pub azurite: Option<Azurite>,
    pub mosquitto: Option<Mosquitto>,
    pub nats: Option<Nats>,
    pub python: Option<Python>,
    pub unavailable: Vec<Unavailable>,
}

impl ServiceFile {
    /// Start `which` services; what cannot start is listed in `unavailable`.
    pub fn start(which: &[Service]) -> ServiceFile {
        let mut f = ServiceFile::default();
        for &s in which {
            let r = match s {
                Service::Postgres => Postgres::start().map(|v| f.postgres = Some(v)),
                Service::MariaDb => MariaDb::start().map(|v| f.mariadb = Some(v)),
                Service::Tansu => Tansu::start().map(|v| f.tansu = Some(v)),
                Service::S3 => S3::start().map(|v| f.s3 = Some(v)),
                Service::Azurite => Azurite::start().map(|v| f.azurite = Some(v)),
                Service::Mosquitto => Mosquitto::start().map(|v| f.mosquitto = Some(v)),
                Service::Nats => Nats::start().map(|v| f.nats = Some(v)),
                Service::Python => Python::find().map(|v| f.python = Some(v)),
            };
            if let Err(e) = r {
                f.unavailable.push(e);
            }
        }
        f
    }

    fn get<T: Clone>(
        &self,
        service: Service,
        pick: impl Fn(&ServiceFile) -> &Option<T>,
    ) -> Result<T, Unavailable> {
        if let Some(v) = pick(self) {
            return Ok(v.clone());
        }
        Err(self
            .unavailable
            .iter()
            .find(|u| u.service == service.name())
            .cloned()
            .unwrap_or_else(|| {
                Unavailable::new(
                    service.name(),
                    "not started by rivven-services (see RIVVEN_TEST_SERVICES)",
                )
            }))
    }
}

/// The shared services file, when `RIVVEN_TEST_SERVICES` names one.
fn shared() -> Option<&'static Result<ServiceFile, String>> {
    static FILE: OnceLock<Option<Result<ServiceFile, String>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::var_os("RIVVEN_TEST_SERVICES")?;
        let path = PathBuf::from(path);
        Some(
            std::fs::read(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display()))
                }),
        )
    })
    .as_ref()
}

macro_rules! accessor {
    ($(#[$doc:meta])* $fn:ident, $ty:ident, $variant:ident, $field:ident, $start:expr) => {
        $(#[$doc])*
        pub fn $fn() -> Result<$ty, Unavailable> {
            if let Some(file) = shared() {
                return match file {
                    Ok(f) => f.get(Service::$variant, |f| &f.$field),
                    Err(e) => Err(Unavailable::new(Service::$variant.name(), e.clone())),
                };
            }
            static PRIVATE: OnceLock<Result<$ty, Unavailable>> = OnceLock::new();
            PRIVATE.get_or_init($start).clone()
        }
    };
}

accessor!(
    /// PostgreSQL 15 with `wal_level=logical` (shared, or started for this process).
    postgres, Postgres, Postgres, postgres, Postgres::start
);
accessor!(
    /// MariaDB with a ROW binlog and a replication user.
    mariadb, MariaDb, MariaDb, mariadb, MariaDb::start
);
accessor!(
    /// tansu, a Kafka-protocol broker with in-memory storage.
    tansu, Tansu, Tansu, tansu, Tansu::start
);
accessor!(
    /// s3s-fs, an S3-compatible server that checks SigV4 signatures.
    s3, S3, S3, s3, S3::start
);
accessor!(
    /// Azurite's Blob service (Azure Storage emulator, from npm).
    azurite, Azurite, Azurite, azurite, Azurite::start
);
accessor!(
    /// mosquitto, an MQTT broker.
    mosquitto, Mosquitto, Mosquitto, mosquitto, Mosquitto::start
);
accessor!(
    /// nats-server with JetStream.
    nats, Nats, Nats, nats, Nats::start
);
accessor!(
    /// The Python venv with independent readers (pyarrow, duckdb, pyiceberg, deltalake,
    /// fastavro).
    python, Python, Python, python, Python::find
);

// ---------------------------------------------------------------------------------------
// helpers

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Find a service binary: the override variable, then the tools cache, `PATH`, sbin dirs.
fn find_binary(service: Service, names: &[&str]) -> Result<PathBuf, Unavailable> {
    let var = service.binary_env();
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(Unavailable::new(
                service.name(),
                format!("{var}={} is not an executable file", p.display()),
            ))
        };
    }
    let mut dirs = vec![cache_dir().join("tools/bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from));
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if is_executable(&p) {
                return Ok(p);
            }
        }
    }
    Err(Unavailable::new(
        service.name(),
        format!(
            "{} not found in {}/tools/bin, PATH or /usr/sbin (or set {var})",
            names.join(" / "),
            cache_dir().display()
        ),
    ))
}

/// A fresh temp dir for a service's data, kept until the service stops.
fn service_dir(service: Service) -> Result<PathBuf, Unavailable> {
    tempfile::Builder::new()
        .prefix(&format!("rivven-{}-", service.name()))
        .tempdir()
        .map(|d| d.keep())
        .map_err(|e| Unavailable::new(service.name(), format!("temp dir: {e}")))
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Spawn a service with stdout/stderr to `<dir>/log`, and wait until `ready` holds.
fn launch(
    service: Service,
    cmd: Command,
    stop_signal: i32,
    dir: &Path,
    mut ready: impl FnMut() -> bool,
) -> Result<(), Unavailable> {
    let log_path = dir.join("log");
    let mut cmd = cmd;
    let log = std::fs::File::create(&log_path)
        .map_err(|e| Unavailable::new(service.name(), format!("log file: {e}")))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Unavailable::new(service.name(), format!("log file: {e}")))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    let pid = process::spawn(service.name(), cmd, stop_signal, Some(dir.to_path_buf()))
        .map_err(|e| Unavailable::new(service.name(), format!("spawn: {e}")))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !process::is_running(pid) {
            return Err(Unavailable::new(
                service.name(),
                format!("exited during start-up; log:\n{}", tail(&log_path)),
            ));
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Unavailable::new(
                service.name(),
                format!(
                    "not ready after {}s; log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    tail(&log_path)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// uid and gid of a local user, from /etc/passwd.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn random_secret() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

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

/// Make a CA and a server certificate for `localhost` in `dir` with the openssl CLI;
/// returns (CA cert, server cert, server key).
fn make_certs(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let openssl =
        |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir)).map(|_| ());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| e.to_string())?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=rivven-test-ca",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
    ])?;
    Ok((
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    ))
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
        let certs = make_certs(&dir).ok();
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
}

// ---------------------------------------------------------------------------------------
// MariaDB

/// A private MariaDB server with a ROW binlog (`binlog_row_image=FULL`, `server_id=1`),
/// `root` with a password over TCP, and a replication user `repl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MariaDb {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub repl_user: String,
    pub repl_password: String,
    pub version: String,
}

impl MariaDb {
    pub fn start() -> Result<MariaDb, Unavailable> {
        let svc = Service::MariaDb;
        let mariadbd = find_binary(svc, &["mariadbd", "mysqld"])?;
        let install = find_binary(svc, &["mariadb-install-db", "mysql_install_db"])
            .map_err(|_| Unavailable::new(svc.name(), "mariadb-install-db not found"))?;
        let dir = service_dir(svc)?;
        let data = dir.join("data");
        let mut init = Command::new(&install);
        init.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            init.arg("--user=root");
        }
        run(&mut init).map_err(|e| Unavailable::new(svc.name(), format!("install-db: {e}")))?;
        let port = free_port();
        let socket = dir.join("sock");
        let mut cmd = Command::new(&mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-bin={}", data.join("binlog").display()))
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--server-id=1",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=128M",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=300",
            ]);
        if is_root() {
            cmd.arg("--user=root");
        }
        let password = random_secret();
        let repl_password = random_secret();
        let mut db = MariaDb {
            host: "127.0.0.1".into(),
            port,
            user: "root".into(),
            password: String::new(),
            repl_user: "repl".into(),
            repl_password: repl_password.clone(),
            version: String::new(),
        };
        let client = find_client()?;
        let socket_sql = |sql: &str| {
            run(Command::new(&client)
                .arg("--no-defaults")
                .arg(format!("--socket={}", socket.display()))
                .args(["-u", "root", "-N", "-B", "-e", sql]))
        };
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            socket.exists() && socket_sql("SELECT 1").is_ok()
        })?;
        let setup = format!(
            "CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{password}';
             GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
             CREATE OR REPLACE USER 'repl'@'%' IDENTIFIED BY '{repl_password}';
             GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT,
               BINLOG MONITOR, REPLICATION SLAVE ADMIN ON *.* TO 'repl'@'%';
             FLUSH PRIVILEGES;"
        );
        socket_sql(&setup).map_err(|e| Unavailable::new(svc.name(), e))?;
        db.password = password;
        db.version = db
            .sql("SELECT VERSION()")
            .map_err(|e| Unavailable::new(svc.name(), e))?
            .trim()
            .to_string();
        Ok(db)
    }

    /// `mysql://root:password@127.0.0.1:port/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "mysql://{}:{}@{}:{}/{db}",
            self.user, self.password, self.host, self.port
        )
    }

    /// Run SQL as root over TCP with the `mariadb` client; tab-separated rows, no header.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let client = find_client().map_err(|e| e.to_string())?;
        run(Command::new(client)
            .arg("--no-defaults")
            .args([
                "-h",
                &self.host,
                "-P",
                &self.port.to_string(),
                "-u",
                &self.user,
            ])
            .args(["--protocol=TCP", "-N", "-B", "-e", sql])
            .env("MYSQL_PWD", &self.password))
    }

    /// Create a database and return its name.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        self.sql(&format!("CREATE DATABASE `{name}`"))?;
        Ok(name.to_string())
    }
}

/// The `mariadb` command-line client (from the server's package).
fn find_client() -> Result<PathBuf, Unavailable> {
    find_binary(Service::MariaDb, &["mariadb", "mysql"])
        .map_err(|_| Unavailable::new("mariadb", "the mariadb client is not installed"))
}

// ---------------------------------------------------------------------------------------
// tansu

/// A private tansu broker (Kafka protocol) with in-memory storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tansu {
    pub host: String,
    pub port: u16,
    pub binary: PathBuf,
}

impl Tansu {
    pub fn start() -> Result<Tansu, Unavailable> {
        let svc = Service::Tansu;
        let binary = find_binary(svc, &["tansu"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut cmd = Command::new(&binary);
        cmd.arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--cluster-id", "rivven-test"])
            .env("RUST_LOG", "warn");
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            kafka_api_versions(port).is_ok()
        })?;
        Ok(Tansu {
            host: "127.0.0.1".into(),
            port,
            binary,
        })
    }

    /// `127.0.0.1:port`, for a Kafka client's bootstrap servers.
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Send a Kafka ApiVersions v0 request and return the number of API keys the broker lists.
pub fn kafka_api_versions(port: u16) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let client = b"rivven-testkit";
    let mut body = Vec::new();
    body.extend(18i16.to_be_bytes()); // api_key: ApiVersions
    body.extend(0i16.to_be_bytes()); // api_version
    body.extend(7i32.to_be_bytes()); // correlation_id
    body.extend((client.len() as i16).to_be_bytes());
    body.extend(client);
    s.write_all(&(body.len() as i32).to_be_bytes())?;
    s.write_all(&body)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut resp = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut resp)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "short ApiVersions");
    if resp.len() < 10 || resp[..4] != 7i32.to_be_bytes() {
        return Err(bad());
    }
    let error = i16::from_be_bytes([resp[4], resp[5]]);
    if error != 0 {
        return Err(std::io::Error::other(format!("ApiVersions error {error}")));
    }
    Ok(i32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]).max(0) as usize)
}

// ---------------------------------------------------------------------------------------
// S3

/// A private s3s-fs server: path-style S3 over HTTP, SigV4 checked against one key pair,
/// objects stored as files under `root`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3 {
    pub endpoint: String,
    pub port: u16,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// The directory where the server stores buckets (one sub-directory each).
    pub root: PathBuf,
}

impl S3 {
    pub fn start() -> Result<S3, Unavailable> {
        let svc = Service::S3;
        let binary = find_binary(svc, &["s3s-fs"])?;
        let dir = service_dir(svc)?;
        let root = dir.join("data");
        std::fs::create_dir_all(&root).map_err(|e| Unavailable::new(svc.name(), e.to_string()))?;
        let port = free_port();
        let access_key = format!("AK{}", &random_secret()[..18]).to_uppercase();
        let secret_key = random_secret();
        let mut cmd = Command::new(&binary);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(&root)
            .env("RUST_LOG", "warn");
        launch(svc, cmd, libc::SIGTERM, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
        })?;
        Ok(S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            region: "us-east-1".into(),
            access_key,
            secret_key,
            root,
        })
    }

    /// Create a bucket (a name from [`crate::unique_name`] with `_` turned into `-`).
    pub fn create_bucket(&self, name: &str) -> Result<String, String> {
        let name = name.replace('_', "-");
        match self.curl("PUT", &format!("/{name}"), None, &self.secret_key)? {
            (200, _) => Ok(name),
            (code, body) => Err(format!("create bucket {name}: HTTP {code}: {body}")),
        }
    }

    /// A SigV4-signed request with `curl --aws-sigv4` (payload sent unsigned, as S3 allows);
    /// returns (HTTP status, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        body: Option<&Path>,
        secret_key: &str,
    ) -> Result<(u16, String), String> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"])
            .args(["--aws-sigv4", &format!("aws:amz:{}:s3", self.region)])
            .args(["--user", &format!("{}:{secret_key}", self.access_key)])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
        if let Some(b) = body {
            cmd.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        cmd.arg(format!("{}{path}", self.endpoint));
        let out = run(&mut cmd)?;
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        let code: u16 = code.parse().map_err(|_| format!("curl output: {out}"))?;
        Ok((code, body.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// mosquitto

/// A private mosquitto broker (MQTT 3.1.1 / 5), anonymous, no persistence.
/// Azurite's Blob service, with the emulator's well-known account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Azurite {
    /// `http://127.0.0.1:<port>`: the value for `AZURITE_BLOB_STORAGE_URL`.
    pub blob_url: String,
    pub port: u16,
    pub account: String,
    pub key: String,
}

impl Azurite {
    pub fn start() -> Result<Azurite, Unavailable> {
        let svc = Service::Azurite;
        let binary = find_binary(svc, &["azurite-blob"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.join("data"))
            .args(["--silent", "--skipApiVersionCheck", "--loose"]);
        // Azurite's graceful stop waits for idle keep-alive connections; its data is a
        // throwaway temp dir, so it is stopped with SIGKILL.
        launch(svc, cmd, libc::SIGKILL, &dir, || {
            wait_for_port(port, Duration::from_millis(100))
        })?;
        Ok(Azurite {
            blob_url: format!("http://127.0.0.1:{port}"),
            port,
            account: "devstoreaccount1".into(),
            // The emulator's published development key (not a secret).
            key: "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==".into(),
        })
    }

    /// A connection string for Azure SDKs.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={}/{};",
            self.account, self.key, self.blob_url, self.account
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mosquitto {
    pub host: String,
    pub port: u16,
}

impl Mosquitto {
    pub fn start() -> Result<Mosquitto, Unavailable> {
        let svc = Service::Mosquitto;
        let binary = find_binary(svc, &["mosquitto"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 log_dest stderr\nmax_queued_messages 100000\n"
            ),
        )
        .map_err(|e| Unavailable::new(svc.name(), e.to_string()))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("-c").arg(&conf);
        launch(svc, cmd, libc::SIGTERM, &dir, || mqtt_connect(port).is_ok())?;
        Ok(Mosquitto {
            host: "127.0.0.1".into(),
            port,
        })
    }
}

/// MQTT 3.1.1 CONNECT with a clean session; returns the open stream after CONNACK 0.
pub fn mqtt_connect(port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let id = format!("rivven-testkit-{}", crate::unique_name("c"));
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    var.extend((id.len() as u16).to_be_bytes());
    var.extend(id.as_bytes());
    s.write_all(&[0x10, var.len() as u8])?;
    s.write_all(&var)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack)?;
    if ack[0] != 0x20 || ack[3] != 0 {
        return Err(std::io::Error::other(format!("CONNACK {ack:?}")));
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// NATS

/// A private nats-server with JetStream (store in its temp dir).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Nats {
    pub host: String,
    pub port: u16,
}

impl Nats {
    pub fn start() -> Result<Nats, Unavailable> {
        let svc = Service::Nats;
        let binary = find_binary(svc, &["nats-server"])?;
        let dir = service_dir(svc)?;
        let port = free_port();
        let mut cmd = Command::new(&binary);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"));
        launch(svc, cmd, libc::SIGTERM, &dir, || nats_info(port).is_ok())?;
        Ok(Nats {
            host: "127.0.0.1".into(),
            port,
        })
    }

    /// `nats://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }
}

/// Read the server's INFO line (JSON) from a fresh connection.
pub fn nats_info(port: u16) -> std::io::Result<serde_json::Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n") {
        s.read_exact(&mut byte)?;
        buf.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&buf);
    let json = line
        .strip_prefix("INFO ")
        .ok_or_else(|| std::io::Error::other(format!("not an INFO line: {line}")))?;
    serde_json::from_str(json.trim()).map_err(std::io::Error::other)
}

// ---------------------------------------------------------------------------------------
// Python readers

/// The modules the readers venv must import.
pub const PYTHON_READERS: [&str; 6] = [
    "pyarrow",
    "duckdb",
    "pyiceberg",
    "deltalake",
    "fastavro",
    "cramjam",
];

/// The Python interpreter of the readers venv (`$RIVVEN_CACHE/venv`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Python {
    pub python: PathBuf,
}

impl Python {
    pub fn find() -> Result<Python, Unavailable> {
        let svc = Service::Python;
        let python = match std::env::var_os(svc.binary_env()) {
            Some(p) => PathBuf::from(p),
            None => cache_dir().join("venv/bin/python"),
        };
        if !is_executable(&python) {
            return Err(Unavailable::new(
                svc.name(),
                format!(
                    "{} not found (or set {})",
                    python.display(),
                    svc.binary_env()
                ),
            ));
        }
        let py = Python { python };
        let imports = format!("import {}", PYTHON_READERS.join(", "));
        py.run(&imports, &[])
            .map_err(|e| Unavailable::new(svc.name(), e))?;
        Ok(py)
    }

    /// Run a Python script (`-c`) with arguments; returns stdout.
    pub fn run(&self, script: &str, args: &[&str]) -> Result<String, String> {
        run(Command::new(&self.python).arg("-c").arg(script).args(args))
    }
}
