//! Reading the configuration file: the TOML ([`dmnode::config::parse`]) and the routing rules
//! file it names (`[routing] rules_file`, freeDiameter's `rt_default.conf` syntax, relative to
//! the configuration file), which the node takes as data (it does no I/O). Every error comes
//! back as `file:line:column: message`, the rules file's with its own name and lines.

use std::path::{Path, PathBuf};

use dmnode::config::{Config, ConfigError};
use dmnode::rules::RuleError;

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
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let mut config = dmnode::config::parse(&text).map_err(|errors| LoadError::Config {
        path: file.to_path_buf(),
        errors,
    })?;
    if let Some(path) = rules_path(&config, file) {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(source) => return Err(LoadError::ReadRules { path, source }),
        };
        config.routing.rules =
            dmnode::rules::parse(&text).map_err(|errors| LoadError::Rules { path, errors })?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
