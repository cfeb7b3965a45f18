//! Unit tests of the dictionary: the built-ins, the loader (format, extensions, errors) and
//! the printer. The Wireshark oracle is in proto/tests/dict_wireshark.rs.

use super::*;
use crate::AvpType;

fn dict() -> &'static Dictionary {
    Dictionary::builtin()
}

fn load(text: &str) -> Result<Dictionary, DictError> {
    let mut d = Dictionary::new_with_builtin();
    d.load_str(text, "test.dict")?;
    Ok(d)
}

fn err(text: &str) -> DictError {
    match load(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

fn rule<'a>(d: &Dictionary, rules: &'a Rules, name: &str) -> Option<&'a Rule> {
    let a = d.avp_by_name(name)?;
    rules
        .rules
        .iter()
        .find(|r| r.code == a.code && r.vendor == a.vendor)
}

// ---- built-ins ------------------------------------------------------------------------

#[test]
fn builtin_parses() {
    if let Err(e) = builtin::try_build() {
        panic!("{e}");
    }
    assert!(dict().avps().count() > 500);
    assert!(dict().commands().count() >= 38);
}

#[test]
fn avp_lookup_by_code_vendor_and_name() {
    let d = dict();
    let s = d.avp(263, 0).expect("Session-Id");
    assert_eq!(&*s.name, "Session-Id");
    assert_eq!(s.ty, AvpType::UTF8String);
    assert_eq!(s.flags.must, avp_flags::M);
    assert_eq!(s.flags.must_not, avp_flags::V);
    let m = d.avp(701, 10415).expect("MSISDN");
    assert_eq!(&*m.name, "MSISDN");
    assert_eq!(m.flags.must, avp_flags::M | avp_flags::V);
    assert!(d.avp(701, 0).is_none(), "vendor is part of the key");
    assert_eq!(d.avp_by_name("Public-Identity").map(|a| a.code), Some(601));
    assert!(
        d.avp_by_name("public-identity").is_none(),
        "names are exact"
    );
    // Both "User-Data" AVPs exist under distinct names; Cx's answers to an alias too.
    assert_eq!(d.avp_by_name("User-Data").map(|a| a.code), Some(606));
    assert_eq!(
        d.avp_by_name("Cx-User-Data").map(|a| &*a.name),
        Some("User-Data")
    );
    assert_eq!(d.avp_by_name("Sh-User-Data").map(|a| a.code), Some(702));
    // RFC 4740 and TS 29.229 clash on SIP-Auth-Data-Item: both kept.
    assert_eq!(
        d.avp_by_name("SIP-Auth-Data-Item").map(|a| a.vendor),
        Some(0)
    );
    assert_eq!(
        d.avp_by_name("3GPP-SIP-Auth-Data-Item")
            .map(|a| (a.code, a.vendor)),
        Some((612, 10415))
    );
    assert_eq!(d.avp(500, 13019).map(|a| &*a.name), Some("Line-Identifier"));
    assert_eq!(d.avp(500, 10415).map(|a| &*a.name), Some("Abort-Cause"));
}

#[test]
fn flag_rules_and_enums() {
    let d = dict();
    let em = d.avp_by_name("Error-Message").expect("Error-Message");
    assert_eq!(em.flags.must & avp_flags::M, 0);
    assert_ne!(em.flags.must_not & avp_flags::M, 0);
    let sf = d
        .avp_by_name("Supported-Features")
        .expect("Supported-Features");
    assert_eq!(sf.flags.must, avp_flags::V);
    assert_eq!(sf.flags.must_not, avp_flags::M);
    let uei = d.avp_by_name("User-Equipment-Info").expect("UEI");
    assert_eq!(uei.flags.must & avp_flags::M, 0, "M may: not required");
    assert_eq!(uei.flags.must_not & avp_flags::M, 0, "M may: not forbidden");

    let st = d.avp_by_name("Subscription-Id-Type").expect("type");
    assert_eq!(st.ty, AvpType::Enumerated);
    assert_eq!(st.enum_name(2), Some("END_USER_SIP_URI"));
    assert_eq!(st.enum_value("END_USER_IMSI"), Some(1));
    let mt = d.avp_by_name("Media-Type").expect("Media-Type");
    assert_eq!(
        mt.enum_name(-1),
        Some("OTHER"),
        "0xFFFFFFFF is -1 as Integer32"
    );
    let rc = d.avp(268, 0).expect("Result-Code");
    assert_eq!(rc.enum_name(5005), Some("DIAMETER_MISSING_AVP"));
    assert_eq!(rc.enum_name(4012), Some("DIAMETER_CREDIT_LIMIT_REACHED"));
}

