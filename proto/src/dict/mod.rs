//! Dictionaries: built-in definitions for the base protocol and the IMS applications, plus
//! user files in the OpenSIPS `aaa_diameter` format, with constant-time look-ups.
//!
//! A [`Dictionary`] is plain data built once at start-up and then only read: the codec asks
//! it for an AVP's type on every AVP it decodes, the JSON mapping for names, the validator for
//! ABNF rules. So every look-up is one hash probe into a table indexed by the key the caller
//! has in hand ((code, vendor), name, (application, command code), abbreviation), never a
//! scan and never an allocation.
//!
//! The built-in dictionaries are data files in the same (extended) format users write,
//! embedded in the binary and parsed on first use (see [`builtin`]); [`loader`] documents the
//! format and its extensions, [`print`](mod@print) renders definitions for `dmbridge dict`.

pub mod builtin;
pub mod freediameter;
pub mod loader;
pub mod model;
pub mod print;

pub use loader::{same_wire_format, DictError, DictErrorKind};
pub use model::*;

use rustc_hash::FxHashMap;
use std::path::Path;
use std::sync::OnceLock;

/// Where a definition came from (file name and line), for conflict messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    pub file: Box<str>,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The set of AVP, command, application and vendor definitions in force.
///
/// Definitions are stored once in vectors; the hash maps hold indexes into them, so aliases
/// (a user file re-declaring a built-in AVP under another name) cost one map entry.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    pub(crate) avps: Vec<AvpDef>,
    pub(crate) avp_origin: Vec<Origin>,
    pub(crate) avp_by_key: FxHashMap<(u32, u32), usize>,
    pub(crate) avp_by_name: FxHashMap<Box<str>, usize>,

    pub(crate) commands: Vec<CommandDef>,
    pub(crate) command_origin: Vec<Origin>,
    /// (application id, command code) -> command.
    pub(crate) cmd_by_key: FxHashMap<(u32, u32), usize>,
    /// command code -> the preferred definition when the application has none of its own
    /// (the base protocol's, else the first one loaded).
    pub(crate) cmd_by_code: FxHashMap<u32, usize>,
    /// Upper-cased abbreviations ("PPR", "PPA") -> command (first definition wins).
    pub(crate) cmd_by_abbr: FxHashMap<Box<str>, usize>,
    /// "Push-Profile", "Push-Profile-Request", "Push-Profile-Answer" -> command.
    pub(crate) cmd_by_name: FxHashMap<Box<str>, usize>,

    pub(crate) apps: Vec<AppDef>,
    pub(crate) app_by_id: FxHashMap<u32, usize>,
    pub(crate) vendors: Vec<VendorDef>,
    pub(crate) vendor_by_id: FxHashMap<u32, usize>,

    /// freeDiameter's name of each AVP its dictionaries define, by (code, vendor), for
    /// [`Dictionary::use_freediameter_names`] (see [`freediameter`]).
    pub(crate) fd_names: FxHashMap<(u32, u32), Box<str>>,
    /// freeDiameter's name (without -Request/-Answer) of each command, by (application, code).
    pub(crate) fd_commands: FxHashMap<(u32, u32), Box<str>>,
}

/// Longest abbreviation [`Dictionary::command_by_abbr`] upper-cases on the stack.
const MAX_ABBR: usize = 16;

impl Dictionary {
    /// An empty dictionary (no base protocol either); mostly for tests and tools that want to
    /// see exactly what one file defines.
    pub fn empty() -> Dictionary {
        Dictionary::default()
    }

