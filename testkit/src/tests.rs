//! Each service is started (or taken from `RIVVEN_TEST_SERVICES`) and used for real: the
//! properties later connector tests rely on are checked here first.

use crate::*;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn postgres_is_logical_and_replicates_over_scram() {
    let pg = require!(postgres());
    assert!(pg.version.starts_with("15"), "version {}", pg.version);
    assert_eq!(
        pg.psql("postgres", "SHOW wal_level").unwrap().trim(),
        "logical"
    );
    assert_eq!(
        pg.psql("postgres", "SHOW synchronous_commit")
            .unwrap()
            .trim(),
        "on"
    );
    let temp = pg.temp_database("tk").unwrap();
    let db = temp.name.clone();
    let slot = unique_name("slot");
    // psql -c runs one transaction; a slot cannot be created in one that wrote.
    pg.psql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION p FOR TABLE t",
    )
    .unwrap();
    pg.psql(
        &db,
        &format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"),
    )
    .unwrap();
    pg.psql(&db, "INSERT INTO t VALUES (1, 'a')").unwrap();
    // The change is decodable from the slot (pgoutput needs the binary peek function).
    let n = pg
        .psql(
            &db,
            &format!(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('{slot}', NULL, NULL,
                 'proto_version', '1', 'publication_names', 'p')"
            ),
        )
        .unwrap();
    assert!(
        n.trim().parse::<i64>().unwrap() >= 3,
        "begin/insert/commit: {n}"
    );
    // A replication connection authenticates with SCRAM over TCP.
    let out = std::process::Command::new(pg.bin_dir.join("psql"))
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} replication=database",
            pg.port
        ))
        .args(["-XAtc", "IDENTIFY_SYSTEM"])
        .env("PGPASSWORD", &pg.password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong password is refused.
    let bad = Postgres {
        password: "wrong".into(),
        ..pg.clone()
    };
    let err = bad.psql("postgres", "SELECT 1").unwrap_err();
    assert!(err.contains("password authentication failed"), "{err}");
    // Dropping the guard drops the database and the slot made in it.
    drop(temp);
    let left = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = '{db}' \
                 UNION ALL SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ),
        )
        .unwrap();
    assert_eq!(left.trim(), "0\n0");
}

#[test]
fn mariadb_has_a_row_binlog_and_a_replication_user() {
    let m = require!(mariadb());
    let vars = m
        .sql("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
        .unwrap();
    assert_eq!(vars.trim(), "1\tROW\tFULL\t1");
    let db = m.create_database(&unique_name("tk")).unwrap();
    let before = m.sql("SHOW MASTER STATUS").unwrap();
    m.sql(&format!(
        "CREATE TABLE `{db}`.t (id int PRIMARY KEY, v text); INSERT INTO `{db}`.t VALUES (1,'a')"
    ))
    .unwrap();
    // The replication user reads the binlog position over TCP with its password.
    let repl = MariaDb {
        user: m.repl_user.clone(),
        password: m.repl_password.clone(),
        ..m.clone()
    };
    let after = repl.sql("SHOW MASTER STATUS").unwrap();
    assert_ne!(before, after, "binlog position moved");
    let events = repl.sql("SHOW BINLOG EVENTS").unwrap();
    assert!(events.contains("Write_rows"), "{events}");
    let bad = MariaDb {
        password: "wrong".into(),
        ..m.clone()
    };
    assert!(bad.sql("SELECT 1").unwrap_err().contains("Access denied"));
    m.sql(&format!("DROP DATABASE `{db}`")).unwrap();
}

#[test]
fn tansu_speaks_kafka() {
    let t = require!(tansu());
    assert!(kafka_api_versions(t.port).unwrap() > 10);
    let topic = unique_name("tk");
    let broker = format!("tcp://{}", t.bootstrap());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&t.binary)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "topic",
        "create",
        &topic,
        "--broker",
        &broker,
        "--partitions",
        "2",
    ]);
    let list = run(&["topic", "list", "--broker", &broker]);
    assert!(list.contains(&topic), "{list}");
}

#[test]
fn s3_checks_signatures_and_stores_objects() {
    let s3 = require!(s3());
    let bucket = s3.create_bucket(&unique_name("tk")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, b"hello rivven\n").unwrap();
    let (code, _) = s3
        .curl(
            "PUT",
            &format!("/{bucket}/a/b.txt"),
            Some(&body),
            &s3.secret_key,
        )
        .unwrap();
    assert_eq!(code, 200);
    let (code, got) = s3
        .curl("GET", &format!("/{bucket}/a/b.txt"), None, &s3.secret_key)
        .unwrap();
    assert_eq!((code, got.as_str()), (200, "hello rivven\n"));
    assert_eq!(
        std::fs::read(s3.root.join(&bucket).join("a/b.txt")).unwrap(),
        b"hello rivven\n"
    );
    let (code, body) = s3
        .curl("GET", &format!("/{bucket}/a/b.txt"), None, "not-the-secret")
        .unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");
}

#[test]
fn mosquitto_routes_a_message() {
    let m = require!(mosquitto());
    let mut sub = mqtt_connect(m.port).unwrap();
    let topic = unique_name("tk");
    // SUBSCRIBE packet id 1, QoS 0.
    let mut p = vec![0, 1];
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p.push(0);
    sub.write_all(&[0x82, p.len() as u8]).unwrap();
    sub.write_all(&p).unwrap();
    let mut suback = [0u8; 5];
    sub.read_exact(&mut suback).unwrap();
    assert_eq!(suback, [0x90, 3, 0, 1, 0]);
    let mut publ = mqtt_connect(m.port).unwrap();
    let mut p = Vec::new();
    p.extend((topic.len() as u16).to_be_bytes());
    p.extend(topic.as_bytes());
    p.extend(b"payload");
    publ.write_all(&[0x30, p.len() as u8]).unwrap();
    publ.write_all(&p).unwrap();
    let mut got = vec![0u8; 2 + p.len()];
    sub.read_exact(&mut got).unwrap();
    assert_eq!(got[0], 0x30);
    assert!(got.ends_with(b"payload"));
}

#[test]
fn nats_has_jetstream_and_routes_a_message() {
    let n = require!(nats());
    let info = nats_info(n.port).unwrap();
    assert_eq!(info["jetstream"], serde_json::Value::Bool(true), "{info}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let subject = unique_name("tk");
    write!(
        s,
        "CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPUB {subject} 5\r\nhello\r\nPING\r\n"
    )
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 512];
    while !got.contains("hello") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        got.contains(&format!("MSG {subject} 1 5\r\nhello")),
        "{got}"
    );
}

#[test]
fn python_readers_import_and_read_parquet() {
    let py = require!(python());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let out = py
        .run(
            "import sys, pyarrow as pa, pyarrow.parquet as pq, duckdb
pq.write_table(pa.table({'x': [1, 2, 3]}), sys.argv[1])
print(duckdb.sql(f\"select sum(x) from '{sys.argv[1]}'\").fetchall()[0][0])",
            &[path.to_str().unwrap()],
        )
        .unwrap();
    assert_eq!(out.trim(), "6");
}

#[test]
fn unavailable_names_the_service() {
    let e = Unavailable::new("tansu", "tansu not found");
    assert!(e
        .to_string()
        .starts_with("service tansu unavailable: tansu not found"));
    assert_eq!(
        Service::ALL.map(|s| Service::from_name(s.name())),
        Service::ALL.map(Some)
    );
}
