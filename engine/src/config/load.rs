//! Loading a pipeline file: substitution, parsing, validation, and errors with positions.

use super::env::{substitute, SubstError, Substituted};
use super::locate::{Location, PositionIndex};
use super::{FieldError, PipelineConfig};
use std::fmt;
use std::path::{Path, PathBuf};

/// One configuration error: where it is (file, line, column, key path) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file's name as given on the command line.
    pub file: String,
    /// Line and column in the file, when known.
    pub location: Option<Location>,
    /// Dotted key path (empty for whole-file errors).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        let message = crate::redact::scrub(&self.message);
        if self.path.is_empty() {
            write!(f, ": {message}")
        } else {
            write!(f, ": {}: {message}", self.path)
        }
    }
}

/// Every error found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A parsed, structurally valid configuration and what is needed to locate later errors.
#[derive(Debug)]
pub struct LoadedConfig {
    /// The configuration.
    pub config: PipelineConfig,
    /// The file's name as given.
    pub file: String,
    /// The directory relative paths in the file are resolved against (the process's
    /// working directory, as for any command-line tool).
    pub base_dir: PathBuf,
    index: PositionIndex,
    subst: Substituted,
}

impl LoadedConfig {
    /// An error at `path`, located in the file.
    pub fn error_at(&self, err: FieldError) -> ConfigError {
        locate(&self.file, &self.index, &self.subst, err)
    }

    /// The state directory, resolved against [`LoadedConfig::base_dir`].
    pub fn state_dir(&self) -> PathBuf {
        let dir = &self.config.settings.state_dir;
        let dir = dir.strip_prefix(".").unwrap_or(dir);
        self.base_dir.join(dir)
    }
}

/// Load and validate a pipeline file, reading `${VAR}`s from the process environment.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            location: None,
            path: String::new(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let base_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    load_str(&text, &file, base_dir, |name| std::env::var(name).ok())
}

/// Load and validate a pipeline from text, reading variables through `lookup`.
pub fn load_str(
    text: &str,
    file: &str,
    base_dir: PathBuf,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<LoadedConfig, ConfigErrors> {
    let whole = |location: Option<Location>, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            location,
            path: String::new(),
            message,
        }])
    };
    let subst = substitute(text, lookup).map_err(|e| {
        let line = match &e {
            SubstError::Unset { first_line, .. } => *first_line,
            SubstError::Malformed { line, .. } | SubstError::Multiline { line, .. } => *line,
        };
        let column = match &e {
            SubstError::Malformed { column, .. } => *column,
            _ => 1,
        };
        // The message carries the line already; keep the location for editors.
        whole(Some(Location { line, column }), e.to_string())
    })?;
    let value: serde_yaml::Value = serde_yaml::from_str(&subst.text).map_err(|e| {
        let location = e.location().map(|l| Location {
            line: l.line(),
            column: subst.original_column(l.line(), l.column()),
        });
        whole(
            location,
            format!("invalid YAML: {}", strip_location(&e.to_string())),
        )
    })?;
    if value.is_null() {
        return Err(whole(None, "the file is empty".into()));
    }
    let index = PositionIndex::build(&subst.text);
    let parsed = super::parse::<PipelineConfig>(&value);
    let config = parsed.map_err(|errs| {
        ConfigErrors(
            errs.into_iter()
                .map(|e| locate(file, &index, &subst, e))
                .collect(),
        )
    })?;
    Ok(LoadedConfig {
        config,
        file: file.to_owned(),
        base_dir,
        index,
        subst,
    })
}

