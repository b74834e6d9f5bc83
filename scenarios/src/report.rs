//! Markdown tables, CSV files and the results file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A Markdown table.
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named `header`; a name starting with `>` is right-aligned
    /// (the `>` is dropped).
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header
                .iter()
                .map(|h| h.trim_start_matches('>').to_owned())
                .collect(),
            right: header.iter().map(|h| h.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| {} |", self.header.join(" | "));
        let rule: Vec<&str> = self
            .right
            .iter()
            .map(|&r| if r { "---:" } else { "---" })
            .collect();
        let _ = writeln!(out, "|{}|", rule.join("|"));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// Collects the sections of a run, prints each as it comes and writes them
/// to the results file.
pub struct Report {
    text: String,
    dir: PathBuf,
}

impl Report {
    /// A report whose files go to `dir`.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            text: String::new(),
            dir: dir.to_owned(),
        })
    }

    /// Appends Markdown text (and prints it).
    pub fn add(&mut self, text: &str) {
        print!("{text}");
        self.text.push_str(text);
    }

    /// Writes `rows` under `header` to `<dir>/<name>` (CSV).
    pub fn csv(&self, name: &str, header: &str, rows: &[String]) {
        let path = self.dir.join(name);
        let mut body = String::with_capacity(rows.len() * 24 + header.len() + 1);
        body.push_str(header);
        body.push('\n');
        for row in rows {
            body.push_str(row);
            body.push('\n');
        }
        if let Err(e) = std::fs::write(&path, body) {
            eprintln!("warning: cannot write {}: {e}", path.display());
        }
    }

    /// Writes the collected text to `<dir>/<name>`, returning the path.
    pub fn write(&self, name: &str) -> std::io::Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::write(&path, &self.text)?;
        Ok(path)
    }
}

/// `x` with `digits` decimals.
pub fn f(x: f64, digits: usize) -> String {
    format!("{x:.digits$}")
}

/// `x` as a percentage with `digits` decimals.
pub fn pct(x: f64, digits: usize) -> String {
    format!("{:.digits$} %", x * 100.0)
}
