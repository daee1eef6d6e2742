//! How a service is found, started privately and stopped: binary lookup, temp dirs,
//! spawning with a readiness check, and small process helpers.

use super::service::Service;
use crate::process::{self};
use crate::{cache_dir, Unavailable};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a service may take to become ready.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Find a service binary: the override variable, then the tools cache, `PATH`, sbin dirs.
pub(super) fn find_binary(service: Service, names: &[&str]) -> Result<PathBuf, Unavailable> {
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
pub(super) fn service_dir(service: Service) -> Result<PathBuf, Unavailable> {
    tempfile::Builder::new()
        .prefix(&format!("rivven-{}-", service.name()))
        .tempdir()
        .map(|d| d.keep())
        .map_err(|e| Unavailable::new(service.name(), format!("temp dir: {e}")))
}

pub(super) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Spawn a service with stdout/stderr to `<dir>/log`, and wait until `ready` holds.
pub(super) fn launch(
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

pub(super) fn run(cmd: &mut Command) -> Result<String, String> {
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

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid() == 0
    }
}

/// uid and gid of a local user, from /etc/passwd.
pub(super) fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

pub(super) fn random_secret() -> String {
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