#[test]
fn grouped_abnf() {
    let d = dict();
    let sub = d.avp_by_name("Subscription-Id").expect("Subscription-Id");
    assert_eq!(sub.ty, AvpType::Grouped);
    assert!(
        !sub.group.extensible,
        "RFC 4006 Subscription-Id has no *[ AVP ]"
    );
    let t = rule(d, &sub.group, "Subscription-Id-Type").expect("rule");
    assert_eq!((t.kind, t.min, t.max), (RuleKind::Required, 1, Some(1)));
    let vsai = d.avp(260, 0).expect("VSAI");
    assert!(!vsai.group.extensible);
    assert_eq!(vsai.group.rules.len(), 3);
    let failed = d.avp(279, 0).expect("Failed-AVP");
    assert!(failed.group.extensible && failed.group.rules.is_empty());
    let mscc = d.avp(456, 0).expect("MSCC");
    assert!(mscc.group.extensible);
    let usu = rule(d, &mscc.group, "Used-Service-Unit").expect("USU");
    assert_eq!((usu.kind, usu.min, usu.max), (RuleKind::Optional, 0, None));
    // The 3GPP additions of TS 32.299 were merged into the RFC 4006 definition.
    assert!(rule(d, &mscc.group, "Reporting-Reason").is_some());
    let mcd = d.avp_by_name("Media-Sub-Component").expect("MSC");
    let fd = rule(d, &mcd.group, "Flow-Description").expect("rule");
    assert_eq!((fd.min, fd.max), (0, Some(2)));
    let e2e = d.avp(300, 0).expect("E2E-Sequence");
    assert!(e2e.group.extensible);
}

#[test]
fn commands_by_application() {
    let d = dict();
    let cer = d.command(0, 257).expect("CER");
    assert_eq!((&*cer.request_abbr, &*cer.answer_abbr), ("CER", "CEA"));
    assert!(!cer.proxiable);
    let hip = rule(d, &cer.request, "Host-IP-Address").expect("Host-IP-Address");
    assert_eq!((hip.kind, hip.min, hip.max), (RuleKind::Required, 1, None));

    let ppr = d.command(16777216, 305).expect("Cx PPR");
    assert_eq!(&*ppr.request_abbr, "PPR");
    assert_eq!(&*ppr.name, "Push-Profile");
    assert!(ppr.proxiable);
    let sid = ppr.request.rules.first().expect("first rule");
    assert_eq!((sid.code, sid.kind), (263, RuleKind::Fixed));
    // RFC 4740's PPR is another code in another application.
    assert_eq!(d.command(6, 288).map(|c| &*c.request_abbr), Some("PPR"));

    // Shared codes pick the application's own ABNF.
    let base_rar = d.command(0, 258).expect("base RAR");
    let rx_rar = d.command(16777236, 258).expect("Rx RAR");
    let gx_rar = d.command(16777238, 258).expect("Gx RAR");
    assert!(rule(d, &rx_rar.request, "Specific-Action").is_some());
    assert!(rule(d, &base_rar.request, "Specific-Action").is_none());
    assert!(rule(d, &gx_rar.request, "Charging-Rule-Install").is_some());
    let gx_ccr = d.command(16777238, 272).expect("Gx CCR");
    let ro_ccr = d.command(4, 272).expect("Ro CCR");
    assert!(rule(d, &gx_ccr.request, "Service-Information").is_none());
    assert!(rule(d, &ro_ccr.request, "Service-Information").is_some());
    assert!(rule(d, &ro_ccr.request, "Service-Context-Id").is_some());
    assert_eq!(
        d.command(16777236, 265).map(|c| &*c.request_abbr),
        Some("AAR")
    );
    let acr = d.command(3, 271).expect("ACR");
    assert!(
        rule(d, &acr.request, "Service-Information").is_some(),
        "Rf additions"
    );

    // Fallback: an application without its own definition gets the base protocol's.
    let other = d.command(16777217, 258).expect("fallback");
    assert_eq!(other.app_id, 0);
    assert_eq!(d.command(999, 271).map(|c| c.app_id), Some(3));
    assert!(d.command_exact(999, 258).is_none());
    assert!(d.command(0, 99_999).is_none());
}

#[test]
fn commands_by_abbr_and_name() {
    let d = dict();
    assert_eq!(d.command_by_abbr("PPA").map(|c| c.code), Some(305));
    assert_eq!(d.command_by_abbr("ppr").map(|c| c.code), Some(305));
    assert_eq!(d.command_by_abbr("RAR").map(|c| c.app_id), Some(0));
    assert_eq!(d.command_by_abbr("ULR").map(|c| c.code), Some(316));
    assert_eq!(d.command_by_abbr("NOR").map(|c| c.code), Some(323));
    assert_eq!(d.command_by_abbr("RSA").map(|c| c.code), Some(322));
    assert!(d.command_by_abbr("XYZ").is_none());
    assert!(d.command_by_abbr("A-VERY-LONG-ABBREVIATION").is_none());
    assert!(d.command_by_abbr("").is_none());
    assert_eq!(d.command_by_name("Push-Profile").map(|c| c.code), Some(305));
    assert_eq!(
        d.command_by_name("Push-Profile-Request").map(|c| c.code),
        Some(305)
    );
    assert_eq!(
        d.command_by_name("Credit-Control-Answer").map(|c| c.app_id),
        Some(4)
    );
    assert_eq!(
        d.command_by_name("Capabilities-Exchange-Request")
            .map(|c| c.code),
        Some(257)
    );
}

