//! Rule-based peer selection in the syntax of freeDiameter's `rt_default.conf`, the file
//! Diameter operators already write for their DRAs.
//!
//! A rule is `CRITERIA : TARGET += SCORE ;`:
//!
//! ```text
//! *                          every message
//! oh="STR/REG"  or="STR/REG" Origin-Host / Origin-Realm of the request
//! dh="STR/REG"  dr="STR/REG" Destination-Host / Destination-Realm
//! un="STR/REG"  si="STR/REG" User-Name / Session-Id
//! app="STR/REG"              application id (decimal), e.g. app="4"        (dmbridge)
//! cmd="STR/REG"              command code (decimal) or its abbreviation, e.g. cmd="CCR"
//!
//! TARGET:  "STR/REG"         the candidate peer's Diameter identity
//!          rlm="STR/REG"     the candidate peer's realm (from its CER/CEA)
//!
//! SCORE:   an integer, or NO_DELIVERY (-70) DEFAULT (5) DEFAULT_REALM (10) REALM (15)
//!          REDIR_HOST (25) REDIR_APP (30) REDIR_REALM (35) REDIR_REALM_APP (40)
//!          REDIR_USER (45) REDIR_SESSION (50) FINALDEST (100), combined with + and -
//! ```
//!
//! `"STR"` matches exactly, ignoring ASCII case; `["REG"]` is a regular expression searched
//! in the value (unanchored, case-sensitive), as freeDiameter's `regexec` does. The `app` and
//! `cmd` criteria are ours: freeDiameter 1.2.1 has no way to route by application.
//!
//! The scoring is freeDiameter's (`libfdcore/routing_dispatch.c`): every candidate starts at
//! `-2` (`FD_SCORE_INI`), the router adds what RFC 6733 §6.1 routing gives it
//! (Destination-Host: FINALDEST; its realm is the Destination-Realm: REALM; realm table:
//! DEFAULT_REALM; default route: DEFAULT), every matching rule adds its score to the matching
//! candidates, and the request goes to the highest score that is not negative. A negative
//! score (NO_DELIVERY) excludes a peer. Where freeDiameter picks among equal scores at
//! random, we take turns (round-robin), which spreads sessions evenly.
//!
//! The parser reports every bad rule with its line and column (for `dmbridge check-config`),
//! skipping to the next `;` to keep going.

use std::fmt;

/// Scores with names (freeDiameter `enum fd_rt_out_score`, `libfdcore.h`).
///
/// The values are freeDiameter's, so a rules file written for its `rt_default` scores the
/// same here. The `REDIR_*` ones are what freeDiameter's redirect handling adds for each
/// Redirect-Host-Usage (RFC 6733 §6.13), in §6.13's precedence order (ALL_SESSION highest).
/// dmbridge's redirect cache ([`crate::redirect`]) is consulted before the routes rather than
/// scored, in that same order; here they are only names a rule may use for its score.
pub mod score {

    /// A rule's way to keep matching requests off a peer: the final score is negative
    /// unless something as strong as FINALDEST (the peer is the Destination-Host) outweighs it.
    pub const NO_DELIVERY: i32 = -70;
    /// Every usable candidate's starting score: negative, so a peer nothing speaks for is
    /// not chosen.
    pub const INI: i32 = -2;
    /// The peer is in the default route (`default_route`).
    pub const DEFAULT: i32 = 5;
    /// The peer is in the most preferred realm-table tier with a candidate for the request's
    /// realm (`[[routes]]`).
    pub const DEFAULT_REALM: i32 = 10;
    /// The peer's own realm (from CER/CEA) is the request's Destination-Realm.
    pub const REALM: i32 = 15;
    /// Redirect-Host-Usage ALL_HOST.
    pub const REDIR_HOST: i32 = 25;
    /// Redirect-Host-Usage ALL_APPLICATION.
    pub const REDIR_APP: i32 = 30;
    /// Redirect-Host-Usage ALL_REALM.
    pub const REDIR_REALM: i32 = 35;
    /// Redirect-Host-Usage REALM_AND_APPLICATION.
    pub const REDIR_REALM_APP: i32 = 40;
    /// Redirect-Host-Usage ALL_USER.
    pub const REDIR_USER: i32 = 45;
    /// Redirect-Host-Usage ALL_SESSION.
    pub const REDIR_SESSION: i32 = 50;
    /// The peer is the request's Destination-Host (the final destination, §6.1.5): more
    /// than every other reason together.
    pub const FINALDEST: i32 = 100;

