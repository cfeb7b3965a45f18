//! freeDiameter's names for AVPs and commands, so scripts written for OpenSIPS `aaa_diameter`
//! (which loads freeDiameter's dictionaries) run unchanged.
//!
//! An `aaa_diameter` script names AVPs as freeDiameter's dictionary extensions do, e.g.
//! `User-Data-29.329` for Sh's User-Data (702), where the built-ins say `Sh-User-Data`.
//! [`names.tsv`](NAMES) lists every AVP, command and application name of freeDiameter's base
//! dictionary and of the extensions such a node loads (`dict_dcca_3gpp` and the RFC ones:
//! `dict_dcca`, `dict_nasreq`, `dict_sip`, `dict_rfc5777`, `dict_eap`, `dict_mip6a`,
//! `dict_mip6i`, `dict_nas_mipv6`), extracted from their sources by `freediameter/extract.py`.
//! `apply` (crate-private, run when the dictionary is built) folds it into the built-in dictionary:
//!
//! - an AVP the built-ins know under another name gets freeDiameter's name as an alias
//!   (input only: output keeps the built-in name unless [`Dictionary::use_freediameter_names`]);
//! - an AVP the built-ins do not know (about 1,200 3GPP AVPs, RFC 5777's filter AVPs, ...) is
//!   added under freeDiameter's name, type and M bit;
//! - a command the built-ins know gets freeDiameter's name for look-ups by name; one they do
//!   not know (NASREQ's AA, EAP's Diameter-EAP, MIPv6's MIP6) is added with an open ABNF
//!   (`*[ AVP ]`) and its RFC's abbreviations.
//!
//! Where one name means two AVPs (freeDiameter names 3GPP's SIP-Method, 824, and RFC 4740's,
//! 393, alike), a name resolves the way freeDiameter's `AVP_BY_NAME_ALL_VENDORS` search, which
//! `aaa_diameter` uses, resolves it: the IETF AVP (vendor 0) first, then by vendor id. The
//! other AVP keeps a name of its own (the built-in `3GPP-SIP-Method`; for an added AVP,
//! `3GPP-<name>` or `<name>-<vendor>`), and its freeDiameter name is what
//! [`Dictionary::freediameter_name`] gives.
//!
//! Commands: where freeDiameter and the built-ins give one name to two commands (RFC 4740's
//! User-Authorization-Request, 283, and Cx's, 300; NASREQ's AA-Request and Rx's; freeDiameter
//! has no 3GPP commands), the name-based look-up keeps the built-in order (the 3GPP command
//! first, see [`super::builtin::FILES`]); `Dictionary::command(app, code)` is exact for both.

use super::{Dictionary, Origin};
use crate::dict::model::*;
use crate::AvpType;

/// The extracted name list (tab-separated, `#` comments; the format is in its header).
pub const NAMES: &str = include_str!("freediameter/names.tsv");

/// What one line of [`NAMES`] defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An AVP definition (code in its vendor's space).
    Avp,
    /// A command (code in its application; request and answer are separate lines).
    Command,
    /// An application id, so a CER/CEA's Auth-Application-Id can be shown by name.
    Application,
}

/// One line of [`NAMES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Which table the line belongs in.
    pub kind: Kind,
    /// AVP or command code, or application id.
    pub code: u32,
    /// The AVP's vendor (0 for IETF), or the command's application (0 for the base protocol).
    pub scope: u32,
    /// AVP type, or `"R"`/`"A"` for a command's request/answer; `"-"` for an application.
    pub ty: &'a str,
    /// AVP M bit as freeDiameter defines it: `M` (must), `!M` (must not), `M?` (may).
    pub m_bit: &'a str,
    /// The freeDiameter source file (e.g. `dict_sip`).
    pub file: &'a str,
    /// The name freeDiameter gives the item, which dictionaries and scripts use to refer to it.
    pub name: &'a str,
}

