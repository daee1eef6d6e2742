//! `${VAR}` and `${VAR:-default}` substitution in the raw configuration text.
//!
//! Substitution happens on the text, before YAML parsing, so a variable can supply any value
//! (a number for a port, a list in flow style). `$${` escapes a literal `${`. To keep an
//! arbitrary value (a password with `: ` or `#`) from changing the YAML structure, a value
//! is inserted according to where the placeholder stands:
//! - inside a double-quoted scalar: `"` and `\` are escaped;
//! - inside a single-quoted scalar: `'` is doubled;
//! - as a whole plain scalar (`key: ${VAR}`): written as a double-quoted string when it
//!   would not read back as the same plain scalar, else as is (so `${PORT}` stays a number).
//!
//! A value containing a line break is rejected: it would shift every position reported in
//! later errors. Every substituted value is registered with [`crate::redact`].

use std::collections::BTreeSet;

/// The result of substitution.
#[derive(Debug)]
pub struct Substituted {
    /// The text with every placeholder replaced.
    pub text: String,
    /// For each line (0-based), the column shifts made on it, to map columns of `text` back
    /// to the file: `(column in text where the edit ends, delta)`.
    edits: Vec<Vec<(usize, isize)>>,
}

impl Substituted {
    /// Map a 1-based column of the substituted text back to the original file.
    pub fn original_column(&self, line: usize, col: usize) -> usize {
        let Some(edits) = line.checked_sub(1).and_then(|l| self.edits.get(l)) else {
            return col;
        };
        let shift: isize = edits
            .iter()
            .filter(|(end, _)| *end <= col)
            .map(|(_, d)| d)
            .sum();
        (col as isize - shift).max(1) as usize
    }
}

/// A substitution failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstError {
    /// Variables without a default that are not set (sorted, deduplicated).
    Unset {
        names: Vec<String>,
        first_line: usize,
    },
    /// A placeholder that is not closed or has an invalid name.
    Malformed {
        line: usize,
        column: usize,
        text: String,
    },
    /// A value with a line break.
    Multiline { name: String, line: usize },
}

impl std::fmt::Display for SubstError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubstError::Unset { names, first_line } => {
                let list = names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "line {first_line}: environment variable{} {list} not set and without a default (write ${{NAME:-default}} to give one)",
                    if names.len() > 1 { "s" } else { "" },
                )
            }
            SubstError::Malformed { line, column, text } => {
                write!(f, "line {line}, column {column}: malformed placeholder `{text}`: expected ${{NAME}} or ${{NAME:-default}}")
            }
            SubstError::Multiline { name, line } => {
                write!(f, "line {line}: environment variable `{name}` contains a line break; such values cannot be substituted")
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Substitute placeholders, reading variables through `lookup`.
pub fn substitute(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Substituted, SubstError> {
    let mut out = String::with_capacity(input.len());
    let mut edits = Vec::new();
    let mut unset = BTreeSet::new();
    let mut first_unset_line = 0;
    // YAML quoted scalars may span lines; keep the quote state across them.
    let mut quote = Quote::None;
    for (line_idx, line) in input.split_inclusive('\n').enumerate() {
        let mut line_edits = Vec::new();
        let mut out_line = String::with_capacity(line.len());
        let bytes = line.as_bytes();
        let mut i = 0;
        let mut in_comment = false;
        while i < bytes.len() {
            let c = bytes[i];
            if in_comment {
                out_line.push_str(&line[i..]);
                break;
            }
            match quote {
                Quote::None => match c {
                    b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => in_comment = true,
                    b'"' => quote = Quote::Double,
                    b'\'' => quote = Quote::Single,
                    _ => {}
                },
                Quote::Double => match c {
                    b'\\' => {
                        // Copy the escape and the escaped byte verbatim.
                        let end = (i + 2).min(bytes.len());
                        out_line.push_str(&line[i..end]);
                        i = end;
                        continue;
                    }
                    b'"' => quote = Quote::None,
                    _ => {}
                },
                Quote::Single => {
                    if c == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            out_line.push_str("''");
                            i += 2;
                            continue;
                        }
                        quote = Quote::None;
                    }
                }
            }
            if in_comment {
                out_line.push_str(&line[i..]);
                break;
            }
            if c == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
                out_line.push('$');
                line_edits.push((out_line.len() + 1, -1));
                i += 2;
                continue;
            }
            if c == b'$' && bytes.get(i + 1) == Some(&b'{') {
                let Some(close) = line[i..].find('}') else {
                    return Err(SubstError::Malformed {
                        line: line_idx + 1,
                        column: i + 1,
                        text: line[i..].trim_end().to_owned(),
                    });
                };
                let inner = &line[i + 2..i + close];
                let (name, default) = match inner.find(":-") {
                    Some(p) => (&inner[..p], Some(&inner[p + 2..])),
                    None => (inner, None),
                };
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.as_bytes()[0].is_ascii_digit();
                if !valid {
                    return Err(SubstError::Malformed {
                        line: line_idx + 1,
                        column: i + 1,
                        text: line[i..=i + close].to_owned(),
                    });
                }
                let value = match lookup(name) {
                    Some(v) => {
                        crate::redact::register(name, &v);
                        v
                    }
                    None => match default {
                        Some(d) => d.to_owned(),
                        None => {
                            if unset.is_empty() {
                                first_unset_line = line_idx + 1;
                            }
                            unset.insert(name.to_owned());
                            String::new()
                        }
                    },
                };
                if value.contains('\n') || value.contains('\r') {
                    return Err(SubstError::Multiline {
                        name: name.to_owned(),
                        line: line_idx + 1,
                    });
                }
                let placeholder_len = close + 1;
                let before = line[..i].trim();
                let after = line[i + placeholder_len..].trim();
                // `key: ${VAR}` or `- ${VAR}`, with nothing but a comment after it.
                let whole_plain = quote == Quote::None
                    && (before.ends_with(':') || before == "-")
                    && (after.is_empty() || after.starts_with('#'));
                let rendered = match quote {
                    Quote::Double => value.replace('\\', "\\\\").replace('"', "\\\""),
                    Quote::Single => value.replace('\'', "''"),
                    Quote::None if whole_plain && !plain_safe(&value) => {
                        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
                    }
                    Quote::None => value,
                };
                out_line.push_str(&rendered);
                line_edits.push((
                    out_line.len() + 1,
                    rendered.len() as isize - placeholder_len as isize,
                ));
                i += placeholder_len;
                continue;
            }
            out_line.push(c as char);
            // Multi-byte UTF-8: copy the whole character.
            if c >= 0x80 {
                out_line.pop();
                let ch_len = line[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                out_line.push_str(&line[i..i + ch_len]);
                i += ch_len;
                continue;
            }
            i += 1;
        }
        out.push_str(&out_line);
        edits.push(line_edits);
    }
    if !unset.is_empty() {
        return Err(SubstError::Unset {
            names: unset.into_iter().collect(),
            first_line: first_unset_line,
        });
    }
    Ok(Substituted { text: out, edits })
}