#[test]
fn applications_and_vendors() {
    let d = dict();
    let cx = d.application(16777216).expect("Cx");
    assert_eq!((cx.vendor, cx.kind), (10415, AppKind::Auth));
    assert_eq!(d.application(3).map(|a| a.kind), Some(AppKind::Acct));
    assert_eq!(d.application(4294967295).map(|a| &*a.name), Some("Relay"));
    let ids: Vec<u32> = d.applications().map(|a| a.id).collect();
    for id in [0, 3, 4, 6, 16777216, 16777217, 16777236, 16777238, 16777251] {
        assert!(ids.contains(&id), "application {id}");
    }
    assert_eq!(d.vendor(10415).map(|v| &*v.name), Some("3GPP"));
    assert_eq!(d.vendor(13019).map(|v| &*v.name), Some("ETSI"));
    assert!(d.vendor(4242).is_none());
}

#[test]
fn every_rule_names_a_defined_avp() {
    let d = dict();
    let check = |rules: &Rules, what: &str| {
        for r in &rules.rules {
            assert!(
                d.avp(r.code, r.vendor).is_some(),
                "{what}: {}:{}",
                r.code,
                r.vendor
            );
            if let Some(m) = r.max {
                assert!(r.min <= m, "{what}");
            }
        }
    };
    for a in d.avps() {
        check(&a.group, &a.name);
        if a.ty != AvpType::Grouped {
            assert!(
                a.group.rules.is_empty(),
                "{} has rules but is not grouped",
                a.name
            );
        }
    }
    for c in d.commands() {
        check(&c.request, &c.name);
        check(&c.answer, &c.name);
        assert!(
            !c.request_abbr.is_empty(),
            "built-in {} has an abbreviation",
            c.name
        );
    }
}

// ---- the loader: OpenSIPS syntax -------------------------------------------------------

/// A file in the style of OpenSIPS's own examples (custom AVPs, grouped block, application,
/// REQUEST/ANSWER with the names as OpenSIPS writes them).
const OPENSIPS_STYLE: &str = "\
# custom accounting
VENDOR 4242 Example Inc

ATTRIBUTE gw_name        3001 string
ATTRIBUTE gw_cost        3002 integer
ATTRIBUTE gw_total       3003 unsigned64 4242
attribute gw_when        3004 time
ATTRIBUTE gw_addr        3005 ipaddress
ATTRIBUTE gw_blob        3006 hexstring 4242
ATTRIBUTE gw_untyped     3007

ATTRIBUTE gw_group 3010 grouped 4242
{
\tgw_name | REQUIRED | 1
\tgw_cost | OPTIONAL | -1
}

APPLICATION-AUTH 42/4242 My Gateway App

REQUEST 92001 My-Gateway-Request
{
\tSession-Id | FIXED_HEAD | 1
\tOrigin-Host | REQUIRED | 1
\tgw_group | OPTIONAL | 1
\tSip-From-Tag | OPTIONAL | 1
}

ANSWER 92001 My-Gateway-Answer
{
\tSession-Id | REQUIRED | 1
\tResult-Code | REQUIRED | 1
}
";

#[test]
fn opensips_style_file_loads() {
    let d = load(OPENSIPS_STYLE).expect("loads");
    assert_eq!(d.vendor(4242).map(|v| &*v.name), Some("Example Inc"));
    let types: Vec<_> = (3001..=3007)
        .map(|c| {
            d.avp(c, if c == 3003 || c == 3006 { 4242 } else { 0 })
                .map(|a| a.ty)
        })
        .collect();
    assert_eq!(
        types,
        vec![
            Some(AvpType::OctetString),
            Some(AvpType::Integer32),
            Some(AvpType::Unsigned64),
            Some(AvpType::Time),
            Some(AvpType::Address),
            Some(AvpType::OctetString),
            Some(AvpType::OctetString),
        ]
    );
    let total = d.avp(3003, 4242).expect("vendor AVP");
    assert_eq!(total.flags.must, avp_flags::M | avp_flags::V);
    let g = d.avp_by_name("gw_group").expect("group");
    assert_eq!(g.group.rules.len(), 2);
    assert!(g.group.extensible, "OpenSIPS blocks allow other AVPs");
    let app = d.application(42).expect("app");
    assert_eq!(
        (app.vendor, app.kind, &*app.name),
        (4242, AppKind::Auth, "My Gateway App")
    );
    let c = d.command(42, 92001).expect("command");
    assert_eq!(&*c.name, "My-Gateway");
    assert!(
        c.request_abbr.is_empty(),
        "no abbreviation: event E_DM_92001"
    );
    assert!(c.proxiable, "OpenSIPS sets P on its commands");
    assert_eq!(c.request.rules.len(), 4);
    assert_eq!(c.answer.rules.len(), 2);
    assert_eq!(
        d.command_by_name("My-Gateway-Answer").map(|c| c.code),
        Some(92001)
    );
    // The built-ins are still there.
    assert!(d.avp(263, 0).is_some());
}

