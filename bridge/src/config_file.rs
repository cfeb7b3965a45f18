//! Reading the configuration file: the TOML ([`dmnode::config::parse`]) and the routing rules
//! file it names (`[routing] rules_file`, freeDiameter's `rt_default.conf` syntax, relative to
//! the configuration file), which the node takes as data (it does no I/O). Every error comes
//! back as `file:line:column: message`, the rules file's with its own name and lines.

use std::path::{Path, PathBuf};

use dmnode::config::{Config, ConfigError};
use dmnode::rules::RuleError;
use dmshm::sched::Scheduling;

/// Why a configuration file (or the rules file it names) was refused. `Display` gives one
/// line per problem, `file:line:column: message` (the rules file's with its own name and
/// lines), which `dmbridge run`/`check-config` print and a refused reload logs and answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file, as opened.
        path: PathBuf,
        /// What the system or parser said.
        source: std::io::Error,
    },
    /// The configuration does not validate: every problem, in file order.
    #[error("{}", lines(path, errors))]
    Config {
        /// The file, as opened.
        path: PathBuf,
        /// Every problem, in file order.
        errors: Vec<ConfigError>,
    },
    /// `[routing] rules_file` could not be read (path as opened, relative to the
    /// configuration's directory).
    #[error("{}: rules_file: {source}", path.display())]
    ReadRules {
        /// The file, as opened.
        path: PathBuf,
        /// What the system or parser said.
        source: std::io::Error,
    },
    /// The rules file does not parse: every bad rule, in file order.
    #[error("{}", lines(path, errors))]
    Rules {
        /// The file, as opened.
        path: PathBuf,
        /// Every problem, in file order.
        errors: Vec<RuleError>,
    },
}

/// Positioned errors (a config's or a rules file's), one `file:line:column: message` line each.
trait Positioned {
    fn position(&self) -> (usize, usize, &str);
}

impl Positioned for ConfigError {
    fn position(&self) -> (usize, usize, &str) {
        (self.line, self.column, &self.message)
    }
}

impl Positioned for RuleError {
    fn position(&self) -> (usize, usize, &str) {
        (self.line, self.column, &self.message)
    }
}

