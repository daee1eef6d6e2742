//! The CLI as a new user meets it.

use crate::support::*;
use std::process::Command;

const GEN_TO_STDOUT: &str = "sources:
  gen:
    connector: datagen
    topic: events
    config: {pattern: users, events_per_second: 0, max_events: 300, seed: 1}
sinks:
  out:
    connector: stdout
    topics: [events]
    consumer_group: out
    start_offset: earliest
    config: {format: json}
";

#[test]
fn init_check_run_streams_through_the_embedded_topic() {
    let dir = tempfile::tempdir().unwrap();
    let init = Command::new(bin()).arg("init").output().unwrap();
    assert!(init.status.success());
    let cfg = dir.path().join("p.yaml");
    std::fs::write(&cfg, &init.stdout).unwrap();
    let env = [
        (
            "RIVVEN_STATE_DIR",
            dir.path().join("state").display().to_string(),
        ),
        ("RIVVEN_HEALTH_PORT", free_port().to_string()),
        ("RIVVEN_METRICS_PORT", free_port().to_string()),
    ];
    // `-c` before the subcommand works as well as after it.
    let check = Command::new(bin())
        .args(["-c"])
        .arg(&cfg)
        .arg("check")
        .envs(env.clone())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        stdout(&check),
        stderr(&check)
    );
    assert!(stdout(&check).contains("source demo (datagen)"));
    let run = Command::new(bin())
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .envs(env)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let lines: Vec<serde_json::Value> = stdout(&run)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["sequence"], i as i64);
        assert_eq!(l["order_id"], i as i64);
    }
}

