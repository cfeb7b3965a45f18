//! The offline tools: `dmbridge decode`, `dmbridge encode` and `dmbridge dict` (DESIGN §8).
//!
//! They are thin shells around `dmproto`: the framing loop and hex parsing here exist only to
//! say *where* bad input is (a byte offset, or the JSON path from [`dmproto::json`]), since
//! these tools are what operators point at captures and hand-written messages.
//!
//! Exit status: 0 on success, 1 on bad input or an unreadable file (with a message on stderr),
//! 2 on a usage error (from clap).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::Bytes;
use dmproto::dict::Dictionary;
use dmproto::header::{Header, HEADER_LEN, MAX_MESSAGE_LEN, VERSION};
use dmproto::json::{read_message, write_message};
use dmproto::Message;

/// Largest input the tools read (a capture of many messages fits; a runaway pipe does not
/// exhaust memory).
pub const MAX_INPUT: u64 = 256 << 20;

/// Options shared by the tools.
#[derive(clap::Args, Debug)]
pub struct DictFiles {
    /// Extra dictionary file in the aaa_diameter format, loaded over the built-ins
    /// (repeatable).
    #[arg(long = "dict", value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// The input is hex text (whitespace ignored) instead of raw binary.
    #[arg(long)]
    pub hex: bool,
    /// Input file with one or more concatenated messages; `-` or nothing for stdin.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub dict: DictFiles,
}

#[derive(clap::Args, Debug)]
pub struct EncodeArgs {
    /// Write hex text (one line) instead of raw binary.
    #[arg(long)]
    pub hex: bool,
    /// Input file with one message document; `-` or nothing for stdin.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub dict: DictFiles,
}

#[derive(clap::Args, Debug)]
pub struct DictArgs {
    /// An AVP name, command name or abbreviation (CCR), a code (263), code:vendor
    /// (701:10415), or an application id.
    pub query: String,
    #[command(flatten)]
    pub dict: DictFiles,
}

/// A tool failure: the message printed after `dmbridge <tool>: `.
#[derive(Debug, PartialEq, Eq)]
pub struct ToolError(pub String);

impl<T: std::fmt::Display> From<T> for ToolError {
    fn from(e: T) -> Self {
        ToolError(e.to_string())
    }
}

fn finish(tool: &str, r: Result<(), ToolError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(ToolError(msg)) => {
            eprintln!("dmbridge {tool}: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// `dmbridge decode`.
pub fn decode(args: DecodeArgs) -> ExitCode {
    finish("decode", run_decode(&args))
}

/// `dmbridge encode`.
pub fn encode(args: EncodeArgs) -> ExitCode {
    finish("encode", run_encode(&args))
}

/// `dmbridge dict`.
pub fn dict(args: DictArgs) -> ExitCode {
    finish("dict", run_dict(&args))
}

/// The built-ins plus the user's files; errors as `file:line: what`.
fn load_dict(files: &DictFiles) -> Result<&'static Dictionary, ToolError> {
    if files.files.is_empty() {
        return Ok(Dictionary::builtin());
    }
    let mut d = Dictionary::new_with_builtin();
    for f in &files.files {
        d.load_file(f)?;
    }
    // One per process run; lives until exit.
    Ok(Box::leak(Box::new(d)))
}

fn read_input(file: Option<&Path>) -> Result<Vec<u8>, ToolError> {
    let mut buf = Vec::new();
    let (name, r) = match file {
        None => (
            "stdin".to_string(),
            io::stdin().lock().take(MAX_INPUT + 1).read_to_end(&mut buf),
        ),
        Some(p) if p == Path::new("-") => (
            "stdin".to_string(),
            io::stdin().lock().take(MAX_INPUT + 1).read_to_end(&mut buf),
        ),
        Some(p) => {
            let name = p.display().to_string();
            let r =
                std::fs::File::open(p).and_then(|f| f.take(MAX_INPUT + 1).read_to_end(&mut buf));
            (name, r)
        }
    };
    r.map_err(|e| ToolError(format!("{name}: {e}")))?;
    if buf.len() as u64 > MAX_INPUT {
        return Err(ToolError(format!("{name}: larger than {MAX_INPUT} bytes")));
    }
    Ok(buf)
}

/// Hex text to bytes; ASCII whitespace anywhere is ignored. Errors name the byte offset in
/// the text.
pub fn parse_hex(text: &[u8]) -> Result<Vec<u8>, ToolError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut hi: Option<(u8, usize)> = None;
    for (i, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => {
                return Err(ToolError(format!(
                    "invalid hex character {:?} at byte {i} of the input",
                    char::from(c)
                )))
            }
        };
        hi = match hi {
            None => Some((v, i)),
            Some((h, _)) => {
                out.push(h << 4 | v);
                None
            }
        };
    }
    if let Some((_, i)) = hi {
        return Err(ToolError(format!(
            "odd number of hex digits: the digit at byte {i} of the input has no partner"
        )));
    }
    Ok(out)
}

