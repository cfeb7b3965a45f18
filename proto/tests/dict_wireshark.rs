//! Oracle test: the built-in dictionaries against Wireshark's Diameter dictionaries.
//!
//! Wireshark's XML files (Debian package `tshark`/`wireshark-common`, in
//! /usr/share/wireshark/diameter/) are an independent, widely used description of the same
//! specifications. For every built-in AVP the same (code, vendor) must exist there with the
//! same name (modulo the spelling variants listed below, each with its reason) and the same
//! data format; for every built-in command the code must exist with the same name. Wireshark's
//! files are read at test time only; nothing of them is copied into this repository.

use dmproto::dict::Dictionary;
use dmproto::AvpType;
use std::collections::HashMap;
use std::path::Path;

const DIR: &str = "/usr/share/wireshark/diameter";

/// (code, vendor, our name, Wireshark's name): the same AVP spelled differently, with why.
const NAME_VARIANTS: &[(u32, u32, &str, &str)] = &[
    // RFC 6733 section 9.8.6 spells it "Acct-Multi-Session-Id".
    (
        50,
        0,
        "Acct-Multi-Session-Id",
        "Accounting-Multi-Session-Id",
    ),
    // TS 29.229's name; Wireshark's "Cx-User-Data" is accepted as an alias (Sh's 702 is
    // Sh-User-Data here, as there).
    (606, 10415, "User-Data", "Cx-User-Data"),
    // TS 29.229 renamed Wildcarded-PSI to Wildcarded-Public-Identity in Rel-9.
    (634, 10415, "Wildcarded-Public-Identity", "Wildcarded-PSI"),
    // TS 32.299 7.2.175 calls it Reporting-Reason; no other Reporting-Reason exists here.
    (872, 10415, "Reporting-Reason", "3GPP-Reporting-Reason"),
    // TS 29.272 7.3.41 (Rel-9 on) calls it Call-Barring-Info.
    (1488, 10415, "Call-Barring-Info", "Call-Barring-Infor-List"),
];

/// (code, vendor, our type, Wireshark's type, why ours is right).
/// AVPs added from freeDiameter's dictionaries (see dict::freediameter) whose freeDiameter
/// type differs from Wireshark's. freeDiameter's is kept (scripts written for aaa_diameter
/// send values of that type); neither is checked against the specification yet.
const FD_TYPE_VARIANTS: &[(u32, u32)] = &[
    (23, 0),       // Framed-IPX-Network: Unsigned32 / Wireshark UTF8String
    (89, 0),       // Chargeable-User-Identity: OctetString / UTF8String
    (102, 0),      // EAP-Key-Name: OctetString / UTF8String
    (314, 10415),  // Charging-Characteristics: Integer32 / OctetString
    (885, 10415),  // Number-Of-Participants: Unsigned32 / Integer32
    (1532, 10415), // TWAG-UP-Address: UTF8String / IPAddress
    (2101, 10415), // Application-Server-Id: UTF8String / Unsigned32
    (2537, 10415), // Area-Identification: Grouped / OctetString
    (2553, 10415), // Cell-Portion-ID: Unsigned32 / OctetString
    (3423, 10415), // ISUP-Cause-Location: Unsigned32 / OctetString
];

const TYPE_VARIANTS: &[(u32, u32, &str, &str, &str)] = &[
    (
        291,
        0,
        "Unsigned32",
        "Integer32",
        "RFC 6733 8.9: Authorization-Lifetime is Unsigned32",
    ),
    (
        524,
        10415,
        "OctetString",
        "UTF8String",
        "TS 29.214 5.3.7: Codec-Data is OctetString",
    ),
    (
        2708,
        10415,
        "UTF8String",
        "IPAddress",
        "TS 32.299: From-Address carries the SIP From header",
    ),
];

/// (code, vendor, why): AVPs whose M-bit rule we take from the specification where Wireshark
/// differs.
const M_VARIANTS: &[(u32, u32, &str)] = &[];

#[derive(Debug, Default)]
struct WsAvp {
    name: String,
    ty: String,
    /// The M-bit rule: "must", "may", "mustnot", "shouldnot" (empty when not given).
    mandatory: String,
}

/// Attributes of one XML start tag, e.g. `avp name="X" code="1"`.
fn attrs(tag: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq]
            .split_whitespace()
            .last()
            .unwrap_or("")
            .to_string();
        let after = rest[eq + 1..].trim_start();
        let Some(q) = after.chars().next() else { break };
        if q != '"' && q != '\'' {
            break;
        }
        let Some(end) = after[1..].find(q) else { break };
        out.insert(key, after[1..1 + end].to_string());
        rest = &after[1 + end + 1..];
    }
    out
}