fn lines(path: &Path, errors: &[impl Positioned]) -> String {
    errors
        .iter()
        .map(|e| {
            let (line, column, message) = e.position();
            format!("{}:{line}:{column}: {message}", path.display())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `rules_file` as the process opens it: relative to the configuration file's directory.
pub fn rules_path(config: &Config, config_file: &Path) -> Option<PathBuf> {
    let f = config.routing.rules_file.as_ref()?;
    Some(match config_file.parent() {
        Some(dir) if f.is_relative() => dir.join(f),
        _ => f.clone(),
    })
}

/// Reads and validates the configuration file and the rules file it names.
pub fn load(file: &Path) -> Result<Config, LoadError> {
    load_with_scheduling(file).map(|(config, _)| config)
}

/// [`load`], and the file's `[scheduling]` table, which the node does not read: `dmbridge run`
/// applies it to its runtime threads at start-up ([`scheduling`]).
pub fn load_with_scheduling(file: &Path) -> Result<(Config, Scheduling), LoadError> {
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let config_error = |errors: Vec<ConfigError>| LoadError::Config {
        path: file.to_path_buf(),
        errors,
    };
    // One parse for both readers: the node's sections and the bridge's `[scheduling]`.
    let doc = dmnode::config::document(&text).map_err(config_error)?;
    let (mut config, sched) = match (
        dmnode::config::parse_document(&text, &doc),
        scheduling(&text, &doc),
    ) {
        (Ok(c), Ok(s)) => (c, s),
        (parsed, sched) => {
            let mut errors = parsed.err().unwrap_or_default();
            errors.extend(sched.err().unwrap_or_default());
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(config_error(errors));
        }
    };
    if let Some(path) = rules_path(&config, file) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(LoadError::ReadRules { path, source }),
        };
        config.routing.rules =
            dmnode::rules::parse(&text).map_err(|errors| LoadError::Rules { path, errors })?;
    }
    Ok((config, sched))
}

/// The keys of `[scheduling]`.
const SCHEDULING_KEYS: &[&str] = &["slice_us", "nice", "fifo_priority"];

/// `[scheduling]`: how the kernel schedules the bridge's runtime thread(s) (issue 15 item 3;
/// [`dmshm::sched`] says what each setting does and what privilege it needs). Applied once, at
/// start-up, to the thread that then starts the others; a reload checks it but a change takes
/// a restart.
///
/// ```toml
/// [scheduling]
/// slice_us = 100        # EEVDF slice (Linux 6.12+), 100..=100000 us; no privilege needed
/// nice = -5             # optional; below the current nice needs CAP_SYS_NICE/LimitNICE=
/// fifo_priority = 10    # optional, SCHED_FIFO 1..=99 instead (LimitRTPRIO=, RestrictRealtime=no)
/// ```
///
/// Absent: the kernel's defaults. Errors come with their line and column, like the node's.
pub fn scheduling(
    text: &str,
    doc: &toml_edit::ImDocument<&str>,
) -> Result<Scheduling, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut error = |span: Option<std::ops::Range<usize>>, message: String| {
        errors.push(ConfigError::at(text, span, message));
    };
    let mut s = Scheduling::default();
    let Some(item) = doc.as_table().get("scheduling") else {
        return Ok(s);
    };
    let Some(table) = item.as_table_like() else {
        error(item.span(), "[scheduling] must be a table".into());
        return Err(errors);
    };
    for (key, value) in table.iter() {
        let span = table
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .or_else(|| value.span());
        let (min, max) = match key {
            "slice_us" => (
                dmshm::sched::MIN_SLICE.as_micros() as i64,
                dmshm::sched::MAX_SLICE.as_micros() as i64,
            ),
            "nice" => (
                i64::from(*dmshm::sched::NICE.start()),
                i64::from(*dmshm::sched::NICE.end()),
            ),
            "fifo_priority" => (
                i64::from(*dmshm::sched::FIFO_PRIORITY.start()),
                i64::from(*dmshm::sched::FIFO_PRIORITY.end()),
            ),
            _ => {
                error(
                    span,
                    format!(
                        "unknown key `{key}` in [scheduling] (known: {})",
                        SCHEDULING_KEYS.join(", ")
                    ),
                );
                continue;
            }
        };
        let Some(v) = value.as_integer() else {
            error(span, format!("`{key}` in [scheduling] must be an integer"));
            continue;
        };
        if !(min..=max).contains(&v) {
            error(
                value.span().or(span),
                format!("`{key}` = {v} is out of range {min}..={max}"),
            );
            continue;
        }
        match key {
            "slice_us" => s.slice = Some(std::time::Duration::from_micros(v as u64)),
            "nice" => s.nice = Some(v as i32),
            _ => s.fifo_priority = Some(v as u32),
        }
    }
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`scheduling`] of `text`, parsed as `load` parses it.
    fn sched(text: &str) -> Result<Scheduling, Vec<ConfigError>> {
        scheduling(text, &dmnode::config::document(text).unwrap())
    }

    const CONFIG: &str =
        "[node]\norigin_host = \"me.example.net\"\norigin_realm = \"example.net\"\n\
        [[applications]]\nid = 4\n[routing]\nrules_file = \"rt.conf\"\n";

    #[test]
    fn rules_file_is_read_beside_the_config_and_its_errors_keep_their_lines() {
        let dir = std::env::temp_dir().join(format!("dmb-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("dmbridge.toml");
        std::fs::write(&cfg, CONFIG).unwrap();
        std::fs::write(
            dir.join("rt.conf"),
            "# ok\n* : \"a.example.net\" += DEFAULT ;\n",
        )
        .unwrap();
        let c = load(&cfg).unwrap();
        assert_eq!(c.routing.rules.rules().len(), 1);
        assert_eq!(c.routing.rules.rules()[0].line, 2);
        std::fs::write(
            dir.join("rt.conf"),
            "\n\n* : \"a\" += MANY ;\nxx : \"b\" += 1 ;\n",
        )
        .unwrap();
        let e = load(&cfg).unwrap_err();
        let rt = dir.join("rt.conf").display().to_string();
        let LoadError::Rules { path, errors } = &e else {
            panic!("{e:?}");
        };
        assert_eq!((path, errors.len()), (&dir.join("rt.conf"), 2), "{e:?}");
        let text = e.to_string();
        let shown: Vec<&str> = text.lines().collect();
        assert_eq!(shown.len(), 2, "{e}");
        assert!(shown[0].starts_with(&format!("{rt}:3:")), "{e}");
        assert!(shown[1].starts_with(&format!("{rt}:4:")), "{e}");
        std::fs::remove_file(dir.join("rt.conf")).unwrap();
        let e = load(&cfg).unwrap_err();
        assert!(
            matches!(&e, LoadError::ReadRules { path, source }
                if path == &dir.join("rt.conf") && source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
        assert!(e.to_string().contains("rules_file"), "{e}");
        std::fs::write(&cfg, "[node]\norigin_host = 7\n").unwrap();
        let e = load(&cfg).unwrap_err();
        assert!(
            matches!(&e, LoadError::Config { errors, .. } if !errors.is_empty()),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&format!("{}:", cfg.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = load(&cfg).unwrap_err();
        assert!(
            matches!(&e, LoadError::Read { path, source }
                if path == &cfg && source.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
    }

    const BASE: &str = "[node]\norigin_host = \"me.example.net\"\norigin_realm = \"example.net\"\n\
        [[applications]]\nid = 4\n";

    #[test]
    fn scheduling_is_read_and_absent_means_the_kernel_s_defaults() {
        assert!(sched(BASE).unwrap().is_default());
        let s = sched(&format!(
            "{BASE}[scheduling]\nslice_us = 100\nnice = -5\nfifo_priority = 10\n"
        ))
        .unwrap();
        assert_eq!(s.slice, Some(std::time::Duration::from_micros(100)));
        assert_eq!((s.nice, s.fifo_priority), (Some(-5), Some(10)));
        // the node's reader takes the table too, and load hands it over
        let dir = std::env::temp_dir().join(format!("dmb-config-sched-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("dmbridge.toml");
        std::fs::write(&cfg, format!("{BASE}[scheduling]\nslice_us = 300\n")).unwrap();
        let (_, s) = load_with_scheduling(&cfg).unwrap();
        assert_eq!(s.slice, Some(std::time::Duration::from_micros(300)));
        // a bad key is refused by load (check-config, reload) with its line, next to the
        // node's own errors in file order
        std::fs::write(
            &cfg,
            format!("{BASE}[scheduling]\nslice_us = 50\n[timers]\ntc = \"x\"\n"),
        )
        .unwrap();
        let e = load(&cfg).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        assert!(
            lines[0].contains(":7:12: `slice_us` = 50 is out of range 100..=100000"),
            "{e}"
        );
        assert!(lines[1].contains(":9:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_scheduling_keys_are_refused_with_their_lines() {
        let at = |extra: &str| -> Vec<(usize, String)> {
            sched(&format!("{BASE}[scheduling]\n{extra}"))
                .unwrap_err()
                .into_iter()
                .map(|e| (e.line, e.message))
                .collect()
        };
        let e = at("slice = 100\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, 7);
        assert!(
            e[0].1.contains("unknown key `slice` in [scheduling]"),
            "{e:?}"
        );
        let e = at("slice_us = \"100us\"\nnice = 20\nfifo_priority = 0\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].1.contains("must be an integer"), "{e:?}");
        assert!(
            e[1].1.contains("`nice` = 20 is out of range -20..=19"),
            "{e:?}"
        );
        assert!(
            e[2].1
                .contains("`fifo_priority` = 0 is out of range 1..=99"),
            "{e:?}"
        );
        assert_eq!((e[1].0, e[2].0), (8, 9));
        let e = sched(&format!("scheduling = 3\n{BASE}")).unwrap_err();
        assert!(e[0].message.contains("must be a table"), "{e:?}");
    }
}
