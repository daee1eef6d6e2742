//! `rivven-services up --file services.json [--only postgres,tansu]`
//!
//! Starts the test services privately on loopback, writes how to reach them to `--file`
//! (the file tests find through `RIVVEN_TEST_SERVICES`), then waits for SIGINT or SIGTERM
//! and stops every service it started (also once `--watch-pid`'s process is gone). With
//! `CI=true`, a service that cannot start is a failure: the command names it and exits 1.
//! `rivven-services list` prints the service names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rivven_testkit::{in_ci, Service, ServiceFile};
use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: rivven-services up --file PATH [--only NAME,...] [--watch-pid PID] | rivven-services list");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for s in Service::ALL {
                println!("{:10} binary override: {}", s.name(), s.binary_env());
            }
            ExitCode::SUCCESS
        }
        Some("up") => up(&args[1..]),
        _ => usage(),
    }
}

fn up(args: &[String]) -> ExitCode {
    let mut file = None;
    let mut watch = None;
    let mut only: Vec<Service> = Service::ALL.to_vec();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--file" => file = it.next().map(PathBuf::from),
            "--watch-pid" => match it.next().and_then(|p| p.parse::<i32>().ok()) {
                Some(pid) => watch = Some(pid),
                None => return usage(),
            },
            "--only" => {
                let Some(list) = it.next() else {
                    return usage();
                };
                only.clear();
                for name in list.split(',').filter(|n| !n.is_empty()) {
                    match Service::from_name(name) {
                        Some(s) => only.push(s),
                        None => {
                            eprintln!("unknown service {name:?}");
                            return usage();
                        }
                    }
                }
            }
            _ => return usage(),
        }
    }
    let Some(file) = file else { return usage() };

    // Block the stop signals before any thread exists, so that sigwait below receives
    // them. Children get a clean signal mask from std's spawn.
    let set = stop_signals();

    let started = std::time::Instant::now();
    let services = ServiceFile::start(&only);
    for u in &services.unavailable {
        eprintln!("{u}");
    }
    if in_ci() && !services.unavailable.is_empty() {
        eprintln!(
            "CI=true: {} service(s) unavailable: {}",
            services.unavailable.len(),
            services
                .unavailable
                .iter()
                .map(|u| u.service.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        rivven_testkit::stop_all();
        return ExitCode::from(1);
    }
    let json = serde_json::to_vec_pretty(&services).expect("serialize");
    let tmp = file.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, &file)) {
        eprintln!("writing {}: {e}", file.display());
        rivven_testkit::stop_all();
        return ExitCode::from(1);
    }
    let up: Vec<&str> = only
        .iter()
        .map(|s| s.name())
        .filter(|n| !services.unavailable.iter().any(|u| u.service == *n))
        .collect();
    eprintln!(
        "rivven-services: {} up in {:.1}s; details in {}",
        up.join(", "),
        started.elapsed().as_secs_f64(),
        file.display()
    );
    if let Some(pid) = watch {
        watch_pid(pid);
    }
    let sig = wait(&set);
    eprintln!("rivven-services: signal {sig}, stopping");
    rivven_testkit::stop_all();
    let _ = std::fs::remove_file(&file);
    ExitCode::SUCCESS
}

/// Stop (as if by SIGTERM) once process `pid` is gone, so that a killed test script does
/// not leave services behind.
#[allow(unsafe_code)]
fn watch_pid(pid: i32) {
    std::thread::spawn(move || loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            // SAFETY: raising SIGTERM at ourselves; it is blocked and taken by sigwait.
            unsafe {
                libc::kill(std::process::id() as i32, libc::SIGTERM);
            }
            return;
        }
    });
}

#[allow(unsafe_code)]
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zero-initialised set; pthread_sigmask on
    // the calling (main) thread before any other thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

#[allow(unsafe_code)]
fn wait(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was initialised by stop_signals and its signals are blocked.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
    sig
}