#[test]
fn redeclaring_builtins_compatibly_renames_and_merges() {
    // Like OpenSIPS's aka_av_diameter dictionary: 3GPP AVPs re-declared with OpenSIPS types,
    // a different name for 611, a grouped AVP and a Cx command the built-ins already know.
    let text = "\
VENDOR 10415 TGPP
ATTRIBUTE Public-Identity 601 string 10415
ATTRIBUTE 3GPP-SIP-Authentication-Context 611 string 10415
ATTRIBUTE My-Key 625 hexstring 10415
ATTRIBUTE 3GPP-SIP-Auth-Data-Item 612 grouped 10415
{
\t3GPP-SIP-Authentication-Context | OPTIONAL | 1
\tMy-Key | OPTIONAL | 1
}
APPLICATION-AUTH 16777216/10415 3GPP Cx
REQUEST 303 Multimedia-Auth Request
{
\tSession-Id | REQUIRED | 1
\tPublic-Identity | REQUIRED | 1
}
ANSWER 303 Multimedia-Auth Answer
{
\tSession-Id | REQUIRED | 1
}
";
    let d = load(text).expect("loads");
    // Type, flags and vendor name stay as built in.
    let pi = d.avp(601, 10415).expect("601");
    assert_eq!(pi.ty, AvpType::UTF8String);
    assert_eq!(d.vendor(10415).map(|v| &*v.name), Some("3GPP"));
    // The user's name is shown from now on; the built-in one still resolves.
    assert_eq!(
        d.avp(611, 10415).map(|a| &*a.name),
        Some("3GPP-SIP-Authentication-Context")
    );
    assert_eq!(
        d.avp_by_name("SIP-Authentication-Context").map(|a| a.code),
        Some(611)
    );
    assert_eq!(d.avp(625, 10415).map(|a| &*a.name), Some("My-Key"));
    assert_eq!(
        d.avp_by_name("Confidentiality-Key").map(|a| a.code),
        Some(625)
    );
    // The built-in ABNF is kept (Session-Id stays a fixed first AVP).
    let mar = d.command(16777216, 303).expect("MAR");
    assert_eq!(&*mar.request_abbr, "MAR");
    assert_eq!(
        mar.request.rules.first().map(|r| r.kind),
        Some(RuleKind::Fixed)
    );
    assert_eq!(
        d.command_by_name("Multimedia-Auth Request").map(|c| c.code),
        Some(303)
    );
}

#[test]
fn brace_less_blocks_end_at_blank_line() {
    let d = load(
        "ATTRIBUTE G1 3100 grouped\n\tUser-Name | REQUIRED | 1\n# a comment\n\tClass | OPTIONAL | 2\n\nATTRIBUTE After 3101 unsigned32\n",
    )
    .expect("loads");
    let g = d.avp_by_name("G1").expect("G1");
    assert_eq!(g.group.rules.len(), 2);
    assert_eq!(g.group.rules.get(1).map(|r| r.max), Some(Some(2)));
    assert!(d.avp_by_name("After").is_some());
    // A keyword line also ends a brace-less block.
    let d = load("ATTRIBUTE G2 3102 grouped\n\tUser-Name | OPTIONAL | 1\nATTRIBUTE X 3103\n")
        .expect("loads");
    assert_eq!(d.avp_by_name("G2").map(|g| g.group.rules.len()), Some(1));
}

#[test]
fn rule_counts() {
    let d = load(
        "ATTRIBUTE G 3200 grouped\n{ closed\n User-Name | OPTIONAL | *\n Class | REQUIRED | 2*5\n \
         Proxy-State | optional | 0\n Session-Id | Fixed | 1\n Origin-Host | REQUIRED | -1\n \
         Origin-Realm | OPTIONAL | 3*\n}\n",
    )
    .expect("loads");
    let g = d.avp_by_name("G").expect("G");
    assert!(!g.group.extensible);
    let got: Vec<_> = g
        .group
        .rules
        .iter()
        .map(|r| (r.kind, r.min, r.max))
        .collect();
    assert_eq!(
        got,
        vec![
            (RuleKind::Optional, 0, None),
            (RuleKind::Required, 2, Some(5)),
            (RuleKind::Optional, 0, Some(0)),
            (RuleKind::Fixed, 1, Some(1)),
            (RuleKind::Required, 1, None),
            (RuleKind::Optional, 3, None),
        ]
    );
}