/// Every entry of [`NAMES`], in file order. The list is part of the program, so a malformed
/// line is a bug caught by the tests; it is skipped here rather than failing start-up.
pub fn entries() -> impl Iterator<Item = Entry<'static>> {
    NAMES.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let mut f = line.split('\t');
    let kind = match f.next()? {
        "avp" => Kind::Avp,
        "cmd" => Kind::Command,
        "app" => Kind::Application,
        _ => return None,
    };
    let code = f.next()?.parse().ok()?;
    let scope = match f.next()? {
        "-" => 0,
        s => s.parse().ok()?,
    };
    let (ty, m_bit, file, name) = (f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some() || name.is_empty() {
        return None;
    }
    Some(Entry {
        kind,
        code,
        scope,
        ty,
        m_bit,
        file,
        name,
    })
}

/// freeDiameter definitions whose type contradicts the specification, with the type used.
pub const TYPE_FIXES: &[(u32, u32, AvpType, &str)] = &[
    (
        2852,
        10415,
        AvpType::Float32,
        "TS 29.212 5.3.x: Max-PLR-DL is Float32 (freeDiameter: Unsigned32)",
    ),
    (
        2853,
        10415,
        AvpType::Float32,
        "TS 29.212 5.3.x: Max-PLR-UL is Float32 (freeDiameter: Unsigned32)",
    ),
];

/// The origin `Dictionary::avp_origin` reports for definitions added from the list.
pub const ORIGIN: &str = "freeDiameter";

/// Folds freeDiameter's names into `dict` (see the module documentation). Entries are
/// applied IETF first, then by vendor id, which is the order in which freeDiameter's
/// by-name search tries vendors; so where two AVPs share a name the name resolves as there.
pub(crate) fn apply(dict: &mut Dictionary) {
    let mut avps: Vec<Entry<'_>> = entries().filter(|e| e.kind == Kind::Avp).collect();
    avps.sort_by_key(|e| e.scope);
    for e in &avps {
        apply_avp(dict, e);
    }
    for e in entries().filter(|e| e.kind == Kind::Command) {
        apply_command(dict, &e);
    }
}

fn origin(e: &Entry<'_>) -> Origin {
    Origin {
        file: format!("{ORIGIN}/{}", e.file).into_boxed_str(),
        line: 0,
    }
}

fn apply_avp(dict: &mut Dictionary, e: &Entry<'_>) {
    let key = (e.code, e.scope);
    if let Some(&i) = dict.avp_by_key.get(&key) {
        // Known: the name becomes an alias unless it already names an AVP (the earlier
        // one keeps it, as in freeDiameter's vendor-0-first search).
        dict.avp_by_name.entry(e.name.into()).or_insert(i);
        dict.fd_names.insert(key, e.name.into());
        return;
    }
    let Ok(mut ty) = e.ty.parse::<AvpType>() else {
        return;
    };
    if let Some(&(_, _, fixed, _)) = TYPE_FIXES.iter().find(|&&(c, v, _, _)| (c, v) == key) {
        ty = fixed;
    }
    let name: Box<str> = if dict.avp_by_name.contains_key(e.name) {
        if e.scope == 10415 {
            format!("3GPP-{}", e.name).into()
        } else {
            format!("{}-{}", e.name, e.scope).into()
        }
    } else {
        e.name.into()
    };
    let v = if e.scope != 0 { avp_flags::V } else { 0 };
    // freeDiameter does not check the M bit of received AVPs; neither do we for these
    // definitions (its "must not" is not enforced), but we send the bit as it would.
    let m = if e.m_bit == "M" { avp_flags::M } else { 0 };
    let def = AvpDef {
        code: e.code,
        vendor: e.scope,
        name,
        ty,
        flags: FlagRule {
            must: m | v,
            must_not: if v == 0 { avp_flags::V } else { 0 },
        },
        enums: Vec::new(),
        group: Rules {
            rules: Vec::new(),
            extensible: true,
        },
    };
    let i = dict.insert_avp(def, origin(e));
    dict.avp_by_name.entry(e.name.into()).or_insert(i);
    dict.fd_names.insert(key, e.name.into());
}