/// Splits concatenated messages, checking each header's framing; errors name the offset of
/// the message at fault (in the decoded bytes).
pub fn split_messages(
    input: &Bytes,
) -> impl Iterator<Item = Result<(usize, Message), ToolError>> + '_ {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= input.len() {
            return None;
        }
        let r = frame_at(input, at);
        match &r {
            Ok((_, m)) => at += m.len(),
            Err(_) => failed = true,
        }
        Some(r)
    })
}

fn frame_at(input: &Bytes, at: usize) -> Result<(usize, Message), ToolError> {
    let rest = input.get(at..).unwrap_or_default();
    let h = Header::decode(rest).map_err(|_| {
        ToolError(format!(
            "truncated message at offset {at}: {} bytes left, a header needs {HEADER_LEN}",
            rest.len()
        ))
    })?;
    if h.version != VERSION {
        return Err(ToolError(format!(
            "message at offset {at}: unsupported Diameter version {} (not a Diameter message?)",
            h.version
        )));
    }
    let len = h.length as usize;
    if len < HEADER_LEN || len & 3 != 0 {
        return Err(ToolError(format!(
            "message at offset {at}: invalid message length {len} (must be >= 20 and a multiple of 4)"
        )));
    }
    if len > rest.len() {
        return Err(ToolError(format!(
            "truncated message at offset {at}: its length is {len} bytes but only {} remain",
            rest.len()
        )));
    }
    let m = Message::decode(input.slice(at..at + len))
        .map_err(|e| ToolError(format!("message at offset {at}: {e}")))?;
    Ok((at, m))
}

