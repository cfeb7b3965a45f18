//! Renders definitions for the `dmbridge dict <name|code>` tool.
//!
//! A query may be an AVP name (`Subscription-Id`), a command abbreviation (`CCR`, `ppa`) or
//! name (`Credit-Control-Request`, `Push-Profile`), a decimal code (`263`: the IETF AVP and
//! every command with that code), `code:vendor` for a vendor AVP (`701:10415`), or an
//! application id or name. Everything that matches is printed, so `RAR` shows the base,
//! Rx and Gx Re-Auth definitions side by side. ABNF is printed in RFC 6733 §3.2 notation.

use super::{AppDef, AvpDef, CommandDef, Dictionary, Rule, RuleKind, Rules};
use crate::dict::avp_flags;
use std::fmt::{self, Write};

/// One thing a query matched.
#[derive(Clone, Copy, Debug)]
pub enum Found<'a> {
    /// An AVP definition (by name, code or `code:vendor`).
    Avp(&'a AvpDef),
    /// A command (by name, abbreviation or code); request and answer are one entry.
    Command(&'a CommandDef),
    /// An application (by id or name).
    Application(&'a AppDef),
}

/// Everything `query` names, AVPs first, without duplicates.
pub fn find<'a>(dict: &'a Dictionary, query: &str) -> Vec<Found<'a>> {
    let q = query.trim();
    let mut out: Vec<Found<'a>> = Vec::new();
    let push_cmd = |out: &mut Vec<Found<'a>>, c: &'a CommandDef| {
        let dup = out
            .iter()
            .any(|f| matches!(f, Found::Command(x) if std::ptr::eq(*x, c)));
        if !dup {
            out.push(Found::Command(c));
        }
    };
    if q.is_empty() {
        return out;
    }
    if let Some((c, v)) = q.split_once(':') {
        if let (Ok(code), Ok(vendor)) = (c.trim().parse::<u32>(), v.trim().parse::<u32>()) {
            if let Some(d) = dict.avp(code, vendor) {
                out.push(Found::Avp(d));
            }
            return out;
        }
    }
    if let Ok(n) = q.parse::<u32>() {
        if let Some(d) = dict.avp(n, 0) {
            out.push(Found::Avp(d));
        }
        for c in dict.commands().filter(|c| c.code == n) {
            push_cmd(&mut out, c);
        }
        if out.is_empty() {
            if let Some(a) = dict.application(n) {
                out.push(Found::Application(a));
            }
        }
        return out;
    }
    let avp = dict.avp_by_name(q).or_else(|| {
        // The tool may be typed at: accept any case (a scan, not the hot path).
        dict.avps().find(|d| d.name.eq_ignore_ascii_case(q))
    });
    if let Some(d) = avp {
        out.push(Found::Avp(d));
    }
    for c in dict.commands() {
        let by_abbr =
            c.request_abbr.eq_ignore_ascii_case(q) || c.answer_abbr.eq_ignore_ascii_case(q);
        let by_name = c.name.eq_ignore_ascii_case(q)
            || q.eq_ignore_ascii_case(&format!("{}-Request", c.name))
            || q.eq_ignore_ascii_case(&format!("{}-Answer", c.name));
        if by_abbr || by_name {
            push_cmd(&mut out, c);
        }
    }
    if let Some(c) = dict.command_by_name(q) {
        push_cmd(&mut out, c);
    }
    if out.is_empty() {
        if let Some(a) = dict.applications().find(|a| a.name.eq_ignore_ascii_case(q)) {
            out.push(Found::Application(a));
        }
    }
    out
}

/// Writes every definition `query` names; returns how many there were (0: nothing known).
pub fn render(dict: &Dictionary, query: &str, out: &mut impl Write) -> Result<usize, fmt::Error> {
    let found = find(dict, query);
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            out.write_char('\n')?;
        }
        match *f {
            Found::Avp(d) => write_avp(dict, d, out)?,
            Found::Command(c) => write_command(dict, c, out)?,
            Found::Application(a) => write_application(dict, a, out)?,
        }
    }
    Ok(found.len())
}

/// [`render`] into a new string; `None` when the dictionary knows nothing by that name/code.
pub fn describe(dict: &Dictionary, query: &str) -> Option<String> {
    let mut s = String::new();
    match render(dict, query, &mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s),
    }
}

fn vendor_label(dict: &Dictionary, vendor: u32) -> String {
    match dict.vendor(vendor) {
        Some(v) => format!("{vendor} ({})", v.name),
        None if vendor == 0 => "0 (IETF)".into(),
        None => vendor.to_string(),
    }
}

