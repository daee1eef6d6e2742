//! An index from key paths (`sources.pg.config.port`, `sinks.out.topics[0]`) to their
//! line and column in the YAML text, so that every configuration error, including those
//! found after parsing, can point at the place in the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Where a key path stands in the text (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Key path → location of the key (for mapping entries) or the item (for sequence items).
#[derive(Debug, Default)]
pub struct PositionIndex {
    map: HashMap<String, Location>,
}

enum Frame {
    Map {
        path: String,
        expecting_key: bool,
        key: Option<String>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    map: HashMap<String, Location>,
    root_done: bool,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// The path of the value that starts now, recording its location.
    fn value_path(&mut self, mark: Marker) -> Option<String> {
        let loc = Location {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match self.stack.last_mut() {
            None => {
                if self.root_done {
                    return None;
                }
                self.root_done = true;
                Some(String::new())
            }
            Some(Frame::Map {
                path,
                expecting_key,
                key,
            }) => {
                let p = join(path, key.as_deref().unwrap_or("?"));
                *expecting_key = true;
                *key = None;
                Some(p)
            }
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.map.entry(p.clone()).or_insert(loc);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        // A scalar in key position names the next entry.
        if let (
            Event::Scalar(s, ..),
            Some(Frame::Map {
                path,
                expecting_key,
                key,
            }),
        ) = (&ev, self.stack.last_mut())
        {
            if *expecting_key {
                let p = join(path, s);
                self.map.entry(p).or_insert(Location {
                    line: mark.line(),
                    column: mark.col() + 1,
                });
                *key = Some(s.clone());
                *expecting_key = false;
                return;
            }
        }
        match ev {
            Event::Scalar(..) | Event::Alias(_) => {
                self.value_path(mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.value_path(mark) {
                    self.stack.push(Frame::Map {
                        path,
                        expecting_key: true,
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                if let Some(path) = self.value_path(mark) {
                    self.stack.push(Frame::Seq { path, index: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl PositionIndex {
    /// Index a YAML document. Syntax errors yield an empty (or partial) index; they are
    /// reported by the deserializer, which knows their position.
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        Self { map: builder.map }
    }

    /// The location of `path`, or of its nearest indexed ancestor.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path;
        loop {
            if let Some(loc) = self.map.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_keys_and_items() {
        let text = "version: \"1.0\"\nsinks:\n  out:\n    topics: [a, b]\n    config:\n      format: json\n    list:\n      - x: 1\n        y: 2\n";
        let idx = PositionIndex::build(text);
        assert_eq!(idx.locate("version"), Some(Location { line: 1, column: 1 }));
        assert_eq!(
            idx.locate("sinks.out.config.format"),
            Some(Location { line: 6, column: 7 })
        );
        assert_eq!(
            idx.locate("sinks.out.topics[1]"),
            Some(Location {
                line: 4,
                column: 17
            })
        );
        assert_eq!(
            idx.locate("sinks.out.list[0].y"),
            Some(Location { line: 9, column: 9 })
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(
            idx.locate("sinks.out.config.nope"),
            Some(Location { line: 5, column: 5 })
        );
    }
}