    /// The named constant `name` (case-insensitive), as the rule syntax accepts it.
    pub fn named(name: &str) -> Option<i32> {
        const ALL: [(&str, i32); 11] = [
            ("NO_DELIVERY", NO_DELIVERY),
            ("DEFAULT", DEFAULT),
            ("DEFAULT_REALM", DEFAULT_REALM),
            ("REALM", REALM),
            ("REDIR_HOST", REDIR_HOST),
            ("REDIR_APP", REDIR_APP),
            ("REDIR_REALM", REDIR_REALM),
            ("REDIR_REALM_APP", REDIR_REALM_APP),
            ("REDIR_USER", REDIR_USER),
            ("REDIR_SESSION", REDIR_SESSION),
            ("FINALDEST", FINALDEST),
        ];
        ALL.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Which field of the request a criterion looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `oh=`: Origin-Host, the request's originator (to route one client's traffic apart).
    OriginHost,
    /// `or=`: Origin-Realm.
    OriginRealm,
    /// `dh=`: Destination-Host.
    DestinationHost,
    /// `dr=`: Destination-Realm.
    DestinationRealm,
    /// `un=`: User-Name (e.g. to shard subscribers over HSSs by IMPI).
    UserName,
    /// `si=`: Session-Id.
    SessionId,
    /// `app=`: the header's Application-Id, matched as decimal text (ours, not freeDiameter's).
    Application,
    /// `cmd=`: the Command-Code as decimal text, or the dictionary's abbreviation (`CCR`).
    Command,
}

impl Field {
    fn keyword(self) -> &'static str {
        match self {
            Field::OriginHost => "oh",
            Field::OriginRealm => "or",
            Field::DestinationHost => "dh",
            Field::DestinationRealm => "dr",
            Field::UserName => "un",
            Field::SessionId => "si",
            Field::Application => "app",
            Field::Command => "cmd",
        }
    }

    fn from_keyword(k: &str) -> Option<Field> {
        [
            Field::OriginHost,
            Field::OriginRealm,
            Field::DestinationHost,
            Field::DestinationRealm,
            Field::UserName,
            Field::SessionId,
            Field::Application,
            Field::Command,
        ]
        .into_iter()
        .find(|f| f.keyword().eq_ignore_ascii_case(k))
    }
}

/// `"exact"` (ASCII case-insensitive) or `["regex"]` (searched, case-sensitive).
#[derive(Clone, Debug)]
pub enum Pattern {
    /// `"text"`: the whole value, ignoring ASCII case (DiameterIdentity comparison, RFC
    /// 6733 §4.3.1).
    Exact(String),
    /// `["regex"]`: searched anywhere in the value, case-sensitive, as freeDiameter's
    /// `regexec` does (anchor with `^...$` to match the whole value).
    Regex(regex::Regex),
}

impl Pattern {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Exact(s) => s.eq_ignore_ascii_case(value),
            Pattern::Regex(r) => r.is_match(value),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) => write!(f, "\"{s}\""),
            Pattern::Regex(r) => write!(f, "[\"{}\"]", r.as_str()),
        }
    }
}

/// Which messages a rule applies to.
#[derive(Clone, Debug)]
pub enum Criteria {
    /// `*`: every request.
    Any,
    /// One field against one pattern; a request without that AVP does not match.
    Field(Field, Pattern),
}

