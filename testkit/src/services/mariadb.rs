//! MariaDB with a ROW binlog and a replication user.

use super::launch::{find_binary, is_root, launch, random_secret, run, service_dir};
use super::service::Service;
use crate::process::free_port;
use crate::Unavailable;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

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