fn flag_words(bits: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (avp_flags::V, 'V'),
        (avp_flags::M, 'M'),
        (avp_flags::P, 'P'),
    ] {
        if bits & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

/// Writes one AVP definition.
pub fn write_avp(dict: &Dictionary, d: &AvpDef, out: &mut impl Write) -> fmt::Result {
    writeln!(out, "AVP {}", d.name)?;
    writeln!(out, "  code:      {}", d.code)?;
    writeln!(out, "  vendor:    {}", vendor_label(dict, d.vendor))?;
    writeln!(out, "  type:      {}", d.ty)?;
    writeln!(
        out,
        "  flags:     must {}, must not {}",
        flag_words(d.flags.must),
        flag_words(d.flags.must_not)
    )?;
    if let Some(o) = dict.avp_origin(d.code, d.vendor) {
        writeln!(out, "  defined:   {o}")?;
    }
    if d.ty == crate::AvpType::Grouped {
        let header = if d.vendor == 0 {
            format!("< AVP Header: {} >", d.code)
        } else {
            format!("< AVP Header: {}, {} >", d.code, d.vendor)
        };
        writeln!(out, "  ABNF:")?;
        write_abnf(dict, &format!("<{}>", d.name), &header, &d.group, out)?;
    }
    if !d.enums.is_empty() {
        writeln!(out, "  values:")?;
        let mut vals: Vec<_> = d.enums.iter().collect();
        vals.sort_by_key(|e| e.value);
        for e in vals {
            writeln!(out, "    {:>10}  {}", e.value, e.name)?;
        }
    }
    Ok(())
}

/// Writes one command definition: request and answer ABNF.
pub fn write_command(dict: &Dictionary, c: &CommandDef, out: &mut impl Write) -> fmt::Result {
    let app = match dict.application(c.app_id) {
        Some(a) => format!("{} ({})", c.app_id, a.name),
        None => c.app_id.to_string(),
    };
    let abbr = if c.request_abbr.is_empty() {
        "no abbreviation".to_string()
    } else {
        format!("{} / {}", c.request_abbr, c.answer_abbr)
    };
    writeln!(out, "Command {} ({abbr})", c.name)?;
    writeln!(out, "  code:        {}", c.code)?;
    writeln!(out, "  application: {app}")?;
    writeln!(
        out,
        "  proxiable:   {}",
        if c.proxiable { "yes" } else { "no" }
    )?;
    if let Some(o) = dict
        .cmd_by_key
        .get(&(c.app_id, c.code))
        .and_then(|&i| dict.command_origin.get(i))
    {
        writeln!(out, "  defined:     {o}")?;
    }
    let px = if c.proxiable { ", PXY" } else { "" };
    let app_part = if c.app_id == 0 {
        String::new()
    } else {
        format!(", {}", c.app_id)
    };
    let req_name = if c.request_abbr.is_empty() {
        format!("<{}-Request>", c.name)
    } else {
        format!("<{}>", c.request_abbr)
    };
    let ans_name = if c.answer_abbr.is_empty() {
        format!("<{}-Answer>", c.name)
    } else {
        format!("<{}>", c.answer_abbr)
    };
    writeln!(out, "  request:")?;
    write_abnf(
        dict,
        &req_name,
        &format!("< Diameter Header: {}, REQ{px}{app_part} >", c.code),
        &c.request,
        out,
    )?;
    writeln!(out, "  answer:")?;
    write_abnf(
        dict,
        &ans_name,
        &format!("< Diameter Header: {}{px}{app_part} >", c.code),
        &c.answer,
        out,
    )
}

fn write_application(dict: &Dictionary, a: &AppDef, out: &mut impl Write) -> fmt::Result {
    let kind = match a.kind {
        super::AppKind::Auth => "authentication/authorization",
        super::AppKind::Acct => "accounting",
    };
    writeln!(out, "Application {} ({})", a.name, a.id)?;
    writeln!(out, "  kind:      {kind}")?;
    if a.vendor != 0 {
        writeln!(out, "  vendor:    {}", vendor_label(dict, a.vendor))?;
    }
    for c in dict.commands().filter(|c| c.app_id == a.id) {
        writeln!(
            out,
            "  command:   {} {} ({} / {})",
            c.code, c.name, c.request_abbr, c.answer_abbr
        )?;
    }
    Ok(())
}

/// `min*max` as RFC 6733 §3.2 writes it, empty for the default of the rule's kind.
fn qualifier(r: &Rule) -> String {
    let default_min = u32::from(r.kind != RuleKind::Optional);
    if r.min == default_min && r.max == Some(1) {
        return String::new();
    }
    let min = if r.min == 0 {
        String::new()
    } else {
        r.min.to_string()
    };
    match r.max {
        None => format!("{min}*"),
        Some(m) if m == r.min => format!("{m}*{m}"),
        Some(m) => format!("{min}*{m}"),
    }
}

fn write_abnf(
    dict: &Dictionary,
    lhs: &str,
    header: &str,
    rules: &Rules,
    out: &mut impl Write,
) -> fmt::Result {
    let pad = " ".repeat(4 + lhs.len() + 5);
    writeln!(out, "    {lhs} ::= {header}")?;
    for r in &rules.rules {
        let name = match dict.avp(r.code, r.vendor) {
            Some(d) => d.name.to_string(),
            None if r.vendor == 0 => r.code.to_string(),
            None => format!("{}:{}", r.code, r.vendor),
        };
        let (open, close) = match r.kind {
            RuleKind::Fixed => ('<', '>'),
            RuleKind::Required => ('{', '}'),
            RuleKind::Optional => ('[', ']'),
        };
        writeln!(out, "{pad}{}{open} {name} {close}", qualifier(r))?;
    }
    if rules.extensible {
        writeln!(out, "{pad}*[ AVP ]")?;
    }
    Ok(())
}