/// Which candidate peers a rule scores.
#[derive(Clone, Debug)]
pub enum Target {
    /// The peer's Diameter identity.
    Peer(Pattern),
    /// The peer's realm.
    Realm(Pattern),
}

/// One rule, with where it was written.
#[derive(Clone, Debug)]
pub struct Rule {
    /// 1-based line in the rules text, for `route --explain` and error messages.
    pub line: usize,
    /// Which requests it applies to.
    pub criteria: Criteria,
    /// Which candidates it scores.
    pub target: Target,
    /// Added to each matching candidate's score (the named constants already summed).
    pub score: i32,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.criteria {
            Criteria::Any => write!(f, "*")?,
            Criteria::Field(field, p) => write!(f, "{}={p}", field.keyword())?,
        }
        match &self.target {
            Target::Peer(p) => write!(f, " : {p}")?,
            Target::Realm(p) => write!(f, " : rlm={p}")?,
        }
        write!(f, " += {} ;", self.score)
    }
}

/// A bad rule: 1-based line and column in the rules text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based line in the rules text (the config reader adds the offset of an inline
    /// `rules = """..."""`).
    pub line: usize,
    /// 1-based column on that line.
    pub column: usize,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for RuleError {}

/// The request fields the criteria look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestView<'a> {
    /// Origin-Host (`oh=`); `None` when absent or not UTF-8, which no pattern matches.
    pub origin_host: Option<&'a str>,
    /// Origin-Realm (`or=`).
    pub origin_realm: Option<&'a str>,
    /// Destination-Host (`dh=`); also what the router's §6.1 steps use.
    pub destination_host: Option<&'a str>,
    /// Destination-Realm (`dr=`); also what the realm table is looked up by.
    pub destination_realm: Option<&'a str>,
    /// User-Name (`un=`).
    pub user_name: Option<&'a str>,
    /// Session-Id (`si=`).
    pub session_id: Option<&'a str>,
    /// The header's Application-Id (`app=`); candidates must share it.
    pub app_id: u32,
    /// The header's Command-Code (`cmd=`).
    pub cmd_code: u32,
    /// The command's abbreviation from the dictionary (`CCR`), for `cmd="CCR"`.
    pub cmd_abbrev: Option<&'a str>,
}

/// A peer the request could go to.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Its Diameter identity, what `"STR"` targets match.
    pub host: &'a str,
    /// Its realm from CER/CEA (or the configuration), when known.
    pub realm: Option<&'a str>,
}

/// The parsed rules file.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

/// Equal when they hold the same rules (as written, normalised), at the same lines: what a
/// configuration comparison needs (regexes have no equality of their own).
impl PartialEq for RuleSet {
    fn eq(&self, other: &RuleSet) -> bool {
        self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.line == b.line && a.to_string() == b.to_string())
    }
}

impl RuleSet {
    /// No rules: the router uses the plain RFC 6733 §6.1 order instead of scores.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules in the order written (the indexes [`RuleSet::apply`] returns).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Adds every matching rule's score to `scores` (one per candidate, same order) and
    /// returns the indexes of the rules that matched the request.
    pub fn apply(
        &self,
        req: &RequestView<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [i32],
    ) -> Vec<usize> {
        let mut matched = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !criteria_match(&rule.criteria, req) {
                continue;
            }
            matched.push(i);
            for (c, s) in candidates.iter().zip(scores.iter_mut()) {
                let hit = match &rule.target {
                    Target::Peer(p) => p.matches(c.host),
                    Target::Realm(p) => c.realm.is_some_and(|r| p.matches(r)),
                };
                if hit {
                    *s = s.saturating_add(rule.score);
                }
            }
        }
        matched
    }
}

