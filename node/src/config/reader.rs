//! The typed TOML reader under every section: byte spans to line:column, tables and inline
//! tables alike, each key read with its type and range checked and every problem collected
//! (not just the first).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{InlineTable, Item, Key, Table, Value};

use super::model::ConfigError;

/// Collects errors and turns byte spans into lines.
pub(super) struct Cx<'s> {
    pub(super) src: &'s str,
    pub(super) errors: Vec<ConfigError>,
}

impl Cx<'_> {
    pub(super) fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.errors.push(ConfigError::at(self.src, span, message));
    }
}

/// A table or an inline table, with the name used in messages (`[node]`, `[[peers]] #2`).
#[derive(Clone, Copy)]
pub(super) enum Tbl<'a> {
    Table(&'a Table),
    Inline(&'a InlineTable),
}

impl<'a> Tbl<'a> {
    pub(super) fn of(item: &'a Item) -> Option<Tbl<'a>> {
        match item {
            Item::Table(t) => Some(Tbl::Table(t)),
            Item::Value(Value::InlineTable(t)) => Some(Tbl::Inline(t)),
            _ => None,
        }
    }

    pub(super) fn span(&self) -> Option<Range<usize>> {
        match self {
            Tbl::Table(t) => t.span(),
            Tbl::Inline(t) => t.span(),
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<(&'a Key, &'a Item)> {
        match self {
            Tbl::Table(t) => t.get_key_value(key),
            Tbl::Inline(t) => t.get_key_value(key),
        }
    }

    pub(super) fn keys(&self) -> Vec<(&'a Key, &'a Item)> {
        match self {
            Tbl::Table(t) => t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect(),
            Tbl::Inline(t) => t.iter().filter_map(|(k, _)| t.get_key_value(k)).collect(),
        }
    }
}

/// Reads the keys of one table, remembering which were known so the rest can be reported.
pub(super) struct Section<'a> {
    pub(super) tbl: Tbl<'a>,
    pub(super) name: String,
    pub(super) known: &'static [&'static str],
}

impl<'a> Section<'a> {
    pub(super) fn new(
        cx: &mut Cx<'_>,
        tbl: Tbl<'a>,
        name: String,
        known: &'static [&'static str],
    ) -> Self {
        for (key, _) in tbl.keys() {
            if !known.contains(&key.get()) {
                cx.error(
                    key.span(),
                    format!(
                        "unknown key `{}` in {name} (known: {})",
                        key.get(),
                        known.join(", ")
                    ),
                );
            }
        }
        Section { tbl, name, known }
    }

    pub(super) fn item(&self, key: &str) -> Option<(Option<Range<usize>>, &'a Item)> {
        debug_assert!(self.known.contains(&key));
        self.tbl.get(key).map(|(_, item)| (item.span(), item))
    }

    pub(super) fn missing(&self, cx: &mut Cx<'_>, key: &str) {
        cx.error(
            self.tbl.span(),
            format!("{} is missing required key `{key}`", self.name),
        );
    }

    pub(super) fn string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        let (span, item) = self.item(key)?;
        match item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                cx.error(span, format!("`{key}` in {} must be a string", self.name));
                None
            }
        }
    }

    pub(super) fn required_string(&self, cx: &mut Cx<'_>, key: &str) -> Option<String> {
        if self.item(key).is_none() {
            self.missing(cx, key);
            return None;
        }
        self.string(cx, key)
    }

    pub(super) fn bool(&self, cx: &mut Cx<'_>, key: &str) -> Option<bool> {
        let (span, item) = self.item(key)?;
        let b = item.as_bool();
        if b.is_none() {
            cx.error(
                span,
                format!("`{key}` in {} must be true or false", self.name),
            );
        }
        b
    }

    /// An integer in `min..=max`.
    pub(super) fn int(&self, cx: &mut Cx<'_>, key: &str, min: i64, max: i64) -> Option<i64> {
        let (span, item) = self.item(key)?;
        match item.as_integer() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            Some(v) => {
                cx.error(span, format!("`{key}` = {v} is out of range {min}..={max}"));
                None
            }
            None => {
                cx.error(span, format!("`{key}` in {} must be an integer", self.name));
                None
            }
        }
    }

    pub(super) fn u32(&self, cx: &mut Cx<'_>, key: &str) -> Option<u32> {
        self.int(cx, key, 0, u32::MAX.into())
            .and_then(|v| u32::try_from(v).ok())
    }

    /// A duration: an integer number of seconds, or a string with a unit (`"500ms"`, `"30s"`,
    /// `"2m"`, `"1h"`). Must be positive.
    pub(super) fn duration(&self, cx: &mut Cx<'_>, key: &str) -> Option<Duration> {
        let (span, item) = self.item(key)?;
        let d = match (item.as_integer(), item.as_str()) {
            (Some(secs), _) => u64::try_from(secs).ok().map(Duration::from_secs),
            (_, Some(s)) => parse_duration(s),
            _ => None,
        };
        match d {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                cx.error(
                    span,
                    format!(
                        "`{key}` must be a positive duration: seconds, or a string like \"500ms\", \"30s\", \"2m\""
                    ),
                );
                None
            }
        }
    }

    pub(super) fn strings(
        &self,
        cx: &mut Cx<'_>,
        key: &str,
    ) -> Option<Vec<(String, Option<Range<usize>>)>> {
        let (span, item) = self.item(key)?;
        let Some(array) = item.as_array() else {
            cx.error(
                span,
                format!("`{key}` in {} must be an array of strings", self.name),
            );
            return None;
        };
        let mut out = Vec::new();
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push((s.to_string(), v.span())),
                None => cx.error(v.span(), format!("`{key}` entries must be strings")),
            }
        }
        Some(out)
    }

    pub(super) fn path(&self, cx: &mut Cx<'_>, key: &str) -> Option<PathBuf> {
        let (span, _) = self.item(key)?;
        let s = self.string(cx, key)?;
        if s.is_empty() {
            cx.error(span, format!("`{key}` must not be empty"));
            return None;
        }
        Some(PathBuf::from(s))
    }
}

/// `"500ms"`, `"30s"`, `"2m"`, `"1h"`, or bare seconds `"30"`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// The sub-tables of an array-of-tables key (`[[peers]]`), also accepting an inline array of
/// inline tables (`peers = [{...}]`).
pub(super) fn table_list<'a>(cx: &mut Cx<'_>, root: Tbl<'a>, key: &str) -> Vec<Tbl<'a>> {
    let Some((_, item)) = root.get(key) else {
        return Vec::new();
    };
    match item {
        Item::ArrayOfTables(list) => list.iter().map(Tbl::Table).collect(),
        Item::Value(Value::Array(array)) => {
            let mut out = Vec::new();
            for v in array.iter() {
                match v {
                    Value::InlineTable(t) => out.push(Tbl::Inline(t)),
                    other => cx.error(other.span(), format!("`{key}` entries must be tables")),
                }
            }
            out
        }
        other => {
            cx.error(
                other.span(),
                format!("`{key}` must be written as [[{key}]] tables"),
            );
            Vec::new()
        }
    }
}

pub(super) fn sub_table<'a>(cx: &mut Cx<'_>, root: Tbl<'a>, key: &str) -> Option<Tbl<'a>> {
    let (_, item) = root.get(key)?;
    let t = Tbl::of(item);
    if t.is_none() {
        cx.error(item.span(), format!("`{key}` must be a table ([{key}])"));
    }
    t
}
