//! Test certificates: a CA and a server certificate signed by it, made with the openssl
//! CLI (installed by `scripts/install-tools.sh`).

use super::launch::run;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Make a CA and a server certificate for `san` (`DNS:localhost`, `IP:127.0.0.1`) signed
/// by it, in `dir`, with the openssl CLI; returns (CA cert, server cert, server key).
pub fn make_certs(dir: &Path, san: &str) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let openssl =
        |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir)).map(|_| ());
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
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
        "/CN=rivven-test-server",
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