fn criteria_match(c: &Criteria, req: &RequestView<'_>) -> bool {
    let (field, p) = match c {
        Criteria::Any => return true,
        Criteria::Field(f, p) => (*f, p),
    };
    let text = |v: Option<&str>| v.is_some_and(|v| p.matches(v));
    match field {
        Field::OriginHost => text(req.origin_host),
        Field::OriginRealm => text(req.origin_realm),
        Field::DestinationHost => text(req.destination_host),
        Field::DestinationRealm => text(req.destination_realm),
        Field::UserName => text(req.user_name),
        Field::SessionId => text(req.session_id),
        Field::Application => p.matches(&req.app_id.to_string()),
        Field::Command => p.matches(&req.cmd_code.to_string()) || text(req.cmd_abbrev),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Int(i32),
    Str(String),
    Regex(String),
    Punct(char),
}

#[derive(Clone, Debug)]
struct Spanned {
    tok: Tok,
    line: usize,
    column: usize,
}

/// Splits the text into tokens (as freeDiameter's `rtd_conf.l` does); lexical errors are
/// collected and the bad character skipped.
fn lex(text: &str, errors: &mut Vec<RuleError>) -> Vec<Spanned> {
    let mut out = Vec::new();
    for (li, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        let mut i = 0;
        let err = |errors: &mut Vec<RuleError>, col: usize, m: String| {
            errors.push(RuleError {
                line: li + 1,
                column: col + 1,
                message: m,
            })
        };
        while i < b.len() {
            let c = b[i];
            let start = i;
            let tok = if c.is_ascii_whitespace() {
                i += 1;
                continue;
            } else if c == b'#' {
                break;
            } else if c == b'"' || (c == b'[' && b.get(i + 1) == Some(&b'"')) {
                let regex = c == b'[';
                let open = if regex { i + 2 } else { i + 1 };
                let Some(len) = line[open..].find('"') else {
                    err(errors, start, "unterminated string".into());
                    break;
                };
                let s = line[open..open + len].to_string();
                i = open + len + 1;
                if regex {
                    if b.get(i) != Some(&b']') {
                        err(
                            errors,
                            start,
                            "a regular expression [\"...\"] needs its ]".into(),
                        );
                    } else {
                        i += 1;
                    }
                    Tok::Regex(s)
                } else {
                    Tok::Str(s)
                }
            } else if c.is_ascii_digit()
                || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
            {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                match line[start..i].parse::<i32>() {
                    Ok(n) => Tok::Int(n),
                    Err(_) => {
                        err(
                            errors,
                            start,
                            format!("number {} out of range", &line[start..i]),
                        );
                        continue;
                    }
                }
            } else if c.is_ascii_alphabetic() || c == b'_' {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Tok::Word(line[start..i].to_string())
            } else if matches!(c, b'*' | b':' | b'=' | b'+' | b'-' | b';') {
                i += 1;
                Tok::Punct(c as char)
            } else {
                let ch = line[start..].chars().next().unwrap_or('?');
                err(errors, start, format!("unexpected character {ch:?}"));
                i += ch.len_utf8();
                continue;
            };
            out.push(Spanned {
                tok,
                line: li + 1,
                column: start + 1,
            });
        }
    }
    out
}

struct Parser<'a> {
    toks: &'a [Spanned],
    pos: usize,
    /// Where the text ends, for "expected X at end of file".
    end: (usize, usize),
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Spanned> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<&Spanned> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn error_here(&self, message: String) -> RuleError {
        let (line, column) = self.peek().map_or(self.end, |t| (t.line, t.column));
        RuleError {
            line,
            column,
            message,
        }
    }

    fn expect_punct(&mut self, c: char, what: &str) -> Result<(), RuleError> {
        match self.peek() {
            Some(t) if t.tok == Tok::Punct(c) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.error_here(format!("expected {what}"))),
        }
    }

    fn pattern(&mut self) -> Result<Pattern, RuleError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.error_here("expected \"string\" or [\"regex\"]".into()));
        };
        let p = match t.tok {
            Tok::Str(s) => Pattern::Exact(s),
            Tok::Regex(r) => match regex::Regex::new(&r) {
                Ok(re) => Pattern::Regex(re),
                Err(e) => {
                    self.pos += 1;
                    return Err(RuleError {
                        line: t.line,
                        column: t.column,
                        message: format!("bad regular expression {r:?}: {e}"),
                    });
                }
            },
            _ => return Err(self.error_here("expected \"string\" or [\"regex\"]".into())),
        };
        self.pos += 1;
        Ok(p)
    }

    fn criteria(&mut self) -> Result<Criteria, RuleError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Punct('*')) => {
                self.pos += 1;
                Ok(Criteria::Any)
            }
            Some(Tok::Word(w)) => {
                let Some(field) = Field::from_keyword(&w) else {
                    return Err(self.error_here(format!(
                        "unknown criteria {w:?} (expected *, oh, or, dh, dr, un, si, app or cmd)"
                    )));
                };
                self.pos += 1;
                self.expect_punct('=', "= after the criteria keyword")?;
                Ok(Criteria::Field(field, self.pattern()?))
            }
            _ => Err(self.error_here(
                "expected a criteria (*, oh=, or=, dh=, dr=, un=, si=, app=, cmd=)".into(),
            )),
        }
    }

    fn target(&mut self) -> Result<Target, RuleError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("rlm") => {
                self.pos += 1;
                self.expect_punct('=', "= after rlm")?;
                Ok(Target::Realm(self.pattern()?))
            }
            Some(Tok::Word(w)) => Err(self.error_here(format!(
                "unknown target {w:?} (expected a quoted peer name or rlm=)"
            ))),
            _ => Ok(Target::Peer(self.pattern()?)),
        }
    }

    fn int(&mut self) -> Result<i32, RuleError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Int(n)) => {
                self.pos += 1;
                Ok(n)
            }
            Some(Tok::Word(w)) => match score::named(&w) {
                Some(n) => {
                    self.pos += 1;
                    Ok(n)
                }
                None => Err(self.error_here(format!("unknown score name {w:?}"))),
            },
            _ => Err(self.error_here("expected a score (a number or a name like DEFAULT)".into())),
        }
    }

    /// `EXPR_INT: INTEGER | EXPR_INT '+' INTEGER | EXPR_INT '-' INTEGER`.
    fn score(&mut self) -> Result<i32, RuleError> {
        let mut v = self.int()?;
        loop {
            match self.peek().map(|t| t.tok.clone()) {
                Some(Tok::Punct('+')) => {
                    self.pos += 1;
                    v = v.saturating_add(self.int()?);
                }
                Some(Tok::Punct('-')) => {
                    self.pos += 1;
                    v = v.saturating_sub(self.int()?);
                }
                // `DEFAULT -3` lexes as DEFAULT, -3.
                Some(Tok::Int(n)) if n < 0 => {
                    self.pos += 1;
                    v = v.saturating_add(n);
                }
                _ => return Ok(v),
            }
        }
    }

    fn rule(&mut self) -> Result<Rule, RuleError> {
        let line = self.peek().map_or(self.end.0, |t| t.line);
        let criteria = self.criteria()?;
        self.expect_punct(':', ": between the criteria and the target")?;
        let target = self.target()?;
        self.expect_punct('+', "+= before the score")?;
        self.expect_punct('=', "+= before the score")?;
        let score = self.score()?;
        self.expect_punct(';', "; at the end of the rule")?;
        Ok(Rule {
            line,
            criteria,
            target,
            score,
        })
    }

    /// After an error: skip past the next `;`.
    fn recover(&mut self) {
        while let Some(t) = self.next() {
            if t.tok == Tok::Punct(';') {
                break;
            }
        }
    }
}