#[test]
fn rerun_continues_instead_of_starting_over() {
    let p = Pipeline::new(&GEN_TO_STDOUT.replace("max_events: 300", "max_events: 100"));
    let first = p.cmd(&["run"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(stdout(&first).lines().count(), 100);
    // Raise the limit: the source continues at 100, the group continues at its offset.
    let cfg = std::fs::read_to_string(p.config())
        .unwrap()
        .replace("max_events: 100", "max_events: 150");
    std::fs::write(p.config(), cfg).unwrap();
    let second = p.cmd(&["run"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let seqs: Vec<i64> = stdout(&second)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sequence"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (100..150).collect::<Vec<_>>());
}

#[test]
fn misspelled_key_names_path_and_line() {
    let p = Pipeline::new(&GEN_TO_STDOUT.replace("consumer_group: out", "consumer_grup: out"));
    let o = p.cmd(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(":11:5: sinks.out.consumer_grup: unknown field `consumer_grup`"),
        "{err}"
    );

    let p = Pipeline::new(&GEN_TO_STDOUT.replace("pattern: users", "patern: users"));
    let err = stderr(&p.cmd(&["check"]));
    assert!(
        err.contains(":6:14: sources.gen.config.patern: unknown field `patern`"),
        "{err}"
    );

    let p = Pipeline::new(&GEN_TO_STDOUT.replace("pattern: users", "pattern: people"));
    let err = stderr(&p.cmd(&["check"]));
    assert!(
        err.contains("sources.gen.config.pattern: unknown variant `people`"),
        "{err}"
    );

    let p = Pipeline::new(&GEN_TO_STDOUT.replace("connector: stdout", "connector: stdot"));
    let err = stderr(&p.cmd(&["check"]));
    assert!(
        // (`delta-lake` and `iceberg` are listed too in builds with the `lakehouse`
        // feature.)
        err.contains(
            "sinks.out.connector: unknown sink connector `stdot`; available: azure-blob, "
        ) && err.contains("gcs, ")
            && err.contains("object-storage, s3, stdout"),
        "{err}"
    );
}

#[test]
fn missing_variable_is_named_and_secrets_never_print() {
    let p = Pipeline::new(&GEN_TO_STDOUT.replace("topic: events", "topic: ${EVENTS_TOPIC}"));
    let o = p.cmd(&["check"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`EVENTS_TOPIC`"), "{}", stderr(&o));

    // A secret that ends up somewhere invalid is reported by its variable, not its value.
    let p = Pipeline::with_settings(GEN_TO_STDOUT, "  commit_interval_ms: ${DB_PASSWORD}\n");
    let o = Command::new(bin())
        .args(["check", "-c"])
        .arg(p.config())
        .env("DB_PASSWORD", "hunter2-very-secret")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(!all.contains("hunter2-very-secret"), "{all}");
    assert!(
        all.contains("settings.commit_interval_ms") && all.contains("${DB_PASSWORD}"),
        "{all}"
    );
}

#[test]
fn unsupported_sections_are_rejected_not_ignored() {
    let p = Pipeline::new(&format!(
        "broker:\n  bootstrap_servers: [\"127.0.0.1:9092\"]\n{GEN_TO_STDOUT}"
    ));
    let err = stderr(&p.cmd(&["check"]));
    assert!(
        err.contains(":2:1: broker: the Kafka-protocol broker backend is not available"),
        "{err}"
    );
}

#[test]
fn spec_and_discover() {
    let o = Command::new(bin()).arg("spec").output().unwrap();
    let out = stdout(&o);
    assert!(
        out.contains("utility:") && out.contains("datagen") && out.contains("stdout"),
        "{out}"
    );
    let o = Command::new(bin())
        .args(["spec", "datagen"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "source");
    assert!(v["config"]["properties"]["cdc_mode"].is_object(), "{v}");
    let o = Command::new(bin()).args(["spec", "nope"]).output().unwrap();
    assert!(!o.status.success());

    let p = Pipeline::new(
        &GEN_TO_STDOUT.replace("seed: 1}", "seed: 1, cdc_mode: true, namespace: app}"),
    );
    let o = p.cmd(&["discover", "gen"]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.starts_with("app.datagen\n"), "{out}");
    assert!(
        out.contains("  op ") && out.contains("  after ") && out.contains("\"email\": Utf8"),
        "{out}"
    );
}

#[test]
fn status_reports_a_running_pipeline() {
    let p = Pipeline::new(
        &GEN_TO_STDOUT
            .replace("max_events: 300", "max_events: 0")
            .replace("events_per_second: 0", "events_per_second: 200"),
    );
    let out = p.dir.path().join("out.jsonl");
    let mut child = p.spawn_run(&out);
    let mut report = None;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let o = p.cmd(&["status", "--json"]);
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let running = v["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["state"] == "running");
            if running && v["pipelines"][0]["events"].as_u64().unwrap_or(0) > 0 {
                report = Some(v);
                break;
            }
        }
    }
    let table = stdout(&p.cmd(&["status"]));
    let metrics = {
        let o = Command::new("curl")
            .args([
                "-sf",
                &format!("http://127.0.0.1:{}/metrics", p.health_port),
            ])
            .output();
        o.map(|o| stdout(&o)).unwrap_or_default()
    };
    // Readiness: every pipeline running and healthy.
    let ready = Command::new("curl")
        .args([
            "-s",
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{}/ready", p.health_port),
        ])
        .output()
        .map(|o| stdout(&o))
        .unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();
    let v = report.expect("status never showed both pipelines running with events");
    let names: Vec<&str> = v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gen", "out"]);
    assert!(
        table.contains("gen") && table.contains("running"),
        "{table}"
    );
    if !metrics.is_empty() {
        assert!(
            metrics.contains("rivven_connect_events_total{connector=\"datagen\",kind=\"source\",pipeline=\"gen\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("rivven_connect_pipeline_healthy{connector=\"datagen\",kind=\"source\",pipeline=\"gen\"}"),
            "{metrics}"
        );
        for histogram in [
            "rivven_connect_batch_rows_bucket{connector=\"datagen\",kind=\"source\",pipeline=\"gen\"",
            "rivven_connect_sink_flush_duration_seconds_count{connector=\"stdout\",pipeline=\"out\"}",
        ] {
            assert!(metrics.contains(histogram), "{histogram}: {metrics}");
        }
        assert_eq!(ready, "{\"status\":\"ready\"} 200");
    }
}
