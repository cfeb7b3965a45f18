//! The dictionary the bridge runs with, and how a reload replaces it.
//!
//! The protocol core (validation, request building) and the shared-memory driver (JSON both
//! ways) borrow the dictionary as `&'static Dictionary`: no reference count is touched per
//! request. A reload (`dmbridge ctl reload`, SIGHUP) re-reads the dictionary files the
//! configuration names; when their bytes differ from the running ones it builds a new
//! dictionary and leaks it, so that whatever still borrows the old one (a request being
//! validated, a reader) stays valid. The cost is one dictionary per reload that actually
//! changed a file (a reload with unchanged files builds and keeps nothing; a refused file
//! keeps nothing either), bounded by the operator's edits, not by traffic.
//!
//! The node loop gets the new dictionary with the new configuration (one step, so what is
//! accepted changes together with the rest of the reload); the shared-memory driver reads the
//! [`CurrentDictionary`]'s generation once per turn of its loop (one atomic load, no lock)
//! and takes the new one between two requests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dmnode::config::Config;
use dmproto::dict::Dictionary;

/// Why the dictionaries were not read or built; the running dictionary stays on a reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DictionaryError {
    /// A file `[node] dictionaries` names could not be read (path as opened).
    #[error("{}: {source}", path.display())]
    Read {
        /// The file, as opened.
        path: PathBuf,
        /// What the system or parser said.
        source: std::io::Error,
    },
    /// A file does not load: the error names its file and line.
    #[error("{0}")]
    File(#[from] dmproto::dict::DictError),
}

/// The dictionary files a configuration names, as read (path, bytes), in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources(Vec<(PathBuf, Vec<u8>)>);

impl Sources {
    /// Reads the files `[node] dictionaries` names (relative to the configuration file).
    pub fn read(config: &Config, config_file: &Path) -> Result<Sources, DictionaryError> {
        let base = config_file.parent().unwrap_or(Path::new("."));
        config
            .node
            .dictionaries
            .iter()
            .map(|p| {
                let path = base.join(p);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok((path, bytes)),
                    Err(source) => Err(DictionaryError::Read { path, source }),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Sources)
    }

    /// The built-in dictionary extended with these files, all or nothing
    /// ([`Dictionary::with_files`], the rule the workers' library builds with too); an error
    /// names its file and line.
    pub fn build(&self) -> Result<Dictionary, DictionaryError> {
        Ok(Dictionary::with_files(
            self.0
                .iter()
                .map(|(path, bytes)| (path.display().to_string(), bytes)),
        )?)
    }

    /// The files for the workers' library ([`dmshm::control::encode_sources`]), which builds
    /// the same dictionary with [`Dictionary::with_files`].
    pub fn blob(&self) -> Vec<u8> {
        let names: Vec<String> = self
            .0
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        dmshm::control::encode_sources(
            names
                .iter()
                .zip(&self.0)
                .map(|(n, (_, bytes))| (n.as_str(), bytes.as_slice())),
        )
    }

    /// [`Sources::build`], kept for the life of the process (see the module docs); the
    /// built-in dictionary itself when no file is named.
    pub fn build_static(&self) -> Result<&'static Dictionary, DictionaryError> {
        if self.0.is_empty() {
            return Ok(Dictionary::builtin());
        }
        Ok(Box::leak(Box::new(self.build()?)))
    }
}

struct Shared {
    generation: AtomicU64,
    current: Mutex<(&'static Dictionary, Sources)>,
}

/// The running dictionary, shared by the reload (which replaces it) and the drivers that
/// follow it.
#[derive(Clone)]
pub struct CurrentDictionary(Arc<Shared>);

impl std::fmt::Debug for CurrentDictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CurrentDictionary(generation {})", self.generation())
    }
}