fn run_decode(args: &DecodeArgs) -> Result<(), ToolError> {
    let dict = load_dict(&args.dict)?;
    let raw = read_input(args.file.as_deref())?;
    let input = Bytes::from(if args.hex { parse_hex(&raw)? } else { raw });
    let where_ = if args.hex {
        " (offsets count decoded bytes, not hex characters)"
    } else {
        ""
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut line = String::new();
    for r in split_messages(&input) {
        let (at, m) = r.map_err(|ToolError(e)| ToolError(format!("{e}{where_}")))?;
        line.clear();
        if let Err(mut e) = write_message(&mut line, &m, dict) {
            // AVP offsets are within the message; report them within the input.
            e.offset += at;
            return Err(ToolError(format!("message at offset {at}: {e}{where_}")));
        }
        line.push('\n');
        write_out(&mut out, line.as_bytes())?;
    }
    out.flush().map_err(|e| ToolError(format!("stdout: {e}")))
}

fn run_encode(args: &EncodeArgs) -> Result<(), ToolError> {
    let dict = load_dict(&args.dict)?;
    let raw = read_input(args.file.as_deref())?;
    let text = std::str::from_utf8(&raw)
        .map_err(|e| ToolError(format!("input is not UTF-8 (at byte {})", e.valid_up_to())))?;
    let wire = read_message(text, dict, MAX_MESSAGE_LEN)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.hex {
        let mut s = String::with_capacity(wire.len() * 2 + 1);
        for b in &wire {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
        write_out(&mut out, s.as_bytes())?;
    } else {
        write_out(&mut out, &wire)?;
    }
    out.flush().map_err(|e| ToolError(format!("stdout: {e}")))
}

fn run_dict(args: &DictArgs) -> Result<(), ToolError> {
    let dict = load_dict(&args.dict)?;
    match dmproto::dict::print::describe(dict, &args.query) {
        Some(text) => {
            let mut out = io::stdout().lock();
            write_out(&mut out, text.as_bytes())?;
            if !text.ends_with('\n') {
                write_out(&mut out, b"\n")?;
            }
            Ok(())
        }
        None => Err(ToolError(format!(
            "{:?}: no AVP, command or application by that name or code",
            args.query
        ))),
    }
}

fn write_out(out: &mut impl Write, b: &[u8]) -> Result<(), ToolError> {
    out.write_all(b)
        .map_err(|e| ToolError(format!("stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmproto::MessageWriter;

    #[test]
    fn hex_with_whitespace_and_errors() {
        assert_eq!(parse_hex(b" 01 0a\nFF\t").unwrap(), [1, 10, 255]);
        assert_eq!(parse_hex(b"").unwrap(), Vec::<u8>::new());
        assert_eq!(
            parse_hex(b"01 0g").unwrap_err().0,
            "invalid hex character 'g' at byte 4 of the input"
        );
        assert_eq!(
            parse_hex(b"01 0").unwrap_err().0,
            "odd number of hex digits: the digit at byte 3 of the input has no partner"
        );
    }

    fn msg(code: u32) -> Bytes {
        let mut w = MessageWriter::new(Header::request(code, 0, 1, 2));
        w.str(263, 0x40, 0, "s");
        w.finish().unwrap()
    }

    #[test]
    fn splits_concatenated_messages_with_offsets() {
        let (a, b) = (msg(280), msg(257));
        let all = Bytes::from([&a[..], &b[..]].concat());
        let v: Vec<_> = split_messages(&all).map(|r| r.unwrap()).collect();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].0, v[0].1.header.code), (0, 280));
        assert_eq!((v[1].0, v[1].1.header.code), (a.len(), 257));
    }

    #[test]
    fn framing_errors_name_the_offset() {
        let a = msg(280);
        let n = a.len();
        let cut = Bytes::from([&a[..], &a[..n - 4]].concat());
        let errs: Vec<_> = split_messages(&cut).filter_map(|r| r.err()).collect();
        assert_eq!(
            errs,
            [ToolError(format!(
                "truncated message at offset {n}: its length is {n} bytes but only {} remain",
                n - 4
            ))]
        );
        let short = Bytes::from([&a[..], &a[..7]].concat());
        let e = split_messages(&short).find_map(|r| r.err()).unwrap();
        assert_eq!(
            e.0,
            format!("truncated message at offset {n}: 7 bytes left, a header needs 20")
        );
        let mut bad = a.to_vec();
        bad[0] = 2;
        let e = split_messages(&Bytes::from(bad))
            .next()
            .unwrap()
            .unwrap_err();
        assert!(
            e.0.starts_with("message at offset 0: unsupported Diameter version 2"),
            "{e:?}"
        );
        let mut bad = a.to_vec();
        bad[3] = 22;
        let e = split_messages(&Bytes::from(bad))
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e.0,
            "message at offset 0: invalid message length 22 (must be >= 20 and a multiple of 4)"
        );
        // Iteration stops after the first error.
        let garbage = Bytes::from_static(&[9; 64]);
        assert_eq!(split_messages(&garbage).count(), 1);
    }
}
