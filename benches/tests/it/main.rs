//! The runner works end to end on a small input: every scenario writes a report whose
//! figures are consistent (rows and bytes as run, a measured limit and its ratio). No
//! timing is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn every_scenario_writes_a_consistent_report() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_rivven-bench"))
        .args([
            "run",
            "--rows",
            "30000",
            "--batch-rows",
            "4096",
            "--fsync",
            "never",
        ])
        .arg("--out")
        .arg(out.path())
        .arg("--dir")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for scenario in [
        "log-append-read",
        "datagen-topic-null",
        "transform-chain",
        "object-storage-parquet",
    ] {
        let path = out.path().join(format!("{scenario}.json"));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(r["scenario"], scenario);
        assert_eq!(r["params"]["rows"], 30000);
        let figures = r["figures"].as_array().unwrap();
        assert!(!figures.is_empty());
        for f in figures {
            assert_eq!(f["rows"], 30000, "{f}");
            assert!(f["bytes"].as_u64().unwrap() > 30000, "{f}");
            assert!(f["seconds"].as_f64().unwrap() > 0.0, "{f}");
            if !f["limit"].is_null() {
                let ratio = f["ratio_to_limit"].as_f64().unwrap();
                let expect =
                    f["mib_per_s"].as_f64().unwrap() / f["limit"]["mib_per_s"].as_f64().unwrap();
                assert!((ratio - expect).abs() <= 0.01 * expect.max(1.0), "{f}");
            }
        }
    }
    // An unknown scenario is an error that names it.
    let bad = Command::new(env!("CARGO_BIN_EXE_rivven-bench"))
        .args(["run", "no-such-scenario", "--rows", "10"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no-such-scenario"));
}