/// Whether `value` reads back from YAML as the same plain scalar (a string, number or bool
/// with no structure-changing characters).
fn plain_safe(value: &str) -> bool {
    if value.is_empty() || value != value.trim() {
        return false;
    }
    let first = value.as_bytes()[0];
    if b"-?:,[]{}#&*!|>'\"%@`".contains(&first) {
        // `-5` is a number and safe; other leading indicators are not.
        return first == b'-'
            && value[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && value.len() > 1;
    }
    !value.contains(": ") && !value.contains(" #") && !value.ends_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn substitutes_and_defaults() {
        let s = substitute(
            "port: ${PORT}\nhost: ${HOST:-localhost}\n",
            env(&[("PORT", "5432")]),
        )
        .unwrap();
        assert_eq!(s.text, "port: 5432\nhost: localhost\n");
    }

    #[test]
    fn reports_every_unset_variable() {
        let e = substitute("a: ${A}\nb: ${B}\nc: ${A}\n", env(&[])).unwrap_err();
        assert_eq!(
            e,
            SubstError::Unset {
                names: vec!["A".into(), "B".into()],
                first_line: 1
            }
        );
        assert!(e.to_string().contains("`A`, `B`"));
    }

    #[test]
    fn quotes_values_that_would_change_structure() {
        let vars = [("PW", "a: b #c"), ("Q", "say \"hi\""), ("S", "it's")];
        let s = substitute("p: ${PW}\nq: \"${Q}\"\ns: '${S}'\n", env(&vars)).unwrap();
        assert_eq!(
            s.text,
            "p: \"a: b #c\"\nq: \"say \\\"hi\\\"\"\ns: 'it''s'\n"
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&s.text).unwrap();
        assert_eq!(v["p"].as_str(), Some("a: b #c"));
        assert_eq!(v["q"].as_str(), Some("say \"hi\""));
        assert_eq!(v["s"].as_str(), Some("it's"));
    }

    #[test]
    fn ignores_comments_and_escapes() {
        let s = substitute("# ${NOPE}\na: $${LIT} # ${NOPE}\n", env(&[])).unwrap();
        assert_eq!(s.text, "# ${NOPE}\na: ${LIT} # ${NOPE}\n");
    }

    #[test]
    fn maps_columns_back() {
        let s = substitute("a: ${LONG_NAME} x: 1\n", env(&[("LONG_NAME", "v")])).unwrap();
        // In the text, `x` is at column 6; in the file at column 17.
        assert_eq!(&s.text[5..6], "x");
        assert_eq!(s.original_column(1, 6), 17);
        assert_eq!(s.original_column(1, 1), 1);
    }

    #[test]
    fn rejects_malformed_and_multiline() {
        assert!(matches!(
            substitute("a: ${A\n", env(&[])),
            Err(SubstError::Malformed { .. })
        ));
        assert!(matches!(
            substitute("a: ${1A}\n", env(&[])),
            Err(SubstError::Malformed { .. })
        ));
        assert!(matches!(
            substitute("a: ${A}\n", env(&[("A", "x\ny")])),
            Err(SubstError::Multiline { .. })
        ));
    }
}
