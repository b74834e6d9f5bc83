//! YAML text flattened to dotted `(key, value)` pairs, with every input
//! bounded.
//!
//! The text is read with [`yaml-rust2`](https://docs.rs/yaml-rust2)'s
//! event parser (which does not recurse) into a small tree in which an
//! alias points at its anchored node instead of copying it. Flattening then
//! walks the tree, expanding aliases, under three limits, each a
//! [`TooLarge`](super::ConfigErrorKind::TooLarge) error:
//!
//! - the text: at most [`MAX_BYTES`](super::properties::MAX_BYTES) (1 MiB);
//! - nesting: at most [`MAX_DEPTH`] (64) levels as written, and as many
//!   again through aliases;
//! - expansion: at most [`MAX_NODES`] (100 000) nodes visited and
//!   [`MAX_OUTPUT_BYTES`] (8 MiB) of keys and values produced, so an alias
//!   bomb ("billion laughs") stops after at most 100 000 steps and a few
//!   MiB, whatever its shape.
//!
//! Merge keys (`<<: *defaults`) merge the aliased map under the explicit
//! keys, as Spring reads them.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

use super::error::{ConfigError, ConfigErrorKind};
use super::properties::check_size;

/// Deepest nesting accepted as written.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most nodes parsed, and most nodes visited while expanding aliases.
pub(crate) const MAX_NODES: usize = 100_000;
/// Most bytes of keys and values the flattening produces.
pub(crate) const MAX_OUTPUT_BYTES: usize = 8 << 20;

enum Node {
    Scalar(String),
    /// A plain `<<` (a quoted one is a key like any other, as SnakeYAML
    /// reads it).
    MergeKey,
    Seq(Vec<usize>),
    /// Keys and values alternating.
    Map(Vec<usize>),
}

struct Open {
    items: Vec<usize>,
    is_map: bool,
    anchor: usize,
}

fn syntax(reason: impl Into<String>) -> ConfigError {
    ConfigError::new(ConfigErrorKind::Yaml, reason.into())
}

fn too_many_nodes() -> ConfigError {
    ConfigError::too_large(
        MAX_NODES as u64,
        format!("more than {MAX_NODES} YAML nodes (after expanding aliases)"),
    )
}

/// The parsed documents: an arena of nodes and the root of each document.
struct Tree {
    nodes: Vec<Node>,
    roots: Vec<usize>,
}

impl Tree {
    fn scalar(&self, index: usize) -> Option<&str> {
        match self.nodes.get(index)? {
            Node::Scalar(s) => Some(s),
            Node::MergeKey => Some("<<"),
            _ => None,
        }
    }

    fn push(&mut self, node: Node) -> Result<usize, ConfigError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(too_many_nodes());
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn parse(text: &str) -> Result<Tree, ConfigError> {
        let mut tree = Tree {
            nodes: Vec::new(),
            roots: Vec::new(),
        };
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Open> = Vec::new();
        let mut anchors: HashMap<usize, usize> = HashMap::new();
        loop {
            let (event, mark) = parser.next_token().map_err(|e| {
                syntax(e.info().to_owned()).at(Some(e.marker().line()), Some(e.marker().col() + 1))
            })?;
            let done = match event {
                Event::StreamEnd => break,
                Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(ConfigError::too_large(
                            MAX_DEPTH as u64,
                            format!("nested deeper than {MAX_DEPTH} levels"),
                        )
                        .at(Some(mark.line()), Some(mark.col() + 1)));
                    }
                    let is_map = matches!(event, Event::MappingStart(..));
                    stack.push(Open {
                        items: Vec::new(),
                        is_map,
                        anchor,
                    });
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let open = stack.pop().ok_or_else(|| syntax("unbalanced collection"))?;
                    let node = if open.is_map {
                        Node::Map(open.items)
                    } else {
                        Node::Seq(open.items)
                    };
                    Some((tree.push(node)?, open.anchor))
                }
                Event::Scalar(value, style, anchor, _) => {
                    let plain = style == TScalarStyle::Plain;
                    if plain && value == "<<" {
                        Some((tree.push(Node::MergeKey)?, anchor))
                    } else {
                    let null = plain && matches!(value.as_str(), "~" | "null" | "Null" | "NULL");
                    let value = match () {
                        () if null => String::new(),
                        () if plain => yaml11_plain(value),
                        () => value,
                    };
                    Some((tree.push(Node::Scalar(value))?, anchor))
                    }
                }
                // An alias names an anchor of its own document only.
                Event::DocumentStart => {
                    anchors.clear();
                    None
                }
                Event::Alias(id) => {
                    let target = anchors.get(&id).copied().ok_or_else(|| {
                        syntax("an alias names no anchor defined before it")
                            .at(Some(mark.line()), Some(mark.col() + 1))
                    })?;
                    Some((target, 0))
                }
                _ => None,
            };
            if let Some((index, anchor)) = done {
                if anchor != 0 {
                    anchors.insert(anchor, index);
                }
                match stack.last_mut() {
                    Some(open) => open.items.push(index),
                    None => tree.roots.push(index),
                }
            }
        }
        Ok(tree)
    }
}