    /// The built-in dictionaries (base protocol and every built-in application), parsed once
    /// on first use and shared for the life of the process.
    pub fn builtin() -> &'static Dictionary {
        static BUILTIN: OnceLock<Dictionary> = OnceLock::new();
        BUILTIN.get_or_init(builtin::build)
    }

    /// An owned copy of the built-ins, to extend with user files at start-up.
    pub fn new_with_builtin() -> Dictionary {
        Dictionary::builtin().clone()
    }

    /// The built-in dictionaries extended with these files (name, contents), in order, all
    /// or nothing. This is the one rule for "the dictionary a configuration names": the
    /// bridge builds its dictionary with it, and the worker library builds the same one from
    /// the files the bridge sends it, so a script's reply is converted in the SIP worker
    /// exactly as the bridge would convert it.
    pub fn with_files<N, B>(
        files: impl IntoIterator<Item = (N, B)>,
    ) -> Result<Dictionary, DictError>
    where
        N: AsRef<str>,
        B: AsRef<[u8]>,
    {
        let mut dict = Dictionary::new_with_builtin();
        for (name, bytes) in files {
            dict.load_bytes(bytes.as_ref(), name.as_ref())?;
        }
        Ok(dict)
    }

    /// Loads a dictionary file in the `aaa_diameter` format. All or nothing: on error the
    /// dictionary is unchanged.
    pub fn load_file(&mut self, path: &Path) -> Result<(), DictError> {
        let origin = path.display().to_string();
        let text = std::fs::read(path).map_err(|e| DictError {
            origin: origin.clone(),
            line: 0,
            kind: DictErrorKind::Io(e.to_string()),
        })?;
        self.load_bytes(&text, &origin)
    }

    /// Loads a dictionary file's contents; `origin` names it in errors. Bytes that are not
    /// UTF-8 are an error naming the line of the first bad byte (a file saved in Latin-1 is
    /// the usual cause). All or nothing.
    pub fn load_bytes(&mut self, bytes: &[u8], origin: &str) -> Result<(), DictError> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            DictError {
                origin: origin.to_string(),
                line,
                kind: DictErrorKind::Syntax("not valid UTF-8".into()),
            }
        })?;
        self.load_str(text, origin)
    }

    /// Loads dictionary text; `origin` names it in errors (`origin:line: what`). All or
    /// nothing: on error the dictionary is unchanged.
    pub fn load_str(&mut self, text: &str, origin: &str) -> Result<(), DictError> {
        // Editors on some systems start UTF-8 files with a byte order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let parsed = loader::parse(text, origin)?;
        let fd_names = parsed.freediameter_names;
        let mut staged = self.clone();
        loader::apply(&mut staged, parsed)?;
        if fd_names {
            staged.use_freediameter_names();
        }
        *self = staged;
        Ok(())
    }

    /// The AVP with this code and vendor (0 for IETF AVPs).
    #[inline]
    pub fn avp(&self, code: u32, vendor: u32) -> Option<&AvpDef> {
        self.avp_by_key
            .get(&(code, vendor))
            .and_then(|&i| self.avps.get(i))
    }

    /// The AVP with this name (exact, case-sensitive, as in JSON keys), including aliases
    /// given by user files.
    #[inline]
    pub fn avp_by_name(&self, name: &str) -> Option<&AvpDef> {
        self.avp_by_name.get(name).and_then(|&i| self.avps.get(i))
    }

    /// The command definition for this application and code; when the application has no
    /// definition of its own, any definition with that code (the base protocol's first), so
    /// e.g. a Re-Auth-Request of an unknown application still gets a name and the base ABNF.
    #[inline]
    pub fn command(&self, app_id: u32, code: u32) -> Option<&CommandDef> {
        self.cmd_by_key
            .get(&(app_id, code))
            .or_else(|| self.cmd_by_code.get(&code))
            .and_then(|&i| self.commands.get(i))
    }

    /// Only the definition for exactly this (application, code), without the fallback of
    /// [`Dictionary::command`].
    #[inline]
    pub fn command_exact(&self, app_id: u32, code: u32) -> Option<&CommandDef> {
        self.cmd_by_key
            .get(&(app_id, code))
            .and_then(|&i| self.commands.get(i))
    }

    /// The command with this request or answer abbreviation ("PPR", "ppa"); case-insensitive.
    /// Where several applications share an abbreviation (RAR in base, Rx and Gx; PPR in Cx and
    /// RFC 4740) this is the first defined (the base protocol's, Cx's: see
    /// [`builtin::FILES`]); use [`Dictionary::command`] with the application to be exact.
    pub fn command_by_abbr(&self, abbr: &str) -> Option<&CommandDef> {
        let bytes = abbr.as_bytes();
        if bytes.len() > MAX_ABBR {
            return None;
        }
        let mut buf = [0u8; MAX_ABBR];
        let upper = &mut buf[..bytes.len()];
        upper.copy_from_slice(bytes);
        upper.make_ascii_uppercase();
        // Upper-casing ASCII bytes keeps valid UTF-8 valid.
        let key = std::str::from_utf8(upper).ok()?;
        self.cmd_by_abbr
            .get(key)
            .and_then(|&i| self.commands.get(i))
    }

    /// The command with this name, with or without the "-Request"/"-Answer" suffix
    /// ("Push-Profile", "Push-Profile-Request"); exact case.
    #[inline]
    pub fn command_by_name(&self, name: &str) -> Option<&CommandDef> {
        self.cmd_by_name
            .get(name)
            .and_then(|&i| self.commands.get(i))
    }

    /// The application with this id.
    #[inline]
    pub fn application(&self, id: u32) -> Option<&AppDef> {
        self.app_by_id.get(&id).and_then(|&i| self.apps.get(i))
    }

    /// All applications, in load order.
    pub fn applications(&self) -> impl Iterator<Item = &AppDef> {
        self.apps.iter()
    }

    /// The vendor with this id.
    #[inline]
    pub fn vendor(&self, id: u32) -> Option<&VendorDef> {
        self.vendor_by_id
            .get(&id)
            .and_then(|&i| self.vendors.get(i))
    }

    /// All vendors, in load order.
    pub fn vendors(&self) -> impl Iterator<Item = &VendorDef> {
        self.vendors.iter()
    }

    /// All commands, in load order.
    pub fn commands(&self) -> impl Iterator<Item = &CommandDef> {
        self.commands.iter()
    }

    /// All AVPs, in load order.
    pub fn avps(&self) -> impl Iterator<Item = &AvpDef> {
        self.avps.iter()
    }

    /// The name to show for an AVP: the dictionary name, else `None` (the JSON mapping then
    /// writes `"code"` or `"code:vendor"`).
    #[inline]
    pub fn avp_name(&self, code: u32, vendor: u32) -> Option<&str> {
        self.avp(code, vendor).map(|d| &*d.name)
    }

    /// Where an AVP definition came from (`file:line`), for tools and error messages.
    pub fn avp_origin(&self, code: u32, vendor: u32) -> Option<String> {
        let i = *self.avp_by_key.get(&(code, vendor))?;
        self.avp_origin.get(i).map(|o| o.to_string())
    }

    // ---- building (used by the loader) ----

    pub(crate) fn insert_avp(&mut self, def: AvpDef, origin: Origin) -> usize {
        let i = self.avps.len();
        self.avp_by_key.insert((def.code, def.vendor), i);
        self.avp_by_name.entry(def.name.clone()).or_insert(i);
        self.avps.push(def);
        self.avp_origin.push(origin);
        i
    }

    pub(crate) fn insert_command(&mut self, def: CommandDef, origin: Origin) -> usize {
        let i = self.commands.len();
        self.cmd_by_key.insert((def.app_id, def.code), i);
        match self.cmd_by_code.get(&def.code) {
            // The base protocol's definition is the best fallback for unknown applications.
            Some(&j) if self.commands.get(j).is_some_and(|c| c.app_id == 0) => {}
            Some(_) if def.app_id != 0 => {}
            _ => {
                self.cmd_by_code.insert(def.code, i);
            }
        }
        for abbr in [&def.request_abbr, &def.answer_abbr] {
            if !abbr.is_empty() && abbr.len() <= MAX_ABBR {
                self.cmd_by_abbr
                    .entry(abbr.to_ascii_uppercase().into_boxed_str())
                    .or_insert(i);
            }
        }
        self.add_command_names(i, &def.name);
        self.commands.push(def);
        self.command_origin.push(origin);
        i
    }

    pub(crate) fn add_command_names(&mut self, i: usize, base: &str) {
        for name in [
            base.to_string(),
            format!("{base}-Request"),
            format!("{base}-Answer"),
        ] {
            self.cmd_by_name.entry(name.into_boxed_str()).or_insert(i);
        }
    }

    pub(crate) fn insert_app(&mut self, def: AppDef) {
        if self.app_by_id.contains_key(&def.id) {
            return;
        }
        self.app_by_id.insert(def.id, self.apps.len());
        self.apps.push(def);
    }

    pub(crate) fn insert_vendor(&mut self, def: VendorDef) {
        if self.vendor_by_id.contains_key(&def.id) {
            return;
        }
        self.vendor_by_id.insert(def.id, self.vendors.len());
        self.vendors.push(def);
    }
}

#[cfg(test)]
mod tests;
