//! tshark as the wire-format oracle: decodes captures and offline pcaps into plain structs.
//!
//! Wireshark's Diameter dissector is an implementation nobody on this team wrote, with its own
//! dictionary; agreeing with it on header fields, AVP layout and values is strong evidence the
//! bytes are right. Its JSON output (`-T json --no-duplicate-keys`) gives, per AVP, the raw
//! bytes, code, flags, length, vendor and the typed value under the AVP's dictionary name.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::paths::require_program;
use crate::wire::from_hex;

/// Wireshark's expert severity "warning" (PI_WARN, 0x00600000). The peers README's filter
/// `_ws.expert.severity >= 6291456` starts here: it includes warnings such as
/// "Unknown AVP ... add it to dictionary.xml", which tshark 4.0 raises for test_app's private
/// command and AVP.
pub const EXPERT_WARN: u32 = 6_291_456;

/// Wireshark's expert severity "error" (PI_ERROR, 0x00800000).
pub const EXPERT_ERROR: u32 = 8_388_608;

/// The expert messages tshark raises for commands, applications, AVPs and vendors missing from
/// its dictionary (all start like this and mention `dictionary.xml`).
pub fn is_unknown_to_dictionary(message: &str) -> bool {
    message.starts_with("Unknown ") && message.contains("dictionary.xml")
}

/// The TCP ports the offline pcaps use (client, server): 3868 needs no decode-as.
pub const OFFLINE_PORTS: (u16, u16) = (40_000, 3868);

/// Path of `tshark`, or a panic naming the setup command.
pub fn tshark_program() -> PathBuf {
    require_program("tshark", "tshark")
}

/// One Diameter message as tshark decoded it.
#[derive(Debug, Clone)]
pub struct TsMessage {
    /// Frame number in the capture.
    pub frame: u64,
    /// Header flag byte.
    pub flags: u8,
    /// Command code.
    pub cmd_code: u32,
    /// Application id.
    pub app_id: u32,
    /// Hop-by-hop id.
    pub hbh: u32,
    /// End-to-end id.
    pub e2e: u32,
    /// Message length from the header.
    pub length: usize,
    /// Top-level AVPs in wire order.
    pub avps: Vec<TsAvp>,
    /// Expert infos of the frame holding this message: (severity, message).
    pub experts: Vec<(u32, String)>,
    /// True when tshark marked the frame malformed.
    pub malformed: bool,
}

/// One AVP as tshark decoded it.
#[derive(Debug, Clone)]
pub struct TsAvp {
    /// AVP code.
    pub code: u32,
    /// Flag byte.
    pub flags: u8,
    /// Vendor-Id, when the V bit is set.
    pub vendor: Option<u32>,
    /// Length field (header + data, no padding).
    pub len: usize,
    /// The AVP's bytes on the wire as tshark saw them (header, data and padding).
    pub raw: Vec<u8>,
    /// tshark's dictionary name (`Origin-Host`), when it knows the AVP.
    pub name: Option<String>,
    /// tshark's shown value (numbers in decimal, strings as text, Time as a date, Address
    /// and OctetString as colon hex).
    pub value: Option<String>,
    /// Sub-fields tshark shows under the value (e.g. `Host-IP-Address.IPv4`).
    pub details: Vec<(String, String)>,
    /// Grouped AVP members.
    pub children: Vec<TsAvp>,
}

impl TsAvp {
    /// The unpadded data bytes (after the 8 or 12 byte header).
    pub fn data(&self) -> &[u8] {
        let hdr = if self.vendor.is_some() { 12 } else { 8 };
        self.raw
            .get(hdr..self.len.min(self.raw.len()))
            .unwrap_or(&[])
    }

    /// A sub-field value by its suffix, e.g. `detail("IPv4")`.
    pub fn detail(&self, suffix: &str) -> Option<&str> {
        self.details
            .iter()
            .find(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v.as_str())
    }
}

impl TsMessage {
    /// True for requests.
    pub fn is_request(&self) -> bool {
        self.flags & 0x80 != 0
    }

    /// What tshark objects to: "malformed", and every expert info of at least `min_severity`
    /// ([`EXPERT_WARN`] as in the peers README, or [`EXPERT_ERROR`]) whose message `allow`
    /// does not accept. Empty means clean.
    pub fn problems(&self, min_severity: u32, allow: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .experts
            .iter()
            .filter(|(sev, msg)| *sev >= min_severity && !allow(msg))
            .map(|(sev, msg)| format!("frame {}: expert {sev:#x}: {msg}", self.frame))
            .collect();
        if self.malformed {
            out.push(format!("frame {}: malformed", self.frame));
        }
        out
    }

    /// First top-level AVP whose tshark name is `name`.
    pub fn avp(&self, name: &str) -> Option<&TsAvp> {
        self.avps.iter().find(|a| a.name.as_deref() == Some(name))
    }

