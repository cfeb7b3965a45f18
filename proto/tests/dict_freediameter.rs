//! freeDiameter's names (as OpenSIPS `aaa_diameter` scripts use them) resolve here: every
//! AVP and command name of the list extracted from freeDiameter's dictionaries
//! (`proto/src/dict/freediameter/names.tsv`) is checked against the built-in dictionary,
//! through the look-ups and through the JSON mapping scripts use.

use dmproto::dict::freediameter::{self, Entry, Kind};
use dmproto::dict::{same_wire_format, AvpDef, Dictionary};
use dmproto::header::Header;
use dmproto::json::{read_avps, write_avps};
use dmproto::{AvpRefs, AvpType, MessageWriter};
use std::collections::HashMap;

const HEADER_LEN: usize = 20;

fn fd(kind: Kind) -> Vec<Entry<'static>> {
    freediameter::entries().filter(|e| e.kind == kind).collect()
}

/// Where freeDiameter's `AVP_BY_NAME_ALL_VENDORS` search (what `aaa_diameter` uses) finds a
/// name: the IETF AVP first, then by vendor id.
fn fd_resolution(avps: &[Entry<'static>]) -> HashMap<&'static str, (u32, u32)> {
    let mut out: HashMap<&str, (u32, u32)> = HashMap::new();
    for e in avps {
        let slot = out.entry(e.name).or_insert((e.code, e.scope));
        if e.scope < slot.1 {
            *slot = (e.code, e.scope);
        }
    }
    out
}

/// The list is complete enough to be the real thing, and every line parses.
#[test]
fn the_list_is_whole() {
    let lines = freediameter::NAMES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(
        freediameter::entries().count(),
        lines,
        "a line did not parse"
    );
    let avps = fd(Kind::Avp);
    assert!(avps.len() > 1800, "{} AVPs", avps.len());
    for file in [
        "dict_base_proto",
        "add_avps",
        "dict_dcca",
        "dict_nasreq",
        "dict_sip",
        "dict_rfc5777",
    ] {
        assert!(avps.iter().any(|e| e.file == file), "nothing from {file}");
    }
    assert!(fd(Kind::Command).len() >= 30);
}

/// Every freeDiameter AVP name resolves to the AVP freeDiameter's search would find, and is
/// freeDiameter's name of that AVP.
#[test]
fn every_freediameter_avp_name_resolves_as_in_freediameter() {
    let d = Dictionary::builtin();
    let avps = fd(Kind::Avp);
    let want = fd_resolution(&avps);
    let mut wrong = Vec::new();
    for e in &avps {
        match d.avp_by_name(e.name) {
            None => wrong.push(format!("{}: unknown", e.name)),
            Some(a) if (a.code, a.vendor) != want[e.name] => wrong.push(format!(
                "{}: {}:{}, freeDiameter finds {:?}",
                e.name, a.code, a.vendor, want[e.name]
            )),
            Some(_) => {}
        }
        if d.freediameter_name(e.code, e.scope) != Some(e.name) {
            wrong.push(format!(
                "{}:{} freediameter_name {:?}, want {}",
                e.code,
                e.scope,
                d.freediameter_name(e.code, e.scope),
                e.name
            ));
        }
        if d.avp(e.code, e.scope).is_none() {
            wrong.push(format!("{} {}:{} not defined", e.name, e.code, e.scope));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} problems:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Built-in AVPs whose wire format differs from freeDiameter's definition, each with why.
const TYPE_VARIANTS: &[(u32, u32, &str)] = &[(
    2,
    10415,
    "3GPP-Charging-Id: TS 29.061's Diameter table and Wireshark say OctetString (4 octets); \
     freeDiameter's dict_dcca_3gpp changed it to Unsigned32 (same 4 octets on the wire, a \
     number instead of a string in a script)",
)];

/// The built-in definitions agree with freeDiameter's on the wire format (a script that
/// worked there sends the same bytes here).
#[test]
fn wire_formats_agree_with_freediameter() {
    let d = Dictionary::builtin();
    let mut wrong = Vec::new();
    for e in fd(Kind::Avp) {
        let Some(ours) = d.avp(e.code, e.scope) else {
            continue;
        };
        let theirs: AvpType = e.ty.parse().expect("type name");
        let same = same_wire_format(ours.ty, theirs)
            || TYPE_VARIANTS
                .iter()
                .any(|&(c, v, _)| c == e.code && v == e.scope)
            || freediameter::TYPE_FIXES
                .iter()
                .any(|&(c, v, _, _)| c == e.code && v == e.scope);
        if !same {
            wrong.push(format!(
                "{} {}:{} ours {} freeDiameter {}",
                ours.name, e.code, e.scope, ours.ty, theirs
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// A JSON value of the AVP's type, as a script would write it.
fn sample(def: &AvpDef) -> &'static str {
    match def.ty {
        AvpType::Grouped => "[]",
        AvpType::Address => "\"192.0.2.1\"",
        AvpType::Time => "1700000000",
        AvpType::Float32 | AvpType::Float64 => "1.5",
        AvpType::Integer32
        | AvpType::Integer64
        | AvpType::Unsigned32
        | AvpType::Unsigned64
        | AvpType::Enumerated => "1",
        _ => "\"x\"",
    }
}

/// Each freeDiameter AVP name, as a JSON key from a script, encodes the AVP freeDiameter
/// would have sent; the answer side shows the built-in name by default, and freeDiameter's
/// name once [`Dictionary::use_freediameter_names`] is on.
#[test]
fn every_freediameter_avp_name_encodes_through_json() {
    let d = Dictionary::builtin();
    let mut fdd = Dictionary::new_with_builtin();
    fdd.use_freediameter_names();
    let avps = fd(Kind::Avp);
    let want = fd_resolution(&avps);
    let mut wrong = Vec::new();
    for e in &avps {
        let def = d.avp_by_name(e.name).expect("resolves (checked above)");
        let json = format!("[{{\"{}\":{}}}]", e.name, sample(def));
        let mut w = MessageWriter::new(Header::request(272, 4, 1, 2));
        if let Err(err) = read_avps(&json, d, &mut w) {
            wrong.push(format!("{json}: {err}"));
            continue;
        }
        let wire = w.finish().expect("encodes");
        let avp = AvpRefs::new(&wire[HEADER_LEN..], HEADER_LEN)
            .next()
            .expect("one AVP")
            .expect("well-formed");
        if (avp.code, avp.vendor) != want[e.name] {
            wrong.push(format!("{json}: encoded {}:{}", avp.code, avp.vendor));
        }
        for (dict, shown) in [(d, &*def.name), (&fdd, e.name)] {
            if (def.code, def.vendor) != (e.code, e.scope) {
                // A name two AVPs share: the other one shows it (checked from its own line).
                break;
            }
            let mut out = String::new();
            write_avps(
                &mut out,
                AvpRefs::new(&wire[HEADER_LEN..], HEADER_LEN),
                dict,
            )
            .expect("decodes");
            if !out.starts_with(&format!("[{{\"{shown}\":")) {
                wrong.push(format!("{json} read back as {out}, want the key {shown}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} problems:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Commands: every freeDiameter command name resolves to a command of that code in that
/// application (exactly; freeDiameter's base commands, outside any application, to the
/// built-in one of the code), and by name to it, or to the 3GPP command built in under the
/// same name (Cx's UAR/SAR/... over RFC 4740's, Rx's AA-Request over NASREQ's: freeDiameter
/// defines no 3GPP commands, and IMS scripts mean those), or, for a name freeDiameter itself
/// gives two commands (MIP6 in dict_mip6a and dict_mip6i, never loaded together), either.
#[test]
fn every_freediameter_command_name_resolves() {
    let d = Dictionary::builtin();
    let cmds = fd(Kind::Command);
    let mut wrong = Vec::new();
    for e in &cmds {
        let exact = match e.scope {
            0 => d.command(0, e.code),
            app => d.command_exact(app, e.code),
        };
        let Some(exact) = exact else {
            wrong.push(format!("{} ({}, {}) not defined", e.name, e.scope, e.code));
            continue;
        };
        let is_3gpp = |app: u32| d.application(app).is_some_and(|a| a.vendor == 10_415);
        let fd_twice = |app: u32| {
            cmds.iter()
                .any(|o| o.name == e.name && o.scope == app && o.code == exact.code)
        };
        match d.command_by_name(e.name) {
            None => wrong.push(format!("{}: unknown name", e.name)),
            Some(c) if c == exact => {}
            Some(c) if is_3gpp(c.app_id) && c.name == exact.name => {}
            Some(c) if fd_twice(c.app_id) => {}
            Some(c) => wrong.push(format!(
                "{}: resolves to ({}, {}) {}",
                e.name, c.app_id, c.code, c.name
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} problems:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // nothing defined twice: the base commands were not added again under application 0
    assert!(
        d.command_exact(0, 271).is_none(),
        "Accounting stays in base accounting (3)"
    );
}

/// The example the issue gives, spelled out: Sh's User-Data.
#[test]
fn sh_user_data_by_either_name() {
    let d = Dictionary::builtin();
    let by_fd = d
        .avp_by_name("User-Data-29.329")
        .expect("freeDiameter's name");
    assert_eq!((by_fd.code, by_fd.vendor), (702, 10415));
    assert_eq!(
        &*by_fd.name, "Sh-User-Data",
        "output keeps the built-in name"
    );
    assert_eq!(d.avp_by_name("User-Data").map(|a| a.code), Some(606));

    let mut fdd = Dictionary::new_with_builtin();
    fdd.use_freediameter_names();
    assert_eq!(
        fdd.avp(702, 10415).map(|a| &*a.name),
        Some("User-Data-29.329")
    );
    assert_eq!(
        fdd.avp_by_name("Sh-User-Data").map(|a| a.code),
        Some(702),
        "old name still in"
    );
    // 3GPP's SIP-Method shows freeDiameter's name, which on input means RFC 4740's (vendor
    // 0 first, as in freeDiameter); the built-in name still reaches 3GPP's.
    assert_eq!(fdd.avp(824, 10415).map(|a| &*a.name), Some("SIP-Method"));
    assert_eq!(fdd.avp_by_name("SIP-Method").map(|a| a.vendor), Some(0));
    assert_eq!(
        fdd.avp_by_name("3GPP-SIP-Method").map(|a| a.vendor),
        Some(10415)
    );
}
