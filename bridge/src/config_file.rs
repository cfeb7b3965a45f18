//! Reading the configuration file: the TOML ([`dmnode::config::parse`]) and the routing rules
//! file it names (`[routing] rules_file`, freeDiameter's `rt_default.conf` syntax, relative to
//! the configuration file), which the node takes as data (it does no I/O). Every error comes
//! back as `file:line:column: message`, the rules file's with its own name and lines.

use std::path::{Path, PathBuf};

use dmnode::config::Config;

/// `rules_file` as the process opens it: relative to the configuration file's directory.
pub fn rules_path(config: &Config, config_file: &Path) -> Option<PathBuf> {
    let f = config.routing.rules_file.as_ref()?;
    Some(match config_file.parent() {
        Some(dir) if f.is_relative() => dir.join(f),
        _ => f.clone(),
    })
}

/// Reads and validates the configuration file and the rules file it names.
pub fn load(file: &Path) -> Result<Config, Vec<String>> {
    let text =
        std::fs::read_to_string(file).map_err(|e| vec![format!("{}: {e}", file.display())])?;
    let mut config = dmnode::config::parse(&text).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}:{}:{}: {}", file.display(), e.line, e.column, e.message))
            .collect::<Vec<_>>()
    })?;
    if let Some(path) = rules_path(&config, file) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("{}: rules_file: {e}", path.display())])?;
        config.routing.rules = dmnode::rules::parse(&text).map_err(|errors| {
            errors
                .iter()
                .map(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message))
                .collect::<Vec<_>>()
        })?;
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
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with(&format!("{rt}:3:")), "{e:?}");
        assert!(e[1].starts_with(&format!("{rt}:4:")), "{e:?}");
        std::fs::remove_file(dir.join("rt.conf")).unwrap();
        let e = load(&cfg).unwrap_err();
        assert!(e[0].contains("rules_file"), "{e:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
