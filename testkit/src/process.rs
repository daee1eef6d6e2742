//! Child processes that cannot outlive the process that started them.
//!
//! Each service process is registered with its PID, its stop signal and its temp dir.
//! [`stop_all`] (also run from an `atexit` hook) signals each one, waits up to ten
//! seconds, then SIGKILLs it and removes its dir. Processes are spawned from one
//! long-lived thread with `PR_SET_PDEATHSIG(SIGKILL)`: the kernel ties that signal to the
//! spawning *thread*, so spawning from a short-lived test thread would kill the service
//! when that test ends.
#![allow(unsafe_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Wait until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

struct Registered {
    name: String,
    child: Child,
    stop_signal: i32,
    dir: Option<PathBuf>,
}

fn registry() -> &'static Mutex<Vec<Registered>> {
    static R: OnceLock<Mutex<Vec<Registered>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Vec::new()))
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static S: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("rivven-testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static, so this thread never ends.
            })
            .expect("spawn the spawner thread");
        Mutex::new(tx)
    })
}

extern "C" fn stop_all_at_exit() {
    stop_all();
}

/// Spawn `cmd` as a managed service process. `dir` (if any) is removed when it stops.
pub(crate) fn spawn(
    name: &str,
    mut cmd: Command,
    stop_signal: i32,
    dir: Option<PathBuf>,
) -> std::io::Result<u32> {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no captured state.
        unsafe {
            libc::atexit(stop_all_at_exit);
        }
    });
    let parent = std::process::id() as i32;
    // SAFETY: the closure calls only async-signal-safe functions (sigemptyset,
    // pthread_sigmask, prctl, getppid, _exit) between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // A clean signal mask: the parent may block its stop signals (rivven-services
            // takes them with sigwait), and a child inheriting that could not be stopped.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(1); // the parent died before prctl took effect
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap()
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    let child = rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))??;
    let pid = child.id();
    registry().lock().unwrap().push(Registered {
        name: name.to_string(),
        child,
        stop_signal,
        dir,
    });
    Ok(pid)
}

/// Whether the managed process `pid` is still running.
pub(crate) fn is_running(pid: u32) -> bool {
    let mut reg = registry().lock().unwrap();
    match reg.iter_mut().find(|r| r.child.id() == pid) {
        Some(r) => matches!(r.child.try_wait(), Ok(None)),
        None => false,
    }
}

/// Stop every managed process (signal, wait up to 10 s, SIGKILL) and remove its dir.
pub fn stop_all() {
    let Ok(mut reg) = registry().lock() else {
        return;
    };
    for r in reg.iter() {
        // SAFETY: plain kill(2) on a PID we spawned and have not reaped.
        unsafe {
            libc::kill(r.child.id() as i32, r.stop_signal);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for mut r in reg.drain(..) {
        loop {
            match r.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("rivven-testkit: {} did not stop in 10s; SIGKILL", r.name);
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Some(dir) = r.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
