//! Secret redaction for everything the process prints.
//!
//! Values substituted into the configuration from the environment (`${VAR}`) are registered
//! here when the config is loaded; [`scrub`] replaces each of them with the placeholder
//! `${VAR}` in any text. Error messages are scrubbed when displayed, and `check`, `status`
//! and the logs print errors only through their `Display`. Secret-typed config fields
//! ([`crate::secret::SecretString`]) never print their value at all.

use std::sync::RwLock;

static SECRETS: RwLock<Vec<(String, String)>> = RwLock::new(Vec::new());

/// Minimum length of a non-secret-named substituted value that is redacted. Shorter values
/// (`1`, `on`) would garble unrelated text; variables whose name says they hold a secret
/// are redacted at any length.
const MIN_LEN: usize = 4;

fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "AUTH",
    ]
    .iter()
    .any(|w| upper.contains(w))
}

/// Register a substituted value so that it is never printed.
pub fn register(var_name: &str, value: &str) {
    if value.is_empty() || (value.len() < MIN_LEN && !secret_name(var_name)) {
        return;
    }
    if let Ok(mut secrets) = SECRETS.write() {
        if !secrets.iter().any(|(_, v)| v == value) {
            secrets.push((value.to_owned(), format!("${{{var_name}}}")));
            // Longest first, so that a value containing another is replaced whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        }
    }
}

/// Replace every registered value in `text` with its `${VAR}` placeholder.
pub fn scrub(text: &str) -> String {
    let Ok(secrets) = SECRETS.read() else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    for (value, placeholder) in secrets.iter() {
        if out.contains(value.as_str()) {
            out = out.replace(value.as_str(), placeholder);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_registered_values() {
        register("PG_PASSWORD", "pw");
        register("HOST", "db.internal.example");
        register("N", "1");
        assert_eq!(
            scrub("password pw rejected"),
            "password ${PG_PASSWORD} rejected"
        );
        assert_eq!(
            scrub("cannot reach db.internal.example:65000"),
            "cannot reach ${HOST}:65000"
        );
        assert_eq!(scrub("retry 1 of 3"), "retry 1 of 3");
    }
}
