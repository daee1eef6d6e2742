//! Topic routing for CDC sources: a template with `{database}`, `{schema}`, `{table}`,
//! whose placeholder values are normalized into valid, predictable topic names.
//!
//! Every value has characters outside `[A-Za-z0-9_-]` (spaces, dots, `@`, ...) replaced
//! by `_`; then, in order: `strip_prefixes` / `strip_suffixes` (first match each),
//! `case_conversion`, and `avro_compatible` (`-` becomes `_`, a leading digit gets a `_`
//! prefix). A resolved name longer than 249 characters (Kafka's limit) is cut and ends
//! with `_` and 8 hex digits of a hash of the full name, so distinct long names stay
//! distinct.

use crate::config::FieldError;
use schemars::JsonSchema;
use serde::Deserialize;

/// Longest topic name.
pub const MAX_TOPIC_LEN: usize = 249;

/// Case conversion of placeholder values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
pub enum CaseConversion {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "lower")]
    Lower,
    #[serde(rename = "upper")]
    Upper,
    #[serde(rename = "snake_case")]
    SnakeCase,
    #[serde(rename = "kebab-case")]
    KebabCase,
}

/// How placeholder values are normalized.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NormalizationConfig {
    /// none, lower, upper, snake_case, kebab-case.
    #[serde(default)]
    pub case_conversion: CaseConversion,
    /// Names valid in Avro: `-` → `_`, no leading digit.
    #[serde(default)]
    pub avro_compatible: bool,
    /// Prefixes removed from values (the first that matches).
    #[serde(default)]
    pub strip_prefixes: Vec<String>,
    /// Suffixes removed from values (the first that matches).
    #[serde(default)]
    pub strip_suffixes: Vec<String>,
}

/// A topic template with its normalization.
#[derive(Debug, Clone)]
pub struct TopicResolver {
    template: String,
    normalization: NormalizationConfig,
}

impl TopicResolver {
    /// Check the template: only `{database}`, `{schema}`, `{table}` placeholders.
    pub fn new(template: &str, normalization: NormalizationConfig) -> Result<Self, FieldError> {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| FieldError::new("topic_routing", "unclosed `{`"))?;
            let name = &rest[open + 1..open + close];
            if !matches!(name, "database" | "schema" | "table") {
                return Err(FieldError::new(
                    "topic_routing",
                    format!(
                        "unknown placeholder {{{name}}}; use {{database}}, {{schema}}, {{table}}"
                    ),
                ));
            }
            rest = &rest[open + close + 1..];
        }
        if template.trim().is_empty() {
            return Err(FieldError::new("topic_routing", "must not be empty"));
        }
        Ok(Self {
            template: template.to_string(),
            normalization,
        })
    }

    /// The topic for a table.
    pub fn resolve(&self, database: &str, schema: &str, table: &str) -> String {
        let n = &self.normalization;
        let name = self
            .template
            .replace("{database}", &normalize(database, n))
            .replace("{schema}", &normalize(schema, n))
            .replace("{table}", &normalize(table, n));
        limit_length(name)
    }
}

fn normalize(value: &str, n: &NormalizationConfig) -> String {
    let mut v: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Some(p) = n
        .strip_prefixes
        .iter()
        .find(|p| v.starts_with(p.as_str()) && v.len() > p.len())
    {
        v = v[p.len()..].to_string();
    }
    if let Some(s) = n
        .strip_suffixes
        .iter()
        .find(|s| v.ends_with(s.as_str()) && v.len() > s.len())
    {
        v.truncate(v.len() - s.len());
    }
    v = match n.case_conversion {
        CaseConversion::None => v,
        CaseConversion::Lower => v.to_ascii_lowercase(),
        CaseConversion::Upper => v.to_ascii_uppercase(),
        CaseConversion::SnakeCase => words(&v, '_'),
        CaseConversion::KebabCase => words(&v, '-'),
    };
    if n.avro_compatible {
        v = v.replace('-', "_");
        if v.starts_with(|c: char| c.is_ascii_digit()) {
            v.insert(0, '_');
        }
    }
    v
}

/// `UserProfiles` → `user_profiles`, `SalesDB` → `sales_db`, `HTTPServer` →
/// `http_server`, `my-table` → `my_table` (with `_`).
fn words(v: &str, sep: char) -> String {
    let chars: Vec<char> = v.chars().collect();
    let mut out = String::with_capacity(v.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || c == '-' {
            if !out.is_empty() && !out.ends_with(sep) {
                out.push(sep);
            }
            continue;
        }
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            let boundary = prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower);
            if boundary && !out.is_empty() && !out.ends_with(sep) {
                out.push(sep);
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    while out.ends_with(sep) {
        out.pop();
    }
    out
}

fn limit_length(name: String) -> String {
    if name.len() <= MAX_TOPIC_LEN {
        return name;
    }
    let hash = crc32fast::hash(name.as_bytes());
    let mut cut = MAX_TOPIC_LEN - 9;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash:08x}", &name[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(template: &str, yaml: &str) -> TopicResolver {
        TopicResolver::new(template, serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn documented_examples() {
        let plain = resolver("cdc.{schema}.{table}", "{}");
        assert_eq!(plain.resolve("d", "public", "users"), "cdc.public.users");
        assert_eq!(
            plain.resolve("d", "my schema", "user@data"),
            "cdc.my_schema.user_data"
        );
        assert_eq!(
            plain.resolve("d", "schema.with.dots", "t"),
            "cdc.schema_with_dots.t"
        );
        let snake = resolver(
            "{database}.{schema}.{table}",
            "case_conversion: snake_case\navro_compatible: true\nstrip_prefixes: [dbo_, public_]",
        );
        assert_eq!(
            snake.resolve("SalesDB", "dbo_MySchema", "UserProfiles"),
            "sales_db.my_schema.user_profiles"
        );
        let avro = resolver("cdc.{table}", "avro_compatible: true");
        assert_eq!(avro.resolve("d", "s", "my-table"), "cdc.my_table");
        assert_eq!(avro.resolve("d", "s", "2024_orders"), "cdc._2024_orders");
        let strip = resolver(
            "cdc.{table}",
            "strip_prefixes: [dbo_]\nstrip_suffixes: [_table]",
        );
        assert_eq!(strip.resolve("d", "s", "dbo_users"), "cdc.users");
        assert_eq!(strip.resolve("d", "s", "orders_table"), "cdc.orders");
        let kebab = resolver("{table}", "case_conversion: kebab-case");
        assert_eq!(
            kebab.resolve("d", "s", "HTTPServerLogs"),
            "http-server-logs"
        );
        let upper = resolver("{table}", "case_conversion: upper");
        assert_eq!(upper.resolve("d", "s", "orders"), "ORDERS");
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let r = resolver("cdc.{table}", "{}");
        let a = r.resolve("d", "s", &"a".repeat(300));
        let b = r.resolve("d", "s", &format!("{}b", "a".repeat(299)));
        assert_eq!(a.len(), MAX_TOPIC_LEN);
        assert_eq!(b.len(), MAX_TOPIC_LEN);
        assert_ne!(a, b);
        assert_eq!(a, r.resolve("d", "s", &"a".repeat(300)), "deterministic");
    }

    #[test]
    fn bad_templates() {
        assert!(TopicResolver::new("cdc.{tabel}", NormalizationConfig::default()).is_err());
        assert!(TopicResolver::new("cdc.{table", NormalizationConfig::default()).is_err());
    }
}
