use super::*;

fn id() -> Identity {
    Identity {
        origin_host: "bench.test.local".into(),
        origin_realm: "test.local".into(),
        destination_realm: "server.realm".into(),
        destination_host: None,
        session_high: 1_700_000_000,
    }
}

fn dict() -> &'static Dictionary {
    Dictionary::builtin()
}

/// The oracle: placeholders replaced in the JSON text, then encoded from scratch.
fn expected(msg: &Json, s: &Subst) -> Bytes {
    fn walk(v: &mut Json, s: &Subst) {
        match v {
            Json::String(t) => {
                let session = format!(
                    "bench.test.local;{};{}",
                    1_700_000_000u32.wrapping_add((s.counter >> 32) as u32),
                    s.counter & 0xFFFF_FFFF
                );
                *t = t
                    .replace("{{counter}}", &s.counter.to_string())
                    .replace("{{random}}", &s.random.to_string())
                    .replace("{{conn}}", &s.conn.to_string())
                    .replace("{{session}}", &session);
            }
            Json::Array(a) => a.iter_mut().for_each(|x| walk(x, s)),
            Json::Object(o) => o.values_mut().for_each(|x| walk(x, s)),
            _ => {}
        }
    }
    let mut filled = fill(msg, &id(), dict()).unwrap();
    walk(&mut filled, s);
    encode(&filled, dict()).unwrap()
}

fn render(t: &Template, hbh: u32, e2e: u32, s: &Subst) -> Bytes {
    let mut out = BytesMut::new();
    t.write(&mut out, hbh, e2e, s);
    out.freeze()
}

fn ccr() -> Json {
    json!({
        "cmd_code": 272, "app_id": 4, "flags": "RP",
        "avps": [
            {"Auth-Application-Id": 4},
            {"Service-Context-Id": "32260@3gpp.org"},
            {"CC-Request-Type": "INITIAL_REQUEST"},
            {"CC-Request-Number": 0},
            {"Subscription-Id": [
                {"Subscription-Id-Type": 0},
                {"Subscription-Id-Data": "49170{{counter}}"}
            ]},
            {"Multiple-Services-Credit-Control": [
                {"Requested-Service-Unit": [{"CC-Time": 60}]},
                {"Rating-Group": 100}
            ]},
            {"User-Name": "{{random}}-{{conn}}{{counter}}x"},
        ]
    })
}

#[test]
fn substitutions_match_a_fresh_encoding() {
    let t = Template::compile(&ccr(), &id(), dict()).unwrap();
    assert!(!t.is_static());
    for s in [
        Subst {
            counter: 0,
            random: 0,
            conn: 0,
        },
        Subst {
            counter: 7,
            random: 4_000_000_000,
            conn: 3,
        },
        Subst {
            counter: 123_456_789_012,
            random: 1,
            conn: 1023,
        },
        Subst {
            counter: u64::MAX,
            random: u32::MAX,
            conn: u32::MAX,
        },
    ] {
        let got = render(&t, 0, 0, &s);
        assert_eq!(got, expected(&ccr(), &s), "{s:?}");
        let m = Message::decode(got).unwrap();
        assert!(dmproto::validate_request(&m, dict()).is_ok(), "{s:?}");
    }
}

#[test]
fn ids_are_patched_and_messages_append() {
    let t = Template::compile(&ccr(), &id(), dict()).unwrap();
    let mut out = BytesMut::new();
    t.write(&mut out, 0xAABB_CCDD, 0x1122_3344, &Subst::default());
    let first = out.len();
    t.write(
        &mut out,
        1,
        2,
        &Subst {
            counter: 1_000_000,
            ..Subst::default()
        },
    );
    let buf = out.freeze();
    let a = Message::decode(buf.slice(..first)).unwrap();
    let b = Message::decode(buf.slice(first..)).unwrap();
    assert_eq!(
        (a.header.hop_by_hop, a.header.end_to_end),
        (0xAABB_CCDD, 0x1122_3344)
    );
    assert_eq!((b.header.hop_by_hop, b.header.end_to_end), (1, 2));
    assert_eq!(a.session_id(), Some("bench.test.local;1700000000;0"));
    assert_eq!(b.session_id(), Some("bench.test.local;1700000000;1000000"));
    assert!(
        b.len() > a.len(),
        "longer counters grow the message and its groups"
    );
    assert!(dmproto::validate_request(&b, dict()).is_ok());
}

#[test]
fn static_template_is_one_copy() {
    let msg = json!({"cmd_code": 16777214, "app_id": 16777215, "avps": [
        {"Session-Id": "fixed;1;2"},
        {"345678:999999": {"hex": "0000002a"}}
    ]});
    let t = Template::compile(&msg, &id(), dict()).unwrap();
    assert!(t.is_static());
    assert_eq!(t.ops.len(), 1);
    let s = Subst {
        counter: 9,
        random: 9,
        conn: 9,
    };
    assert_eq!(render(&t, 0, 0, &s), expected(&msg, &s));
    let m = Message::decode(render(&t, 5, 6, &s)).unwrap();
    assert_eq!(m.header.flags.bits(), dmproto::Flags::R | dmproto::Flags::P);
    let test_avp = m.find_ref(345678, 999999).unwrap();
    assert_eq!(test_avp.data, [0, 0, 0, 42]);
    assert!(test_avp.flags.is_vendor());
}

