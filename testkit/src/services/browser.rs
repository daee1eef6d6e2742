//! A headless browser for page tests: Debian's Chromium (`/usr/bin/chromium`), driven by
//! `playwright-core` from npm (in `$RIVVEN_CACHE/tools/npm`) on the machine's Node.js.
//! Playwright never downloads a browser here: scripts launch it with
//! `executablePath` set to [`Browser::chromium`].

use super::launch::{is_executable, run};
use super::service::Service;
use crate::{cache_dir, Unavailable};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

/// Node.js, the `node_modules` holding `playwright-core`, and Chromium.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Browser {
    pub node: PathBuf,
    pub node_modules: PathBuf,
    pub chromium: PathBuf,
}

impl Browser {
    pub fn find() -> Result<Browser, Unavailable> {
        let svc = Service::Browser;
        let chromium = match std::env::var_os(svc.binary_env()) {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from("/usr/bin/chromium"),
        };
        if !is_executable(&chromium) {
            return Err(Unavailable::new(
                svc.name(),
                format!(
                    "{} not found (Debian package chromium, or set {})",
                    chromium.display(),
                    svc.binary_env()
                ),
            ));
        }
        let node_modules = cache_dir().join("tools/npm/node_modules");
        if !node_modules.join("playwright-core").is_dir() {
            return Err(Unavailable::new(
                svc.name(),
                format!("{} has no playwright-core", node_modules.display()),
            ));
        }
        let b = Browser {
            node: PathBuf::from("node"),
            node_modules,
            chromium,
        };
        b.run("require('playwright-core')", &[])
            .map_err(|e| Unavailable::new(svc.name(), e))?;
        Ok(b)
    }

    /// Run a Node.js script (`-e`) with arguments, `playwright-core` importable and the
    /// Chromium path in `$CHROMIUM`; returns stdout.
    pub fn run(&self, script: &str, args: &[&str]) -> Result<String, String> {
        run(Command::new(&self.node)
            .arg("-e")
            .arg(script)
            .arg("--")
            .args(args)
            .env("NODE_PATH", &self.node_modules)
            .env("CHROMIUM", &self.chromium))
    }
}