/// Parses a rules text; every bad rule is reported, with its line and column.
pub fn parse(text: &str) -> Result<RuleSet, Vec<RuleError>> {
    let mut errors = Vec::new();
    let toks = lex(text, &mut errors);
    // A parse error on a line the lexer already complained about says nothing new.
    let lexed: Vec<usize> = errors.iter().map(|e| e.line).collect();
    let end = (text.lines().count().max(1), 1);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        end,
    };
    let mut rules = Vec::new();
    while p.peek().is_some() {
        match p.rule() {
            Ok(r) => rules.push(r),
            Err(e) => {
                if !lexed.contains(&e.line) {
                    errors.push(e);
                }
                p.recover();
            }
        }
    }
    if errors.is_empty() {
        Ok(RuleSet { rules })
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
# freeDiameter's own examples
* : "proxy.testbed.aaa" += DEFAULT ;
dr="realmA" : rlm="realmB" += DEFAULT_REALM ;
un=[".+!.+@.+"] : "proxy.A" += NO_DELIVERY ;
si=["^client.test.local;"] : rlm="test.local" += DEFAULT + 2 ;
app="4" : ["^ocs[0-9]"] += 20;
cmd="CCR" : "ocs2" += -5 ;
"#;

    #[test]
    fn parses_the_freediameter_examples() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.rules().len(), 6);
        assert_eq!(r.rules()[0].line, 3);
        assert_eq!(r.rules()[0].score, 5);
        assert_eq!(r.rules()[2].score, -70);
        assert_eq!(r.rules()[3].score, 7);
        assert_eq!(r.rules()[5].score, -5);
        assert_eq!(
            r.rules()[1].to_string(),
            "dr=\"realmA\" : rlm=\"realmB\" += 10 ;"
        );
        assert!(parse("").unwrap().is_empty());
        assert!(parse("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn every_bad_rule_is_reported_with_its_line() {
        let text = "* : \"a\" += 5 ;\nxx=\"b\" : \"a\" += 1 ;\ndh=[\"(\"] : \"a\" += 1;\n* : \"a\" += LOTS ;\n* : \"a\" += 1\n";
        let errs = parse(text).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5], "{errs:?}");
        assert!(errs[0].message.contains("unknown criteria"), "{}", errs[0]);
        assert!(errs[1].message.contains("bad regular expression"));
        assert_eq!(errs[1].column, 4);
        assert!(errs[2].message.contains("LOTS"));
        assert!(errs[3].message.contains(';'));
        let errs = parse("* : \"unterminated += 1 ;\n").unwrap_err();
        assert!(errs[0].message.contains("unterminated"));
    }

    fn req() -> RequestView<'static> {
        RequestView {
            origin_host: Some("client.test.local"),
            origin_realm: Some("test.local"),
            destination_host: None,
            destination_realm: Some("realmA"),
            user_name: Some("alice!x@realm"),
            session_id: Some("client.test.local;1;2"),
            app_id: 4,
            cmd_code: 272,
            cmd_abbrev: Some("CCR"),
        }
    }

    #[test]
    fn scores_add_up_per_candidate() {
        let r = parse(SAMPLE).unwrap();
        let c = [
            Candidate {
                host: "proxy.testbed.aaa",
                realm: Some("realmB"),
            },
            Candidate {
                host: "proxy.A",
                realm: Some("test.local"),
            },
            Candidate {
                host: "ocs2",
                realm: None,
            },
        ];
        let mut s = [0; 3];
        let matched = r.apply(&req(), &c, &mut s);
        assert_eq!(matched, [0, 1, 2, 3, 4, 5]);
        assert_eq!(s, [5 + 10, -70 + 7, 20 - 5]);
        // Exact strings ignore case; regexes do not.
        let mut other = req();
        other.destination_realm = Some("REALMa");
        other.user_name = Some("alice@realm");
        other.session_id = Some("CLIENT.test.local;1");
        other.app_id = 16777238;
        other.cmd_code = 272;
        other.cmd_abbrev = None;
        let mut s = [0; 3];
        let matched = r.apply(&other, &c, &mut s);
        assert_eq!(matched, [0, 1]);
        // cmd="CCR" does not match by code alone.
        let num = parse("cmd=\"272\" : \"ocs2\" += 1;").unwrap();
        let mut s = [0; 3];
        assert_eq!(num.apply(&other, &c, &mut s), [0]);
    }
}
