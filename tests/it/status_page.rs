//! The status page at `/` of a running postgres-cdc pipeline, in headless Chromium (Debian's
//! package, driven by playwright-core): the pipeline's name, state, snapshot progress bar
//! and throughput sparkline are shown, and the event count rises while rows are inserted. The screenshot is kept
//! at `target/tmp/status-page.png`.

use crate::postgres::items_pipeline;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const PAGE_CLIENT: &str = r##"
const { chromium } = require("playwright-core");
const [url, shot] = process.argv.slice(-2);
(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 420 } });
    const deadline = Date.now() + 60000;
    for (;;) {
      try { await page.goto(url); break; } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise(r => setTimeout(r, 300));
      }
    }
    const row = 'tr.pipeline[data-pipeline="pg"]';
    await page.waitForSelector(`${row} td.state`, { timeout: 60000 });
    await page.waitForSelector('progress[data-table="public.items"]', { timeout: 60000 });
    const events = () => page.$eval(`${row} td.events`, e => Number(e.dataset.value));
    await page.waitForFunction(r => Number(document.querySelector(`${r} td.events`).dataset.value) > 0, row, { timeout: 60000 });
    const first = await events();
    await page.waitForFunction(([r, n]) => Number(document.querySelector(`${r} td.events`).dataset.value) > n,
                               [row, first], { timeout: 60000 });
    const second = await events();
    // The sparkline needs three samples (two intervals of 2 s).
    await page.waitForSelector(`${row} svg.spark polyline`, { timeout: 60000 });
    const bar = await page.$eval('progress[data-table="public.items"]', e => ({ value: e.value, max: e.max }));
    const out = {
      title: await page.title(),
      name: await page.$eval(`${row} td.name strong`, e => e.textContent),
      state: await page.$eval(`${row} td.state`, e => e.textContent),
      progress_label: await page.$eval('.progress label', e => e.textContent),
      progress_text: await page.$eval('.progress .count', e => e.textContent),
      bar, events: [first, second],
      live: await page.$eval("#conn", e => e.textContent),
      spark_points: await page.$eval(`${row} svg.spark polyline`, e => e.getAttribute("points").split(" ").length),
    };
    await page.screenshot({ path: shot, fullPage: true });
    console.log(JSON.stringify(out));
  } finally {
    await browser.close();
  }
})().catch(e => { console.error(e); process.exit(1); });
"##;

#[test]
fn status_page_shows_a_running_pipeline_live() {
    let browser = rivven_testkit::require!(rivven_testkit::browser());
    let Some((temp, p)) = items_pipeline("page", 50000, "") else {
        return;
    };
    let (pg, db) = (&temp.pg, temp.name.as_str());
    let mut child = p.spawn_run(&p.dir.path().join("run.out"));
    // Rows keep coming while the page watches.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, pg, db) = (stop.clone(), pg.clone(), db.to_string());
        std::thread::spawn(move || {
            let mut id = 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let sql = format!(
                    "INSERT INTO items SELECT g, 'w' FROM generate_series({id}, {}) g",
                    id + 49
                );
                pg.psql(&db, &sql).unwrap();
                id += 50;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    };
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://127.0.0.1:{}/", p.health_port);
    let result = browser.run(PAGE_CLIENT, &[&url, &shot.to_string_lossy()]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let got: serde_json::Value = serde_json::from_str(result.unwrap().trim()).unwrap();
    assert_eq!(got["title"], "rivven-connect status", "{got}");
    assert_eq!(got["name"], "pg", "{got}");
    assert_eq!(got["state"], "running", "{got}");
    assert_eq!(got["live"], "live", "{got}");
    assert_eq!(got["progress_label"], "public.items", "{got}");
    assert!(got["bar"]["max"].as_f64().unwrap() > 0.0, "{got}");
    assert!(got["bar"]["value"].as_f64().unwrap() > 0.0, "{got}");
    let events = got["events"].as_array().unwrap();
    assert!(events[1].as_u64() > events[0].as_u64(), "{got}");
    assert!(got["spark_points"].as_u64().unwrap() >= 2, "{got}");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        shot.display()
    );
    eprintln!("status page screenshot: {}", shot.display());
}

/// On a terminal (`script` gives `run` a pseudo-terminal), `run` draws a progress bar per
/// snapshot table on standard error; with standard error a file it draws nothing.
#[test]
fn run_draws_snapshot_progress_bars_on_a_terminal_only() {
    let Some((_temp, p)) = items_pipeline("bars", 100000, "") else {
        return;
    };
    // Until the snapshot is done, then SIGINT for a graceful stop.
    let command = format!(
        "{} run -c {} & pid=$!; \
         until curl -sf http://127.0.0.1:{}/status | grep -q '\"finished\":true'; do sleep 0.2; done; \
         sleep 1; kill -INT $pid; wait $pid",
        crate::support::bin(),
        p.config().display(),
        p.health_port
    );
    let tty = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let drawn = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{drawn}");
    assert!(drawn.contains("pg public.items"), "{drawn}");
    assert!(
        drawn.contains("rows (100%)") && drawn.contains("done"),
        "{drawn}"
    );
    // The same run with standard error a file: log lines only.
    let log = p.dir.path().join("plain.out");
    let mut child = p.spawn_run(&log);
    std::thread::sleep(std::time::Duration::from_secs(3));
    child.kill().unwrap();
    child.wait().unwrap();
    let plain = std::fs::read_to_string(&log).unwrap();
    assert!(!plain.contains("pg public.items ["), "{plain}");
}