/// Flattening state: the output and the budgets left.
struct Flat<'t> {
    tree: &'t Tree,
    out: Vec<(String, String)>,
    visits: usize,
    bytes: usize,
}

impl Flat<'_> {
    /// Counts `n` bytes of output against [`MAX_OUTPUT_BYTES`], before
    /// they are built.
    fn charge(&mut self, n: usize) -> Result<(), ConfigError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_OUTPUT_BYTES {
            return Err(ConfigError::too_large(
                MAX_OUTPUT_BYTES as u64,
                format!(
                    "more than {MAX_OUTPUT_BYTES} bytes of keys and values (after expanding aliases)"
                ),
            ));
        }
        Ok(())
    }

    fn walk(&mut self, index: usize, prefix: &str, depth: usize) -> Result<(), ConfigError> {
        self.visits += 1;
        if self.visits > MAX_NODES {
            return Err(too_many_nodes());
        }
        if depth > 2 * MAX_DEPTH {
            return Err(ConfigError::too_large(
                (2 * MAX_DEPTH) as u64,
                format!(
                    "nested deeper than {} levels through aliases",
                    2 * MAX_DEPTH
                ),
            ));
        }
        let tree = self.tree;
        match tree.nodes.get(index) {
            Some(Node::Scalar(s)) => {
                // Counted before the copy: an alias to a large scalar is
                // copied only while the output budget lasts.
                self.charge(prefix.len().saturating_add(s.len()))?;
                self.out.push((prefix.to_owned(), s.clone()));
                Ok(())
            }
            // A plain `<<` as a value is the text `<<`.
            Some(Node::MergeKey) => {
                self.charge(prefix.len().saturating_add(2))?;
                self.out.push((prefix.to_owned(), "<<".to_owned()));
                Ok(())
            }
            Some(Node::Seq(items)) => self.walk_seq(items, prefix, depth),
            Some(Node::Map(items)) => self.walk_map(items, prefix, depth),
            None => Err(syntax("dangling node")),
        }
    }

    fn walk_seq(&mut self, items: &[usize], prefix: &str, depth: usize) -> Result<(), ConfigError> {
        let tree = self.tree;
        let scalars: Option<Vec<&str>> = items.iter().map(|i| tree.scalar(*i)).collect();
        if let Some(scalars) = scalars {
            // Aliased items count as visits, and the joined value against
            // the output budget before it is built: a list of 4 000
            // aliases to a 256 KiB scalar would join to 1 GB first.
            self.visits = self.visits.saturating_add(items.len());
            if self.visits > MAX_NODES {
                return Err(too_many_nodes());
            }
            let commas = scalars.len().saturating_sub(1);
            let len = scalars
                .iter()
                .fold(commas, |n, s| n.saturating_add(s.len()));
            self.charge(prefix.len().saturating_add(len))?;
            self.out.push((prefix.to_owned(), scalars.join(",")));
            return Ok(());
        }
        for (i, item) in items.iter().enumerate() {
            // Every key built is charged, not only those at leaves: keys
            // that are aliases to a long scalar made 62 nested prefixes of
            // 512 KiB each, 1.9 GiB alive at once, over empty leaves that
            // charged nothing (helper 239).
            self.charge(prefix.len().saturating_add(22))?;
            self.walk(*item, &format!("{prefix}[{i}]"), depth + 1)?;
        }
        Ok(())
    }

    fn walk_map(&mut self, items: &[usize], prefix: &str, depth: usize) -> Result<(), ConfigError> {
        let mut pairs = Vec::new();
        self.map_pairs(items, prefix, depth, &mut pairs)?;
        for (key, value) in pairs {
            // Charged before it is built (see `walk_seq`).
            self.charge(prefix.len().saturating_add(key.len()).saturating_add(1))?;
            let full = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            self.walk(value, &full, depth + 1)?;
        }
        Ok(())
    }

}