    /// The value of the first top-level AVP named `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.avp(name).and_then(|a| a.value.as_deref())
    }

    /// The answer's outcome: its Result-Code, else the Experimental-Result-Code inside its
    /// Experimental-Result (RFC 6733 §7.6).
    pub fn result_code(&self) -> Option<&str> {
        self.value("Result-Code").or_else(|| {
            self.find_deep("Experimental-Result-Code")
                .first()
                .and_then(|a| a.value.as_deref())
        })
    }

    /// Every AVP named `name` at any depth, in wire order.
    pub fn find_deep(&self, name: &str) -> Vec<&TsAvp> {
        fn walk<'a>(avps: &'a [TsAvp], name: &str, out: &mut Vec<&'a TsAvp>) {
            for a in avps {
                if a.name.as_deref() == Some(name) {
                    out.push(a);
                }
                walk(&a.children, name, out);
            }
        }
        let mut out = Vec::new();
        walk(&self.avps, name, &mut out);
        out
    }
}

fn decode_as_args(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .filter(|p| **p != 3868)
        .flat_map(|p| ["-d".to_string(), format!("tcp.port=={p},diameter")])
        .collect()
}

fn run_tshark(pcap: &Path, args: &[String]) -> String {
    let out = Command::new(tshark_program())
        .arg("-r")
        .arg(pcap)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tshark: {e}"));
    if !out.status.success() {
        panic!(
            "tshark {args:?} on {} failed ({}): {}",
            pcap.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tshark -T fields` rows for `display_filter`, one `Vec` of field values per frame (multiple
/// occurrences of a field are joined with `,` by tshark).
pub fn fields(
    pcap: &Path,
    diameter_ports: &[u16],
    display_filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut args = decode_as_args(diameter_ports);
    args.extend([
        "-Y".into(),
        display_filter.into(),
        "-T".into(),
        "fields".into(),
    ]);
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    run_tshark(pcap, &args)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// Frames matching the peers README's filter `_ws.malformed || _ws.expert.severity >=
/// 6291456` (malformed, or any expert info of warning level or above), as
/// `"frame N: messages"` lines. Empty means clean. See also [`TsMessage::problems`].
pub fn bad_frames(pcap: &Path, diameter_ports: &[u16]) -> Vec<String> {
    let filter = format!("_ws.malformed || _ws.expert.severity >= {EXPERT_WARN}");
    fields(
        pcap,
        diameter_ports,
        &filter,
        &["frame.number", "_ws.expert.message", "_ws.malformed"],
    )
    .into_iter()
    .map(|row| {
        format!(
            "frame {}: {}",
            row.first().map_or("?", String::as_str),
            row[1..].join(" | ")
        )
    })
    .collect()
}

/// Decodes every Diameter message in `pcap`.
pub fn decode_pcap(pcap: &Path, diameter_ports: &[u16]) -> Vec<TsMessage> {
    let mut args = decode_as_args(diameter_ports);
    args.extend(["-Y", "diameter", "-T", "json", "--no-duplicate-keys"].map(String::from));
    let text = run_tshark(pcap, &args);
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("tshark JSON for {} does not parse: {e}", pcap.display()));
    let mut out = Vec::new();
    for pkt in json.as_array().into_iter().flatten() {
        let layers = &pkt["_source"]["layers"];
        let frame = str_field(&layers["frame"], "frame.number")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut experts = Vec::new();
        let mut malformed = false;
        collect_experts(layers, &mut experts, &mut malformed);
        for d in one_or_many(&layers["diameter"]) {
            let mut m = parse_message(frame, d).unwrap_or_else(|e| {
                panic!(
                    "frame {frame} of {}: unexpected tshark JSON: {e}\n{d:#}",
                    pcap.display()
                )
            });
            m.experts = experts.clone();
            m.malformed = malformed;
            out.push(m);
        }
    }
    out
}

/// Walks a packet's JSON for `_ws.expert` objects and `_ws.malformed` keys.
fn collect_experts(v: &Value, out: &mut Vec<(u32, String)>, malformed: &mut bool) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "_ws.malformed" {
                    *malformed = true;
                }
                if k == "_ws.expert" {
                    for e in one_or_many(child) {
                        let sev = str_field(e, "_ws.expert.severity")
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(u32::MAX);
                        let msg = str_field(e, "_ws.expert.message")
                            .unwrap_or("?")
                            .to_string();
                        out.push((sev, msg));
                    }
                }
                collect_experts(child, out, malformed);
            }
        }
        Value::Array(items) => {
            for i in items {
                collect_experts(i, out, malformed);
            }
        }
        _ => {}
    }
}