#[test]
fn extensions_value_flags_command() {
    let d = load(
        "\
ATTRIBUTE Color 3300 Enumerated 0 !M
ATTRIBUTE Shade 3301 Unsigned32 4242 M?
VALUE Color RED 0
VALUE Color GREEN 1
VALUE Color GREEN 1
APPLICATION 77 Paint
REQUEST 5000 Paint-Request
{
\tSession-Id | FIXED_HEAD | 1
\tColor | REQUIRED | 1
\tAVP | OPTIONAL | -1
}
ANSWER 5000 Paint-Answer
{ closed
\tResult-Code | REQUIRED | 1
}
COMMAND 5000 PNT PNA not-proxiable
",
    )
    .expect("loads");
    let c = d.avp_by_name("Color").expect("Color");
    assert_eq!(c.enums.len(), 2, "identical VALUE lines collapse");
    assert_eq!(c.enum_value("GREEN"), Some(1));
    assert_eq!(c.flags.must, 0);
    assert_eq!(c.flags.must_not, avp_flags::M | avp_flags::V);
    let s = d.avp(3301, 4242).expect("Shade");
    assert_eq!((s.flags.must, s.flags.must_not), (avp_flags::V, 0));
    let p = d.command(77, 5000).expect("Paint");
    assert_eq!(
        (&*p.request_abbr, &*p.answer_abbr, p.proxiable),
        ("PNT", "PNA", false)
    );
    assert!(p.request.extensible && !p.answer.extensible);
    assert_eq!(
        d.application(77).map(|a| a.kind),
        Some(AppKind::Acct),
        "bare = accounting"
    );
    assert_eq!(d.command_by_abbr("pnt").map(|c| c.code), Some(5000));
}

#[test]
fn windows_line_ends_and_byte_order_mark() {
    let d = load("\u{feff}VENDOR 4243 Win\r\nATTRIBUTE W 3450 grouped\r\n{\r\n\tUser-Name | REQUIRED | 1\r\n}\r\n")
        .expect("loads");
    assert_eq!(d.vendor(4243).map(|v| &*v.name), Some("Win"));
    assert_eq!(d.avp_by_name("W").map(|a| a.group.rules.len()), Some(1));
}

#[test]
fn aliases() {
    let d = load("ATTRIBUTE Hue 3460 unsigned32\nALIAS Hue Colour-Tone\nATTRIBUTE G 3461 grouped\n{\n Colour-Tone | OPTIONAL | 1\n}\n")
        .expect("loads");
    assert_eq!(d.avp_by_name("Colour-Tone").map(|a| &*a.name), Some("Hue"));
    assert_eq!(
        d.avp_by_name("G")
            .and_then(|g| g.group.rules.first())
            .map(|r| r.code),
        Some(3460)
    );
    let e = err("ALIAS No-Such-Avp Other\n");
    assert_eq!(e.kind, DictErrorKind::UndefinedAvp("No-Such-Avp".into()));
    let e = err("ALIAS Session-Id Origin-Host\n");
    assert!(matches!(e.kind, DictErrorKind::Conflict(_)), "{e}");
    let e = err("ALIAS Session-Id\n");
    assert!(matches!(e.kind, DictErrorKind::Syntax(_)), "{e}");
    assert!(load("ALIAS Session-Id Session-Id\n").is_ok());
}

#[test]
fn application_line_forms() {
    let d = load("APPLICATION -AUTH 70 Seventy\nAPPLICATION-ACC 71 / 4242 Seventy One\n")
        .expect("loads");
    assert_eq!(d.application(70).map(|a| a.kind), Some(AppKind::Auth));
    let a = d.application(71).expect("71");
    assert_eq!(
        (a.vendor, a.kind, &*a.name),
        (4242, AppKind::Acct, "Seventy One")
    );
}

#[test]
fn forward_references_within_a_file() {
    let d = load("ATTRIBUTE Outer 3400 grouped\n{\n Inner | REQUIRED | 1\n}\nATTRIBUTE Inner 3401 utf8string\n")
        .expect("loads");
    let o = d.avp_by_name("Outer").expect("Outer");
    assert_eq!(o.group.rules.first().map(|r| r.code), Some(3401));
    assert_eq!(d.avp(3401, 0).map(|a| a.ty), Some(AvpType::UTF8String));
}

// ---- the loader: errors ------------------------------------------------------------------