/// "Diameter-EAP-Request" -> "Diameter-EAP".
fn command_base(name: &str) -> &str {
    name.strip_suffix("-Request")
        .or_else(|| name.strip_suffix("-Answer"))
        .unwrap_or(name)
}

fn apply_command(dict: &mut Dictionary, e: &Entry<'_>) {
    let (code, app) = (e.code, e.scope);
    let base = command_base(e.name);
    // freeDiameter defines the base protocol's commands outside any application (0); the
    // built-ins put Accounting in base accounting (3): any definition of the code will do.
    let known = match app {
        0 => dict.cmd_by_code.get(&code),
        _ => dict.cmd_by_key.get(&(app, code)),
    };
    if let Some(&i) = known {
        dict.add_command_names(i, base);
        if let Some(c) = dict.commands.get(i) {
            dict.fd_commands.insert((c.app_id, c.code), base.into());
        }
        return;
    }
    // Not built in: add the application (freeDiameter's name) and an open command.
    if dict.application(app).is_none() {
        if let Some(a) = entries().find(|a| a.kind == Kind::Application && a.code == app) {
            dict.insert_app(AppDef {
                id: app,
                vendor: 0,
                name: a.name.into(),
                kind: AppKind::Auth,
            });
        }
    }
    let open = Rules {
        rules: Vec::new(),
        extensible: true,
    };
    // the abbreviations of their RFCs (the script event is E_DM_DER, E_DM_MIR)
    let abbr = match code {
        265 => ("AAR", "AAA"), // RFC 7155 §3.1 (NASREQ; Rx's AAR keeps E_DM_AAR)
        268 => ("DER", "DEA"), // RFC 4072 §3.1
        325 => ("MIR", "MIA"), // RFC 5778 §5.1
        _ => ("", ""),
    };
    let def = CommandDef {
        code,
        app_id: app,
        name: base.into(),
        request_abbr: abbr.0.into(),
        answer_abbr: abbr.1.into(),
        proxiable: true,
        request: open.clone(),
        answer: open,
    };
    dict.insert_command(def, origin(e));
    dict.fd_commands.insert((app, code), base.into());
}

impl Dictionary {
    /// The name freeDiameter's dictionaries (and so `aaa_diameter` scripts) give this AVP,
    /// if they define it.
    pub fn freediameter_name(&self, code: u32, vendor: u32) -> Option<&str> {
        self.fd_names.get(&(code, vendor)).map(|n| &**n)
    }

    /// Shows freeDiameter's names on output from now on (JSON keys, `dmbridge dict`), for
    /// scripts written for `aaa_diameter` that pick AVPs out of answers by name. Every name
    /// that resolved before still resolves, and AVPs freeDiameter does not define keep
    /// their names. Where freeDiameter gives two AVPs one name (see the module docs), both
    /// show it, as under `aaa_diameter`.
    pub fn use_freediameter_names(&mut self) {
        for (i, def) in self.avps.iter_mut().enumerate() {
            if let Some(fd) = self.fd_names.get(&(def.code, def.vendor)) {
                if *fd != def.name {
                    let old = std::mem::replace(&mut def.name, fd.clone());
                    self.avp_by_name.entry(old).or_insert(i);
                }
            }
        }
        for (i, def) in self.commands.iter_mut().enumerate() {
            if let Some(fd) = self.fd_commands.get(&(def.app_id, def.code)) {
                if *fd != def.name {
                    let old = std::mem::replace(&mut def.name, fd.clone());
                    for n in [
                        old.to_string(),
                        format!("{old}-Request"),
                        format!("{old}-Answer"),
                    ] {
                        self.cmd_by_name.entry(n.into_boxed_str()).or_insert(i);
                    }
                }
            }
        }
    }
}