/// What a reload did to the dictionary.
#[derive(Clone, Copy, Debug)]
pub enum Reloaded {
    /// The files' bytes are the running ones: nothing built.
    Unchanged,
    /// A new dictionary was built from changed files.
    Replaced(&'static Dictionary),
}

impl CurrentDictionary {
    /// The dictionary the process started with, built from `sources`.
    pub fn new(dict: &'static Dictionary, sources: Sources) -> CurrentDictionary {
        CurrentDictionary(Arc::new(Shared {
            generation: AtomicU64::new(0),
            current: Mutex::new((dict, sources)),
        }))
    }

    /// Changes each time the dictionary is replaced (one atomic load: per loop turn is fine).
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// The running dictionary.
    pub fn get(&self) -> &'static Dictionary {
        self.lock().0
    }

    /// The running dictionary's files, for the workers ([`Sources::blob`]).
    pub fn sources_blob(&self) -> Vec<u8> {
        self.lock().1.blob()
    }

    /// Builds the dictionary of `sources` if they differ from the running ones. Refuses a bad
    /// file (the running dictionary stays). Does not install it: see [`Self::install`].
    pub fn prepare(&self, sources: &Sources) -> Result<Reloaded, DictionaryError> {
        if self.lock().1 == *sources {
            return Ok(Reloaded::Unchanged);
        }
        sources.build_static().map(Reloaded::Replaced)
    }

    /// Makes `dict` (from [`Self::prepare`] on `sources`) the running dictionary.
    pub fn install(&self, dict: &'static Dictionary, sources: Sources) {
        *self.lock() = (dict, sources);
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (&'static Dictionary, Sources)> {
        self.0.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACME: &str = "VENDOR 99999 Acme\nATTRIBUTE Acme-Tariff-Class 1001 unsigned32 99999\n";

    fn sources(text: &str) -> Sources {
        Sources(vec![(PathBuf::from("acme.dict"), text.as_bytes().to_vec())])
    }

    #[test]
    fn unchanged_files_build_nothing_changed_ones_replace_bad_ones_are_refused() {
        let first = sources(ACME);
        let cur = CurrentDictionary::new(first.build_static().unwrap(), first.clone());
        assert!(cur.get().avp_by_name("Acme-Tariff-Class").is_some());
        assert!(matches!(cur.prepare(&first), Ok(Reloaded::Unchanged)));

        let second = sources(&ACME.replace("Tariff-Class", "Zone"));
        let Ok(Reloaded::Replaced(d)) = cur.prepare(&second) else {
            panic!("a changed file is not rebuilt");
        };
        // Prepared, not yet running.
        assert_eq!(cur.generation(), 0);
        assert!(cur.get().avp_by_name("Acme-Zone").is_none());
        cur.install(d, second.clone());
        assert_eq!(cur.generation(), 1);
        assert!(cur.get().avp_by_name("Acme-Zone").is_some());
        assert!(cur.get().avp_by_name("Acme-Tariff-Class").is_none());

        let bad = sources("VENDOR 99999 Acme\nATTRIBUTE Acme-Zone 1001 nosuchtype 99999\n");
        let e = cur.prepare(&bad).unwrap_err();
        assert!(matches!(e, DictionaryError::File(_)), "{e:?}");
        assert!(e.to_string().contains("acme.dict:2"), "{e}");
        assert_eq!(cur.generation(), 1);
        assert!(cur.get().avp_by_name("Acme-Zone").is_some());
    }

    #[test]
    fn a_missing_file_is_a_read_error_with_the_path_as_opened() {
        let dir = std::env::temp_dir().join(format!("dmb-dictionary-{}", std::process::id()));
        let config = dmnode::config::parse(
            "[node]\norigin_host = \"me.example.net\"\norigin_realm = \"example.net\"\n\
             dictionaries = [\"nosuch.dict\"]\n[[applications]]\nid = 4\n",
        )
        .unwrap();
        let e = Sources::read(&config, &dir.join("dmbridge.toml")).unwrap_err();
        match &e {
            DictionaryError::Read { path, source } => {
                assert_eq!(path, &dir.join("nosuch.dict"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string()
                .starts_with(&format!("{}: ", dir.join("nosuch.dict").display())),
            "{e}"
        );
    }
}