#[test]
fn errors_name_file_line_and_cause() {
    let e = err("# header\nATTRIBUTE Foo 3500 wibble\n");
    assert_eq!(e.to_string(), "test.dict:2: unknown AVP type 'wibble'");
    assert_eq!(e.kind, DictErrorKind::UnknownType("wibble".into()));

    let e = err("ATTRIBUTE Foo 35x00 unsigned32\n");
    assert_eq!(e.line, 1);
    assert!(
        matches!(
            e.kind,
            DictErrorKind::BadNumber {
                what: "AVP code",
                ..
            }
        ),
        "{e}"
    );
    let e = err("ATTRIBUTE Foo 0 unsigned32\n");
    assert!(
        matches!(e.kind, DictErrorKind::BadNumber { .. }),
        "code 0 is reserved: {e}"
    );
    let e = err("ATTRIBUTE Foo 4294967296 unsigned32\n");
    assert!(matches!(e.kind, DictErrorKind::BadNumber { .. }), "{e}");
    let e = err("ATTRIBUTE Foo 3501 unsigned32 -5\n");
    assert!(
        matches!(
            e.kind,
            DictErrorKind::BadNumber {
                what: "vendor id",
                ..
            }
        ),
        "{e}"
    );
    let e = err("REQUEST 16777216 Huge-Request\n{\n}\nANSWER 16777216 Huge-Answer\n{\n}\n");
    assert!(
        matches!(
            e.kind,
            DictErrorKind::BadNumber {
                what: "command code",
                ..
            }
        ),
        "{e}"
    );
    let e = err("VALUE Session-Id X 1\n");
    assert!(
        matches!(e.kind, DictErrorKind::Syntax(_)),
        "not enumerated: {e}"
    );
    let e = err("VALUE Disconnect-Cause X 99999999999\n");
    assert!(matches!(e.kind, DictErrorKind::BadNumber { .. }), "{e}");

    let e = err("ATTRIBUTE G 3502 grouped\n{\n\tNo-Such-Avp | REQUIRED | 1\n}\n");
    assert_eq!(e.to_string(), "test.dict:3: undefined AVP 'No-Such-Avp'");
    let e = err("VALUE No-Such-Avp X 1\n");
    assert_eq!(e.kind, DictErrorKind::UndefinedAvp("No-Such-Avp".into()));

    let e = err("ATTRIBUTE G 3503 grouped\n{\n\tUser-Name | REQUIRED | 1\n");
    assert_eq!(e.kind, DictErrorKind::Unterminated { opened: 1 });
    let e = err("ATTRIBUTE G 3504 grouped\n{\n\tUser-Name | REQUIRED | 1\nATTRIBUTE H 3505\n");
    assert_eq!(e.kind, DictErrorKind::Unterminated { opened: 1 });

    let e = err("\n\nFROBNICATE 1 2\n");
    assert_eq!(e.line, 3);
    assert_eq!(e.kind, DictErrorKind::UnknownKeyword("FROBNICATE".into()));
    let e = err("User-Name | REQUIRED | 1\n");
    assert!(matches!(e.kind, DictErrorKind::Syntax(_)), "{e}");
    let e = err("ATTRIBUTE G 3506 grouped\n{\n\tUser-Name | SOMETIMES | 1\n}\n");
    assert_eq!(e.line, 3);
    let e = err("ATTRIBUTE G 3507 grouped\n{\n\tUser-Name REQUIRED 1\n}\n");
    assert_eq!(e.line, 3);
    let e = err("ATTRIBUTE G 3508 grouped\n{\n\tUser-Name | REQUIRED | 5*2\n}\n");
    assert!(matches!(e.kind, DictErrorKind::Syntax(_)), "{e}");
    let e = err(
        "ATTRIBUTE G 3509 grouped\n{\n\tUser-Name | REQUIRED | 1\n\tUser-Name | OPTIONAL | 1\n}\n",
    );
    assert_eq!(e.line, 4);
    let e = err("VENDOR 12\n");
    assert!(matches!(e.kind, DictErrorKind::Syntax(_)), "{e}");
    let e = err("APPLICATION-AUTH 5\n");
    assert!(matches!(e.kind, DictErrorKind::Syntax(_)), "{e}");
    let e = err("APPLICATION-FOO 5 x\n");
    assert!(matches!(e.kind, DictErrorKind::UnknownKeyword(_)), "{e}");
    let e = err("COMMAND 257 CER\n");
    assert!(matches!(e.kind, DictErrorKind::Syntax(_)), "{e}");
    let e = err("APPLICATION 99 Nothing\nCOMMAND 9 AB AC\n");
    assert_eq!(e.line, 2);
}

#[test]
fn conflicting_definitions_are_errors() {
    // Another wire format for a built-in code (OpenSIPS's README declares Cost-Unit grouped;
    // RFC 4006 says UTF8String).
    let e = err("ATTRIBUTE Cost-Unit 424 grouped\n{\n\tExponent | OPTIONAL | 1\n}\n");
    assert_eq!(e.line, 1);
    assert!(matches!(e.kind, DictErrorKind::Conflict(_)), "{e}");
    assert!(
        e.to_string().contains("builtin/credit_control.dict:"),
        "{e}"
    );
    // Same code twice in one file under two names.
    let e = err("ATTRIBUTE A1 3600 unsigned32\nATTRIBUTE A2 3600 unsigned32\n");
    assert_eq!(
        (e.line, matches!(e.kind, DictErrorKind::Conflict(_))),
        (2, true)
    );
    // Same name twice in one file for two codes.
    let e = err("ATTRIBUTE A1 3601 unsigned32\nATTRIBUTE A1 3602 unsigned32\n");
    assert_eq!(e.line, 2);
    // Incompatible types for one code in one file.
    let e = err("ATTRIBUTE A1 3603 unsigned32\nATTRIBUTE A1 3603 string\n");
    assert_eq!(e.line, 2);
    // A request without its answer (OpenSIPS refuses these too).
    let e = err("APPLICATION 50 X\nREQUEST 7000 Lonely-Request\n{\n}\n");
    assert_eq!(e.to_string(), "test.dict:2: REQUEST 7000 has no ANSWER");
    // Compatible re-declarations are fine, identical ones too.
    assert!(load("ATTRIBUTE A1 3604 unsigned32\nATTRIBUTE A1 3604 integer\n").is_ok());
    assert!(load("ATTRIBUTE Origin-Host 264 string\n").is_ok());
}