impl<'t> Flat<'t> {
    /// The pairs of a map with its merge keys (`<<`) applied as YAML's
    /// merge key type and SnakeYAML (Spring's reader) apply them: shallow,
    /// a key of the map itself beats a merged one as a whole (a nested map
    /// is not merged into), and of several merged maps the first that has
    /// a key gives it. Merged pairs come first; a merged value that is not
    /// a map is an error, as in SnakeYAML. Each pair counts as a visit, so
    /// merges of merges stay within [`MAX_NODES`].
    fn map_pairs(
        &mut self,
        items: &[usize],
        prefix: &str,
        depth: usize,
        out: &mut Vec<(&'t str, usize)>,
    ) -> Result<(), ConfigError> {
        if depth > 2 * MAX_DEPTH {
            return Err(ConfigError::too_large(
                (2 * MAX_DEPTH) as u64,
                format!("nested deeper than {} levels through aliases", 2 * MAX_DEPTH),
            ));
        }
        self.visits = self.visits.saturating_add(items.len() / 2);
        if self.visits > MAX_NODES {
            return Err(too_many_nodes());
        }
        let tree = self.tree;
        let pairs = items.chunks(2).filter_map(|c| Some((c[0], *c.get(1)?)));
        let mut own = Vec::new();
        let mut merged = Vec::new();
        for (key, value) in pairs {
            if matches!(tree.nodes.get(key), Some(Node::MergeKey)) {
                match tree.nodes.get(value) {
                    Some(Node::Seq(maps)) => merged.extend(maps.iter().copied()),
                    _ => merged.push(value),
                }
                continue;
            }
            let key = tree.scalar(key).ok_or_else(|| {
                let prefix = crate::error::quote(prefix);
                syntax(format!("under `{prefix}`: a key must be a scalar"))
            })?;
            own.push((key, value));
        }
        let mut taken = std::collections::HashSet::new();
        if let Some((key, _)) = own.iter().find(|(k, _)| !taken.insert(*k)) {
            // Spring Boot's loader refuses duplicate keys (SnakeYAML's
            // `allowDuplicateKeys(false)`); the last one won before.
            let key = crate::error::quote(key);
            return Err(syntax(format!("duplicate key `{key}`")));
        }
        for map in merged {
            let Some(Node::Map(inner)) = tree.nodes.get(map) else {
                // SnakeYAML: "expected a mapping or list of mappings for
                // merging".
                let prefix = crate::error::quote(prefix);
                return Err(syntax(format!(
                    "under `{prefix}`: a merge key `<<` takes a map or a list of maps"
                )));
            };
            let mut pairs = Vec::new();
            self.map_pairs(inner, prefix, depth + 1, &mut pairs)?;
            out.extend(pairs.into_iter().filter(|(key, _)| taken.insert(key)));
        }
        out.extend(own);
        Ok(())
    }
}

/// The dotted key/value pairs of each document of YAML text, in order:
/// nested maps join with `.`, a list of scalars joins with `,`, other
/// lists get Spring's `[index]` suffixes, `null` is an empty value.
pub(crate) fn flatten_yaml_documents(text: &str) -> Result<Vec<Vec<(String, String)>>, ConfigError> {
    check_size(text.len())?;
    // A UTF-8 byte order mark is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let tree = Tree::parse(text)?;
    let mut flat = Flat {
        tree: &tree,
        out: Vec::new(),
        visits: 0,
        bytes: 0,
    };
    let mut documents = Vec::new();
    for &root in &tree.roots {
        match tree.nodes.get(root) {
            Some(Node::Map(_)) => flat.walk(root, "", 0)?,
            Some(Node::Scalar(s)) if s.is_empty() => {}
            _ => return Err(syntax("a document must be a map of settings")),
        }
        documents.push(std::mem::take(&mut flat.out));
    }
    Ok(documents)
}

/// All documents' pairs, in order.
#[cfg(test)]
pub(crate) fn flatten_yaml_str(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    Ok(flatten_yaml_documents(text)?.concat())
}

/// A plain scalar as Spring Boot's parser (SnakeYAML, YAML 1.1 implicit
/// types) reads it, in the text Spring binds: `on`, `yes` and the other
/// YAML 1.1 booleans are `true` or `false`; YAML 1.1 integers (`010`
/// octal, `0x7d0`, `0b11`, `5_000`, `1:30` base 60) in decimal. Anything
/// else as written.
fn yaml11_plain(value: String) -> String {
    const TRUE: [&str; 9] = ["yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"];
    const FALSE: [&str; 9] = ["no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"];
    if TRUE.contains(&value.as_str()) {
        "true".to_owned()
    } else if FALSE.contains(&value.as_str()) {
        "false".to_owned()
    } else {
        yaml11_int(&value).map_or(value, |n| n.to_string())
    }
}

/// SnakeYAML's `int` (its `Resolver.INT` and `ConstructYamlInt`); `None`
/// for other text and for values past `i128`.
fn yaml11_int(text: &str) -> Option<i128> {
    let (negative, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    // Digits in `radix`, at least one, `_` anywhere among them.
    let digits = |s: &str, radix: u32| -> Option<i128> {
        let mut n: Option<i128> = None;
        for c in s.chars().filter(|c| *c != '_') {
            let d = i128::from(c.to_digit(radix)?);
            n = Some(n.unwrap_or(0).checked_mul(i128::from(radix))?.checked_add(d)?);
        }
        n
    };
    let n = if let Some(bin) = body.strip_prefix("0b") {
        digits(bin, 2)?
    } else if let Some(hex) = body.strip_prefix("0x") {
        digits(hex, 16)?
    } else if body.contains(':') {
        // `[1-9][0-9_]*(:[0-5]?[0-9])+`.
        let mut parts = body.split(':');
        let first = parts.next()?;
        if !first.starts_with(|c: char| ('1'..='9').contains(&c)) {
            return None;
        }
        let mut n = digits(first, 10)?;
        for part in parts {
            let ok = match part.as_bytes() {
                [d] => d.is_ascii_digit(),
                [t, d] => (b'0'..=b'5').contains(t) && d.is_ascii_digit(),
                _ => false,
            };
            if !ok {
                return None;
            }
            n = n.checked_mul(60)?.checked_add(digits(part, 10)?)?;
        }
        n
    } else if body == "0" {
        0
    } else if let Some(octal) = body.strip_prefix('0') {
        digits(octal, 8)?
    } else if body.starts_with(|c: char| ('1'..='9').contains(&c)) {
        digits(body, 10)?
    } else {
        return None;
    };
    Some(if negative { -n } else { n })
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