/// Every start tag `<name ...>` in the text, with its attributes and the text up to the
/// matching close tag (only needed for `avp`, which does not nest).
fn tags<'a>(text: &'a str, name: &str) -> Vec<(HashMap<String, String>, &'a str)> {
    let open = format!("<{name} ");
    let close = format!("</{name}>");
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = text[pos..].find(&open) {
        let start = pos + i;
        let Some(gt) = text[start..].find('>') else {
            break;
        };
        let tag = &text[start + open.len()..start + gt];
        let self_closing = tag.ends_with('/');
        let body_start = start + gt + 1;
        let body = if self_closing {
            ""
        } else {
            match text[body_start..].find(&close) {
                Some(e) => &text[body_start..body_start + e],
                None => "",
            }
        };
        out.push((attrs(tag.trim_end_matches('/')), body));
        pos = body_start;
    }
    out
}

struct Oracle {
    avps: HashMap<(u32, u32), Vec<WsAvp>>,
    commands: HashMap<u32, Vec<String>>,
}

fn load_oracle(dir: &Path) -> Oracle {
    let mut texts = Vec::new();
    for e in std::fs::read_dir(dir)
        .expect("read wireshark dir")
        .flatten()
    {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "xml") {
            texts.push(std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    let mut vendors: HashMap<String, u32> = HashMap::new();
    vendors.insert("None".into(), 0);
    for t in &texts {
        for (a, _) in tags(t, "vendor") {
            if let (Some(id), Some(code)) = (a.get("vendor-id"), a.get("code")) {
                if let Ok(c) = code.parse() {
                    vendors.insert(id.clone(), c);
                }
            }
        }
    }
    let mut avps: HashMap<(u32, u32), Vec<WsAvp>> = HashMap::new();
    let mut commands: HashMap<u32, Vec<String>> = HashMap::new();
    for t in &texts {
        for (a, body) in tags(t, "avp") {
            let (Some(name), Some(code)) = (a.get("name"), a.get("code")) else {
                continue;
            };
            let Ok(code) = code.parse::<u32>() else {
                continue;
            };
            let vendor = a
                .get("vendor-id")
                .and_then(|v| vendors.get(v).copied())
                .unwrap_or(0);
            let ty = if body.contains("<grouped") {
                "Grouped".to_string()
            } else {
                tags(body, "type")
                    .first()
                    .and_then(|(ta, _)| ta.get("type-name").cloned())
                    .unwrap_or_default()
            };
            avps.entry((code, vendor)).or_default().push(WsAvp {
                name: name.clone(),
                ty,
                mandatory: a.get("mandatory").cloned().unwrap_or_default(),
            });
        }
        for (a, _) in tags(t, "command") {
            if let (Some(name), Some(code)) = (a.get("name"), a.get("code")) {
                if let Ok(c) = code.parse() {
                    commands.entry(c).or_default().push(name.clone());
                }
            }
        }
    }
    Oracle { avps, commands }
}

/// Wireshark's type names mapped onto ours (it has a few derived names of its own).
fn ws_type(t: &str) -> Option<AvpType> {
    match t {
        "AppId" | "VendorId" => Some(AvpType::Unsigned32),
        // Wireshark shows raw 4/16-byte addresses as "IPAddress"; the specifications type
        // them OctetString (Framed-IP-Address, 3GPP-SGSN-Address, ...) or Address.
        "IPAddress" => Some(AvpType::Address),
        "MIPRegistrationRequest" => Some(AvpType::OctetString),
        _ => t.parse().ok(),
    }
}

fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[test]
fn builtin_agrees_with_wireshark() {
    let dir = Path::new(DIR);
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED: {DIR} is absent (install the Debian package tshark to run this oracle)"
        );
        return;
    }
    let oracle = load_oracle(dir);
    assert!(
        oracle.avps.len() > 1000,
        "Wireshark dictionaries look incomplete ({} AVPs)",
        oracle.avps.len()
    );
    let dict = Dictionary::builtin();
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut absent = Vec::new();
    let mut m_info = Vec::new();
    for d in dict.avps() {
        if d.vendor == 0 && (204..=231).contains(&d.code) {
            continue; // OpenSIPS's private AVPs (opensips.dict), unknown to Wireshark.
        }
        if d.vendor == 9 {
            continue; // Cisco-AVPair from opensips.dict
        }
        // Added from freeDiameter's dictionaries under freeDiameter's names (see
        // dict::freediameter): only their wire format is compared here.
        let from_fd = dict
            .avp_origin(d.code, d.vendor)
            .is_some_and(|o| o.starts_with(dmproto::dict::freediameter::ORIGIN));
        let Some(cands) = oracle.avps.get(&(d.code, d.vendor)) else {
            if !from_fd {
                absent.push(format!("{} {}:{}", d.name, d.code, d.vendor));
            }
            continue;
        };
        checked += 1;
        let m = dmproto::dict::avp_flags::M;
        let ours_m = if d.flags.must & m != 0 {
            "must"
        } else if d.flags.must_not & m != 0 {
            "mustnot"
        } else {
            "may"
        };
        // Wireshark's M-bit rules are loose for 3GPP AVPs (often "must" where the TS says
        // "must not"), so only the harmful direction fails: we would set M on an AVP that
        // must not carry it, and a strict peer would reject it. Other differences are listed.
        let m_harmful = !from_fd
            && ours_m == "must"
            && !cands.is_empty()
            && cands.iter().all(|w| w.mandatory == "mustnot")
            && !M_VARIANTS
                .iter()
                .any(|&(c, v, _)| c == d.code && v == d.vendor);
        if m_harmful {
            problems.push(format!(
                "M bit: {} {}:{} ours must, wireshark mustnot",
                d.name, d.code, d.vendor
            ));
        } else if !from_fd
            && !cands
                .iter()
                .any(|w| w.mandatory.is_empty() || w.mandatory == ours_m)
        {
            m_info.push(format!("{}:{}={ours_m}", d.code, d.vendor));
        }
        let name_ok = from_fd
            || cands.iter().any(|w| norm(&w.name) == norm(&d.name))
            || NAME_VARIANTS
                .iter()
                .any(|&(c, v, ours, _)| c == d.code && v == d.vendor && ours == &*d.name);
        if !name_ok {
            let theirs: Vec<_> = cands.iter().map(|w| w.name.as_str()).collect();
            problems.push(format!(
                "name: {}:{} ours {} wireshark {:?}",
                d.code, d.vendor, d.name, theirs
            ));
        }
        // Wireshark declares plain integers with named values (Result-Code, ...) Enumerated.
        let named_int = |w: &WsAvp| {
            w.ty == "Enumerated" && matches!(d.ty, AvpType::Unsigned32 | AvpType::Integer32)
        };
        // ... and "OctetStringOrUTF8" where a spec allows either.
        let either = |w: &WsAvp| {
            w.ty == "OctetStringOrUTF8"
                && matches!(d.ty, AvpType::OctetString | AvpType::UTF8String)
        };
        let raw_ip = |w: &WsAvp| w.ty == "IPAddress" && d.ty == AvpType::OctetString;
        let type_ok = cands
            .iter()
            .any(|w| ws_type(&w.ty) == Some(d.ty) || named_int(w) || either(w) || raw_ip(w))
            || TYPE_VARIANTS
                .iter()
                .any(|&(c, v, _, _, _)| c == d.code && v == d.vendor)
            || (from_fd && FD_TYPE_VARIANTS.contains(&(d.code, d.vendor)));
        if !type_ok {
            let theirs: Vec<_> = cands.iter().map(|w| w.ty.as_str()).collect();
            problems.push(format!(
                "type: {} {}:{} ours {} wireshark {:?}",
                d.name, d.code, d.vendor, d.ty, theirs
            ));
        }
    }
    for c in dict.commands() {
        match oracle.commands.get(&c.code) {
            None => problems.push(format!(
                "command {} {} unknown to wireshark",
                c.code, c.name
            )),
            Some(names) => {
                // Wireshark prefixes the S6a command names with "3GPP-".
                let same = |n: &String| {
                    norm(n) == norm(&c.name) || norm(n) == format!("3gpp{}", norm(&c.name))
                };
                if !names.iter().any(same) {
                    problems.push(format!(
                        "command {} ours {} wireshark {:?}",
                        c.code, c.name, names
                    ));
                }
            }
        }
    }
    eprintln!(
        "checked {checked} AVPs and {} commands against Wireshark; {} AVPs it does not know: {:?}",
        dict.commands().count(),
        absent.len(),
        absent
    );
    eprintln!(
        "M-bit rules differing from Wireshark's (ours kept, from the specifications): {m_info:?}"
    );
    assert!(
        problems.is_empty(),
        "{} disagreements with Wireshark:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // Nearly every AVP must be known to the oracle, or the test checks little.
    assert!(
        absent.len() * 20 <= checked,
        "too many AVPs unknown to Wireshark: {absent:?}"
    );
}