#[test]
fn failed_load_leaves_dictionary_unchanged() {
    let mut d = Dictionary::new_with_builtin();
    let before = d.avps().count();
    let r = d.load_str(
        "ATTRIBUTE Good 3700 unsigned32\nATTRIBUTE Bad 3701 nonsense\n",
        "x",
    );
    assert!(r.is_err());
    assert_eq!(d.avps().count(), before);
    assert!(d.avp_by_name("Good").is_none());
    d.load_str("ATTRIBUTE Good 3700 unsigned32\n", "x")
        .expect("loads");
    assert_eq!(d.avps().count(), before + 1);
    // Loading into one copy does not touch the shared built-ins.
    assert!(Dictionary::builtin().avp_by_name("Good").is_none());
}

#[test]
fn later_files_may_retake_a_builtin_name() {
    let d = load("ATTRIBUTE Session-Priority 3800 unsigned32\n").expect("loads");
    assert_eq!(
        d.avp_by_name("Session-Priority").map(|a| a.code),
        Some(3800)
    );
    assert!(
        d.avp(650, 10415).is_some(),
        "the built-in stays reachable by code"
    );
}

#[test]
fn load_file_reports_io_and_encoding_errors() {
    let mut d = Dictionary::empty();
    let missing = std::path::Path::new("/nonexistent/dmbridge/test.dict");
    let e = d.load_file(missing).expect_err("missing file");
    assert_eq!(e.line, 0);
    assert!(matches!(e.kind, DictErrorKind::Io(_)));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/dmbridge/test.dict:0: cannot read"));

    let dir = std::env::temp_dir().join(format!("dmbridge-dict-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let bad = dir.join("bad.dict");
    std::fs::write(&bad, b"ATTRIBUTE A 3900 unsigned32\nATTRIBUTE \xff 3901\n").expect("write");
    let e = d.load_file(&bad).expect_err("not UTF-8");
    assert_eq!(e.line, 2);
    let good = dir.join("good.dict");
    std::fs::write(&good, "ATTRIBUTE A 3900 unsigned32\n").expect("write");
    d.load_file(&good).expect("loads");
    assert_eq!(d.avp(3900, 0).map(|a| a.ty), Some(AvpType::Unsigned32));
    assert!(d
        .avp_origin(3900, 0)
        .is_some_and(|o| o.ends_with("good.dict:1")));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_files_is_the_builtin_plus_each_file_in_order_all_or_nothing() {
    let d = Dictionary::with_files([
        ("a.dict", &b"ATTRIBUTE A 3900 unsigned32\n"[..]),
        ("b.dict", &b"ATTRIBUTE B 3901 utf8string\n"[..]),
    ])
    .expect("builds");
    assert!(d.avp(263, 0).is_some(), "the built-in is there");
    assert!(d
        .avp_origin(3900, 0)
        .is_some_and(|o| o.ends_with("a.dict:1")));
    assert!(d
        .avp_origin(3901, 0)
        .is_some_and(|o| o.ends_with("b.dict:1")));

    // A later file may use what an earlier one defined; order matters.
    let e = Dictionary::with_files([
        ("b.dict", &b"VALUE A One 1\n"[..]),
        ("a.dict", &b"ATTRIBUTE A 3900 unsigned32\n"[..]),
    ])
    .expect_err("VALUE before its ATTRIBUTE");
    assert_eq!(e.origin, "b.dict");

    // Bytes that are not UTF-8 name the file and the line of the first bad byte.
    let e = Dictionary::with_files([(
        "latin1.dict",
        &b"ATTRIBUTE A 3900 unsigned32\nATTRIBUTE \xe9 3901\n"[..],
    )])
    .expect_err("not UTF-8");
    assert_eq!((e.origin.as_str(), e.line), ("latin1.dict", 2));
}

#[test]
fn empty_dictionary_knows_nothing() {
    let d = Dictionary::empty();
    assert!(d.avp(263, 0).is_none());
    assert!(d.command(0, 257).is_none());
    assert!(d.command_by_abbr("CER").is_none());
    assert_eq!(d.applications().count(), 0);
}

// ---- the printer -------------------------------------------------------------------------

#[test]
fn print_avp() {
    let s = print::describe(dict(), "Subscription-Id").expect("known");
    assert!(s.starts_with("AVP Subscription-Id\n"), "{s}");
    assert!(s.contains("code:      443"), "{s}");
    assert!(s.contains("type:      Grouped"), "{s}");
    assert!(s.contains("{ Subscription-Id-Type }"), "{s}");
    assert!(!s.contains("*[ AVP ]"), "closed group: {s}");
    let s = print::describe(dict(), "subscription-id-type").expect("any case");
    assert!(s.contains("END_USER_SIP_URI"), "{s}");
    let s = print::describe(dict(), "701:10415").expect("vendor AVP");
    assert!(
        s.contains("AVP MSISDN") && s.contains("10415 (3GPP)"),
        "{s}"
    );
    assert!(s.contains("must VM, must not -"), "{s}");
    let s = print::describe(dict(), "263").expect("by code");
    assert!(s.starts_with("AVP Session-Id"), "{s}");
}

#[test]
fn print_command() {
    let s = print::describe(dict(), "CCR").expect("CCR");
    assert_eq!(
        s.matches("Command Credit-Control (CCR / CCA)").count(),
        2,
        "{s}"
    );
    assert!(
        s.contains("application: 4 (Diameter Credit Control)"),
        "{s}"
    );
    assert!(s.contains("application: 16777238 (3GPP Gx)"), "{s}");
    assert!(
        s.contains("<CCR> ::= < Diameter Header: 272, REQ, PXY, 4 >"),
        "{s}"
    );
    assert!(s.contains("< Session-Id >"), "{s}");
    assert!(s.contains("*[ Multiple-Services-Credit-Control ]"), "{s}");
    let s = print::describe(dict(), "Push-Profile-Request").expect("by name");
    assert!(s.contains("PPR / PPA"), "{s}");
    let s = print::describe(dict(), "257").expect("CER by code");
    assert!(s.contains("< Diameter Header: 257, REQ >"), "{s}");
    assert!(s.contains("1*{ Host-IP-Address }"), "{s}");
    assert!(s.contains("proxiable:   no"), "{s}");
    let s = print::describe(dict(), "rar").expect("RAR");
    assert_eq!(s.matches("Command Re-Auth").count(), 3, "base, Rx, Gx: {s}");
    let s = print::describe(dict(), "16777251").expect("application");
    assert!(
        s.contains("Application 3GPP S6a/S6d") && s.contains("316 Update-Location"),
        "{s}"
    );
    assert!(print::describe(dict(), "No-Such-Thing").is_none());
    assert!(print::describe(dict(), "").is_none());
    assert!(print::describe(dict(), "4000000000").is_none());
}

// ---- hostile input ----------------------------------------------------------------------

mod hostile {
    use super::*;
    use proptest::prelude::*;

    const PIECES: &[&str] = &[
        "ATTRIBUTE ",
        "VENDOR ",
        "VALUE ",
        "APPLICATION",
        "-AUTH ",
        "-ACC ",
        "REQUEST ",
        "ANSWER ",
        "COMMAND ",
        "{",
        "}",
        "{ closed",
        "|",
        " | REQUIRED | ",
        " | OPTIONAL | ",
        "FIXED_HEAD",
        "grouped",
        "unsigned32",
        "string",
        "Enumerated",
        "0",
        "1",
        "-1",
        "*",
        "2*5",
        "4294967295",
        "4294967296",
        "10415",
        "/",
        "Session-Id",
        "User-Name",
        "X",
        "Y",
        "AVP",
        "#",
        "\n",
        "\n\n",
        "\t",
        " ",
        "M?",
        "!M",
        "not-proxiable",
        "\u{e9}",
        "\r\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary text never panics; it loads or gives a located error.
        #[test]
        fn garbage_never_panics(text in "\\PC{0,400}") {
            let mut d = Dictionary::empty();
            if let Err(e) = d.load_str(&text, "fuzz") {
                prop_assert!(e.line <= text.lines().count().max(1));
                prop_assert!(e.to_string().starts_with("fuzz:"));
            }
        }

        /// Text assembled from the format's own tokens reaches deeper into the parser.
        #[test]
        fn token_soup_never_panics(idx in proptest::collection::vec(0..PIECES.len(), 0..80)) {
            let text: String = idx.iter().filter_map(|&i| PIECES.get(i).copied()).collect();
            let mut d = Dictionary::new_with_builtin();
            let before = d.avps().count();
            match d.load_str(&text, "soup") {
                Ok(()) => {
                    // Whatever loaded is consistent: every rule names a known AVP.
                    for a in d.avps() {
                        for r in &a.group.rules {
                            prop_assert!(d.avp(r.code, r.vendor).is_some());
                        }
                    }
                }
                Err(e) => {
                    prop_assert_eq!(d.avps().count(), before);
                    prop_assert!(e.line <= text.lines().count().max(1));
                }
            }
            let _ = print::describe(&d, &text);
        }
    }
}

// ---- freeDiameter's names on output (NAMES freediameter) -------------------------------

#[test]
fn names_freediameter_line_switches_output_names() {
    let d = load("# drop-in for aaa_diameter scripts\nNAMES freediameter\n").expect("loads");
    assert_eq!(
        d.avp(702, 10415).map(|a| &*a.name),
        Some("User-Data-29.329")
    );
    assert_eq!(d.avp_by_name("Sh-User-Data").map(|a| a.code), Some(702));
    assert_eq!(d.avp(263, 0).map(|a| &*a.name), Some("Session-Id"));
    // without the line, the built-in names stay
    let d = load("VENDOR 99999 Acme\n").expect("loads");
    assert_eq!(d.avp(702, 10415).map(|a| &*a.name), Some("Sh-User-Data"));
    let e = err("NAMES wireshark\n");
    assert_eq!(e.line, 1);
    assert!(e.to_string().contains("expected NAMES freediameter"), "{e}");
}