#[test]
fn fill_adds_session_first_and_identity() {
    let msg = json!({"cmd_code": 272, "app_id": 4, "avps": [{"Auth-Application-Id": 4}]});
    let mut me = id();
    me.destination_host = Some("ocs.test.local".into());
    let t = Template::compile(&msg, &me, dict()).unwrap();
    let m = Message::decode(render(
        &t,
        0,
        0,
        &Subst {
            counter: 5,
            ..Subst::default()
        },
    ))
    .unwrap();
    let codes: Vec<u32> = m.avp_refs().map(|a| a.unwrap().code).collect();
    assert_eq!(
        codes,
        [
            code::SESSION_ID,
            code::ORIGIN_HOST,
            code::ORIGIN_REALM,
            code::DESTINATION_REALM,
            code::DESTINATION_HOST,
            258
        ]
    );
    assert_eq!(m.session_id(), Some("bench.test.local;1700000000;5"));
    // CCR is proxiable in the dictionary: "RP" by default.
    assert!(m.header.flags.is_proxiable() && m.is_request());

    // A template's own values win, and its Session-Id stays first.
    let msg = json!({"cmd_code": 272, "app_id": 4, "avps": [
        {"Session-Id": "mine;{{counter}}"},
        {"Origin-Host": "other.test.local"},
        {"263": "not-first"}
    ]});
    let t = Template::compile(&msg, &id(), dict()).unwrap();
    let m = Message::decode(render(
        &t,
        0,
        0,
        &Subst {
            counter: 3,
            ..Subst::default()
        },
    ))
    .unwrap();
    let v: Vec<_> = m.avp_refs().map(|a| a.unwrap()).collect();
    assert_eq!(v[0].data, b"mine;3");
    assert_eq!(v[1].code, code::ORIGIN_REALM);
    assert_eq!(
        m.find_ref(code::ORIGIN_HOST, 0).unwrap().data,
        b"other.test.local"
    );
    assert_eq!(v.iter().filter(|a| a.code == code::SESSION_ID).count(), 2);
}

#[test]
fn commands_without_session_id_get_none() {
    // Base accounting ACR has Session-Id; DWR (base, no Session-Id in its ABNF) does not.
    let msg = json!({"cmd_code": 280, "app_id": 0, "avps": []});
    let t = Template::compile(&msg, &id(), dict()).unwrap();
    let m = Message::decode(render(&t, 0, 0, &Subst::default())).unwrap();
    assert_eq!(m.session_id(), None);
    assert!(!m.header.flags.is_proxiable(), "DWR is not proxiable");
}

#[test]
fn bad_templates_are_refused_with_their_place() {
    let e = |msg: Json| Template::compile(&msg, &id(), dict()).unwrap_err().0;
    let msg = json!({"cmd_code": 272, "app_id": 4, "avps": [{"User-Name": "{{countr}}"}]});
    let m = e(msg);
    assert!(m.contains("User-Name") && m.contains("{{countr}}"), "{m}");
    let m = e(json!({"app_id": 4}));
    assert!(m.contains("cmd_code"), "{m}");
    let m = e(json!([1]));
    assert!(m.starts_with('$'), "{m}");
    let m = e(json!({"cmd_code": 272, "app_id": 4, "flags": "P", "avps": []}));
    assert!(m.contains("R flag"), "{m}");
    let m = e(json!({"cmd_code": 272, "app_id": 4, "avps": [{"No-Such-AVP": 1}]}));
    assert!(m.contains("No-Such-AVP"), "{m}");
    let m =
        e(json!({"cmd_code": 272, "app_id": 4, "avps": [{"CC-Request-Number": "{{counter}}"}]}));
    assert!(m.contains("CC-Request-Number"), "{m}");
}

#[test]
fn braces_that_are_not_placeholders_stay_literal() {
    let msg = json!({"cmd_code": 272, "app_id": 4, "avps": [
        {"User-Name": "{{ x }} {{}} {{ {{counter}}}}"}
    ]});
    let t = Template::compile(&msg, &id(), dict()).unwrap();
    let m = Message::decode(render(
        &t,
        0,
        0,
        &Subst {
            counter: 42,
            ..Subst::default()
        },
    ))
    .unwrap();
    assert_eq!(m.find_ref(1, 0).unwrap().data, b"{{ x }} {{}} {{ 42}}");
}

#[test]
fn decimal_formatting() {
    for n in [0, 9, 10, 99, 1_000_000_007, u64::MAX] {
        let mut b = BytesMut::new();
        put_decimal(&mut b, n);
        assert_eq!(&b[..], n.to_string().as_bytes());
    }
}

#[test]
fn shipped_examples_compile_and_validate() {
    let examples = [
        (
            "cx_ppr",
            include_str!("../../../../cfg-examples/bench/cx_ppr.json"),
            true,
        ),
        (
            "ro_ccr_initial",
            include_str!("../../../../cfg-examples/bench/ro_ccr_initial.json"),
            true,
        ),
        // test_app's command is not in our dictionary: nothing to validate against.
        (
            "test_app",
            include_str!("../../../../cfg-examples/bench/test_app.json"),
            false,
        ),
    ];
    for (name, text, validate) in examples {
        let msg: Json = serde_json::from_str(text).unwrap();
        let t = Template::compile(&msg, &id(), dict()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let m = Message::decode(render(
            &t,
            1,
            2,
            &Subst {
                counter: 77,
                ..Subst::default()
            },
        ))
        .unwrap();
        assert_eq!(
            m.session_id(),
            Some("bench.test.local;1700000000;77"),
            "{name}"
        );
        if validate {
            if let Err(e) = dmproto::validate_request(&m, dict()) {
                panic!("{name}: {e:?}");
            }
        }
    }
}