/// `err` with the line and column of its key path in the file (columns of the text before
/// substitution).
fn locate(file: &str, index: &PositionIndex, subst: &Substituted, err: FieldError) -> ConfigError {
    let location = index.locate(&err.path).map(|l| Location {
        line: l.line,
        column: subst.original_column(l.line, l.column),
    });
    ConfigError {
        file: file.to_owned(),
        location,
        path: err.path,
        message: err.message,
    }
}

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SinkSpec, SourceSpec};

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<LoadedConfig, ConfigErrors> {
        load_str(text, "p.yaml", PathBuf::from("/tmp"), |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    const GOOD: &str = "version: \"1.0\"\nsources:\n  gen:\n    connector: datagen\n    topic: t\nsinks:\n  out:\n    connector: stdout\n    topics: [t]\n    consumer_group: g\n";

    #[test]
    fn dead_letter_topic_never_feeds_back_into_its_pipeline() {
        let src: SourceSpec =
            serde_yaml::from_str("connector: datagen\ntopic: t\ndead_letter_topic: t\n").unwrap();
        let e = src.parts().unwrap_err().to_string();
        assert!(
            e.contains("dead_letter_topic: is the pipeline's own topic"),
            "{e}"
        );
        let src: SourceSpec =
            serde_yaml::from_str("connector: datagen\ntopic: t\ndead_letter_topic: d\n").unwrap();
        assert_eq!(
            src.parts().unwrap().transforms.dead_letter_topic.as_deref(),
            Some("d"),
            "a source's own undecodable records use it, transforms or not"
        );
        let sink = |extra: &str| -> SinkSpec {
            serde_yaml::from_str(&format!(
                "connector: stdout\ntopics: [t, d]\nconsumer_group: g\n{extra}"
            ))
            .unwrap()
        };
        let e = sink("dead_letter_topic: d\ntransforms: [{type: filter}]\n")
            .parts()
            .unwrap_err()
            .to_string();
        assert!(e.contains("`d` is also in `topics`"), "{e}");
        // Without transforms it still takes the rows the sink itself refuses.
        assert_eq!(
            sink("dead_letter_topic: x\n")
                .parts()
                .unwrap()
                .transforms
                .dead_letter_topic
                .as_deref(),
            Some("x")
        );
    }

    #[test]
    fn loads_a_good_file() {
        let c = load_text(GOOD, &[]).unwrap();
        assert_eq!(c.config.sources["gen"].topic, "t");
        assert_eq!(c.config.settings.batch.max_rows, 8192);
    }

    #[test]
    fn unknown_key_has_path_and_position() {
        let text = GOOD.replace("    topic: t\n", "    topic: t\n    topik: x\n");
        let e = load_text(&text, &[]).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("p.yaml:6:5: sources.gen.topik: unknown field `topik`"),
            "{s}"
        );
    }

    #[test]
    fn unknown_settings_key_deep() {
        let text = format!("{GOOD}settings:\n  batch:\n    max_rowz: 3\n");
        let s = load_text(&text, &[]).unwrap_err().to_string();
        assert!(
            s.starts_with("p.yaml:13:5: settings.batch.max_rowz: unknown field `max_rowz`"),
            "{s}"
        );
    }

    #[test]
    fn bad_value_names_field_and_constraint() {
        let text = format!("{GOOD}settings:\n  topic:\n    default_partitions: 0\n");
        let s = load_text(&text, &[]).unwrap_err().to_string();
        assert_eq!(
            s,
            "p.yaml:13:5: settings.topic.default_partitions: must be 1-1024, got 0"
        );
        let text = format!("{GOOD}settings:\n  health:\n    port: 70000\n");
        let s = load_text(&text, &[]).unwrap_err().to_string();
        assert_eq!(
            s,
            "p.yaml:13:5: settings.health.port: invalid value: integer `70000`, expected u16"
        );
    }

    #[test]
    fn endpoints_need_no_port() {
        let text = format!(
            "{GOOD}settings:\n  health: {{enabled: false}}\n  metrics: {{host: 127.0.0.1}}\n"
        );
        let c = load_text(&text, &[]).unwrap();
        let (h, m) = (&c.config.settings.health, &c.config.settings.metrics);
        assert!(!h.enabled && h.port == 8080);
        assert!(m.enabled && m.port == 9091);
        let text = format!("{GOOD}settings:\n  metrics:\n    prt: 1\n");
        let s = load_text(&text, &[]).unwrap_err().to_string();
        assert!(
            s.starts_with("p.yaml:13:5: settings.metrics.prt: unknown field"),
            "{s}"
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let text = GOOD.replace("topic: t\n", "topic: ${TOPIC}\n");
        let s = load_text(&text, &[]).unwrap_err().to_string();
        assert!(s.contains("`TOPIC`") && s.starts_with("p.yaml:5:"), "{s}");
        assert_eq!(
            load_text(&text, &[("TOPIC", "t")]).unwrap().config.sources["gen"].topic,
            "t"
        );
    }

    #[test]
    fn secret_values_are_scrubbed_from_errors() {
        let text = format!("{GOOD}settings:\n  commit_interval_ms: ${{PG_PASSWORD}}\n");
        let s = load_text(&text, &[("PG_PASSWORD", "s3cr3t-value")])
            .unwrap_err()
            .to_string();
        assert!(!s.contains("s3cr3t-value"), "{s}");
        assert!(s.contains("settings.commit_interval_ms"), "{s}");
    }
}
