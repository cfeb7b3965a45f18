//! The built-in dictionaries: data files in the extended `aaa_diameter` format (see
//! [`super::loader`]), embedded in the binary and parsed once, on first use, by
//! [`super::Dictionary::builtin`].
//!
//! Keeping them as data rather than Rust tables means one parser for built-ins and user files
//! (so the format is exercised by every test), and a reader can check a definition against the
//! specification line by line. The files are applied as one unit, so they may refer to each
//! other's AVPs in any order (Rx and Gx share grouped AVPs in both directions).

use super::loader;
use super::Dictionary;

/// (file name, text) of every built-in dictionary, in load order. The order decides which
/// definition the by-abbreviation and by-name look-ups return when two share one: base
/// protocol first, then Cx before Sh before S6a (PUR is Sh's Profile-Update), RFC 4740 last.
pub const FILES: &[(&str, &str)] = &[
    ("base.dict", include_str!("builtin/base.dict")),
    ("nas.dict", include_str!("builtin/nas.dict")),
    (
        "credit_control.dict",
        include_str!("builtin/credit_control.dict"),
    ),
    ("cx.dict", include_str!("builtin/cx.dict")),
    ("sh.dict", include_str!("builtin/sh.dict")),
    ("rx.dict", include_str!("builtin/rx.dict")),
    ("gx.dict", include_str!("builtin/gx.dict")),
    ("ro_rf.dict", include_str!("builtin/ro_rf.dict")),
    ("s6a.dict", include_str!("builtin/s6a.dict")),
    // Last of the applications: where abbreviations or names collide (PPR, RTR, UAR, ...),
    // the first definition wins the by-abbreviation and by-name look-ups, and IMS scripts
    // mean Cx's, not RFC 4740's.
    ("sip.dict", include_str!("builtin/sip.dict")),
    ("opensips.dict", include_str!("builtin/opensips.dict")),
];

/// Parses and applies every built-in file as one unit.
pub(crate) fn try_build() -> Result<Dictionary, loader::DictError> {
    let mut all: Option<loader::Parsed> = None;
    for (name, text) in FILES {
        let origin = format!("builtin/{name}");
        let parsed = loader::parse(text, &origin)?;
        match all.as_mut() {
            Some(a) => a.append(parsed),
            None => all = Some(parsed),
        }
    }
    let mut dict = Dictionary::empty();
    if let Some(all) = all {
        loader::apply(&mut dict, all)?;
    }
    // Last, so the names above win where freeDiameter's collide with them.
    super::freediameter::apply(&mut dict);
    Ok(dict)
}

/// The built-in dictionary. The data is part of the program, so a parse error is a bug in
/// this crate (caught by the tests), not bad input; it panics with the `file:line` at fault.
pub(crate) fn build() -> Dictionary {
    match try_build() {
        Ok(d) => d,
        Err(e) => panic!("built-in dictionary is broken: {e}"),
    }
}
