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

/// Values at least this long are replaced wherever they occur; shorter ones only where
/// they stand alone (see [`scrub`]), so that a one-letter password does not garble every
/// word containing that letter.
const ANYWHERE_LEN: usize = 8;

/// Whether `c` can delimit a value that a message quotes or embeds: whitespace, quotes,
/// brackets, escapes and the separators of URLs, connection strings, lists and shell text.
fn delimiter(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\''
                | '`'
                | ','
                | ';'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '<'
                | '>'
                | '='
                | ':'
                | '@'
                | '/'
                | '&'
                | '?'
                | '|'
                | '+'
                | '%'
                | '#'
                | '!'
                | '*'
                | '$'
                | '\\'
                | '~'
                | '^'
        )
}

/// Whether the text after a value ends it: the end of the text, a [`delimiter`], or a
/// full stop that ends a sentence (followed by whitespace or the end of the text). A dot
/// followed by more text (`p.yaml`, `db.example`) does not end a value.
fn ends_value(after: &str) -> bool {
    let mut chars = after.chars();
    match chars.next() {
        None => true,
        Some('.') => chars.next().is_none_or(char::is_whitespace),
        Some(c) => delimiter(c),
    }
}

/// Replace every registered value in `text` with its `${VAR}` placeholder. A value shorter
/// than eight characters is replaced only where it stands alone: at the start or end of the
/// text or next to a [`delimiter`] on both sides (`password "pw"`, `user:pw@host`,
/// `password=pw;`, `was pw.`). Text that merely contains those letters (`postgres-cdc`, `p.yaml`) is
/// left alone.
pub fn scrub(text: &str) -> String {
    let Ok(secrets) = SECRETS.read() else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    for (value, placeholder) in secrets.iter() {
        if !out.contains(value.as_str()) {
            continue;
        }
        if value.len() >= ANYWHERE_LEN {
            out = out.replace(value.as_str(), placeholder);
            continue;
        }
        let mut next = String::with_capacity(out.len());
        let mut rest = 0;
        for (at, _) in out.match_indices(value.as_str()) {
            if at < rest {
                continue; // overlaps a replaced occurrence
            }
            let end = at + value.len();
            let before = out[..at].chars().next_back().is_none_or(delimiter);
            let after = ends_value(&out[end..]);
            if before && after {
                next.push_str(&out[rest..at]);
                next.push_str(placeholder);
                rest = end;
            }
        }
        next.push_str(&out[rest..]);
        out = next;
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

    #[test]
    fn short_secrets_do_not_garble_other_text() {
        register("KAFKA_PASSWORD", "p");
        register("API_TOKEN", "ab");
        // Text that only contains the letters is left exactly as it was.
        for text in [
            "unknown source connector `x`; available: datagen, postgres-cdc",
            "p.yaml:3:5: sources.pg.config.port: must be 1-65535, got 0",
            "tables: abc, tab, crab; apple",
        ] {
            assert_eq!(scrub(text), text);
        }
        // Where a value stands alone, it never appears.
        assert_eq!(
            scrub("invalid type: string \"p\", expected u16"),
            "invalid type: string \"${KAFKA_PASSWORD}\", expected u16"
        );
        assert_eq!(
            scrub("postgres://u:p@db/x?token=ab"),
            "postgres://u:${KAFKA_PASSWORD}@db/x?token=${API_TOKEN}"
        );
        assert_eq!(scrub("ab"), "${API_TOKEN}");
        assert_eq!(
            scrub("password=p; ab ab"),
            "password=${KAFKA_PASSWORD}; ${API_TOKEN} ${API_TOKEN}"
        );
        assert_eq!(
            scrub("auth failed for p. Retry with ab!"),
            "auth failed for ${KAFKA_PASSWORD}. Retry with ${API_TOKEN}!"
        );
        assert_eq!(scrub("x+p%20ab#"), "x+${KAFKA_PASSWORD}%20ab#");
        assert_eq!(scrub("\\ab\\ $ab"), "\\${API_TOKEN}\\ $${API_TOKEN}");
        // Long values go wherever they appear, even inside other text.
        register("DB_PASSWORD", "hunter2hunter2");
        assert_eq!(scrub("xhunter2hunter2y"), "x${DB_PASSWORD}y");
    }
}