fn one_or_many(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn num(v: &Value, key: &str) -> Result<u64, String> {
    let s = str_field(v, key).ok_or_else(|| format!("no {key}"))?;
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{key}={s:?}: {e}"))
}

fn parse_message(frame: u64, d: &Value) -> Result<TsMessage, String> {
    Ok(TsMessage {
        frame,
        flags: num(d, "diameter.flags")? as u8,
        cmd_code: num(d, "diameter.cmd.code")? as u32,
        app_id: num(d, "diameter.applicationId")? as u32,
        hbh: num(d, "diameter.hopbyhopid")? as u32,
        e2e: num(d, "diameter.endtoendid")? as u32,
        length: num(d, "diameter.length")? as usize,
        avps: parse_avps(d)?,
        experts: Vec::new(),
        malformed: false,
    })
}

/// Parses the `diameter.avp` (raw) / `diameter.avp_tree` (decoded) pair of a message or of a
/// grouped AVP's `_tree`.
fn parse_avps(container: &Value) -> Result<Vec<TsAvp>, String> {
    let raws = one_or_many(&container["diameter.avp"]);
    let trees = one_or_many(&container["diameter.avp_tree"]);
    if raws.len() != trees.len() {
        return Err(format!(
            "{} raw AVPs but {} decoded",
            raws.len(),
            trees.len()
        ));
    }
    raws.iter()
        .zip(trees)
        .map(|(raw, tree)| parse_avp(raw, tree))
        .collect()
}

fn parse_avp(raw: &Value, tree: &Value) -> Result<TsAvp, String> {
    let raw = from_hex(raw.as_str().ok_or("raw AVP is not a string")?)?;
    let mut avp = TsAvp {
        code: num(tree, "diameter.avp.code")? as u32,
        flags: num(tree, "diameter.avp.flags")? as u8,
        vendor: num(tree, "diameter.avp.vendorId").ok().map(|v| v as u32),
        len: num(tree, "diameter.avp.len")? as usize,
        raw,
        name: None,
        value: None,
        details: Vec::new(),
        children: Vec::new(),
    };
    let Some(obj) = tree.as_object() else {
        return Err("AVP tree is not an object".into());
    };
    for (k, v) in obj {
        let Some(field) = k.strip_prefix("diameter.") else {
            continue;
        };
        if field.starts_with("avp") || field == "vendorId" || field == "flags_tree" {
            continue;
        }
        if let Some(base) = field.strip_suffix("_tree") {
            if v.get("diameter.avp").is_some() {
                avp.children = parse_avps(v)?;
            } else if let Some(sub) = v.as_object() {
                for (sk, sv) in sub {
                    if let Some(s) = sv.as_str() {
                        avp.details.push((
                            sk.trim_start_matches("diameter.").to_string(),
                            s.to_string(),
                        ));
                    }
                }
            }
            if avp.name.is_none() {
                avp.name = Some(base.to_string());
            }
            continue;
        }
        if avp.name.is_none() || avp.name.as_deref() == Some(field) {
            avp.name = Some(field.to_string());
            avp.value = v.as_str().map(str::to_string);
        }
    }
    Ok(avp)
}

/// Writes `messages` to `<dir>/<name>.pcap`, one message per TCP packet from
/// [`OFFLINE_PORTS`].0 to .1, through `text2pcap -T` (no traffic is sent).
pub fn write_pcap(dir: &Path, name: &str, messages: &[Vec<u8>]) -> PathBuf {
    let text2pcap = require_program("text2pcap", "tshark");
    let txt = dir.join(format!("{name}.txt"));
    let pcap = dir.join(format!("{name}.pcap"));
    let mut dump = String::new();
    for m in messages {
        for (i, chunk) in m.chunks(16).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            dump.push_str(&format!("{:06x} {}\n", i * 16, hex.join(" ")));
        }
    }
    std::fs::write(&txt, dump).unwrap_or_else(|e| panic!("cannot write {}: {e}", txt.display()));
    let out = Command::new(text2pcap)
        .arg("-q")
        .arg("-T")
        .arg(format!("{},{}", OFFLINE_PORTS.0, OFFLINE_PORTS.1))
        .arg(&txt)
        .arg(&pcap)
        .output()
        .unwrap_or_else(|e| panic!("cannot run text2pcap: {e}"));
    if !out.status.success() {
        panic!(
            "text2pcap failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    pcap
}

/// Offline oracle in one call: writes `messages` to a pcap (one message per packet) and
/// returns tshark's decoding of each, in the same order. Check [`TsMessage::problems`] on
/// each. Panics when tshark does not find exactly one Diameter message per packet.
pub fn decode_offline(dir: &Path, name: &str, messages: &[Vec<u8>]) -> Vec<TsMessage> {
    let pcap = write_pcap(dir, name, messages);
    let decoded = decode_pcap(&pcap, &[OFFLINE_PORTS.1]);
    if decoded.len() != messages.len() {
        panic!(
            "tshark found {} Diameter messages in {} packets of {}",
            decoded.len(),
            messages.len(),
            pcap.display()
        );
    }
    decoded
}
