//! The docs stay in step with the code: every key of a connector's, a transform's and the
//! settings' JSON Schema appears on its docs page, every connector is in the README's
//! catalogue, and code quoted from a source file is still in that file word for word.

use rivven_connect::builtin_registry;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every property name anywhere in a JSON Schema (nested objects and `$defs` included).
fn keys(schema: &serde_json::Value, out: &mut BTreeSet<String>) {
    match schema {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            for v in m.values() {
                keys(v, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

/// The identifiers written in code spans (`` `a.b_c` `` gives `a` and `b_c`) of a page.
fn code_words(page: &str) -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for (i, span) in page.split('`').enumerate() {
        if i % 2 == 1 {
            words.extend(
                span.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    words
}

/// The keys of `schema` that `page` never writes in a code span.
fn missing(schema: &schemars::Schema, page: &str) -> Vec<String> {
    let mut all = BTreeSet::new();
    keys(&serde_json::to_value(schema).unwrap(), &mut all);
    let words = code_words(page);
    all.into_iter().filter(|k| !words.contains(k)).collect()
}

fn connector_page(name: &str) -> &'static str {
    match name {
        "datagen" => "docs/connectors/datagen.md",
        "postgres-cdc" => "docs/connectors/postgres-cdc.md",
        "stdout" => "docs/connectors/stdout.md",
        "delta-lake" => "docs/connectors/delta-lake.md",
        "iceberg" => "docs/connectors/iceberg.md",
        "kafka-source" | "external-source" => "docs/connectors/kafka-source.md",
        "kafka-sink" | "external-sink" => "docs/connectors/kafka-sink.md",
        "object-storage" | "s3" | "gcs" | "azure-blob" => "docs/connectors/object-storage.md",
        other => panic!("connector `{other}` has no docs page in this test's table: add one"),
    }
}

#[test]
fn every_connector_key_is_on_its_page_and_every_connector_in_the_readme() {
    let registry = builtin_registry().unwrap();
    let readme = read("README.md");
    let mut problems = Vec::new();
    let sources = registry.sources().map(|f| (f.info(), f.config_schema()));
    let sinks = registry.sinks().map(|f| (f.info(), f.config_schema()));
    for (info, schema) in sources.chain(sinks) {
        let page = connector_page(info.name);
        for key in missing(&schema, &read(page)) {
            problems.push(format!(
                "{page}: key `{key}` of `{}` is not documented",
                info.name
            ));
        }
        if !readme.contains(&format!("| `{}` |", info.name)) {
            problems.push(format!(
                "README.md: `{}` is not in the connector table",
                info.name
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_transform_key_is_on_the_transforms_page() {
    let registry = builtin_registry().unwrap();
    let transforms = registry.transforms().unwrap();
    let page = read("docs/transforms.md");
    let mut problems = Vec::new();
    let kinds = transforms.kinds();
    assert!(kinds.len() > 20, "{kinds:?}");
    let names = kinds
        .iter()
        .flat_map(|k| std::iter::once(k.name).chain(k.aliases.iter().copied()))
        .chain(["cdc_features"]);
    for name in names {
        if !page.contains(&format!("`{name}`")) {
            problems.push(format!("transform type `{name}` is not documented"));
        }
        let schema = transforms.config_schema(name).unwrap();
        for key in missing(&schema, &page) {
            problems.push(format!("key `{key}` of `{name}` is not documented"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_settings_key_is_on_the_configuration_page() {
    let schema = schemars::schema_for!(rivven_connect::engine::config::PipelineConfig);
    let page = read("docs/configuration.md");
    let missing = missing(&schema, &page);
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}

/// A source's `config.health` keys are in the configuration page's health table.
#[test]
fn every_health_key_is_on_the_configuration_page() {
    let schema = schemars::schema_for!(rivven_connect::engine::health::HealthSettings);
    let page = read("docs/configuration.md");
    let missing = missing(&schema, &page);
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks health keys {missing:?}"
    );
}

/// Blocks that start with `// From <path>:` must still be in that file, word for word
/// (whitespace aside).
#[test]
fn quoted_code_is_still_in_its_file() {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut checked = 0;
    for entry in walk(&root().join("docs")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for block in text.split("```").skip(1).step_by(2) {
            let body = block.split_once('\n').map_or("", |(_, b)| b);
            let Some(rest) = body.trim_start().strip_prefix("// From ") else {
                continue;
            };
            let (path, code) = rest.split_once(":\n").unwrap();
            let file = read(path);
            assert!(
                norm(&file).contains(&norm(code)),
                "{}: the code quoted from {path} is no longer in it",
                entry.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no quoted code found");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    out
}
