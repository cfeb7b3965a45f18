//! What a run measures: per-connection tallies (merged at the end), the shared counters the
//! progress line reads, and the summary in text and JSON.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dmproto::result_code;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value as Json};

/// Highest latency the histogram resolves (longer ones are clamped): far above any timeout.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The outcome an answer reports: Result-Code, or Experimental-Result-Code with its vendor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Result(u32),
    Experimental {
        vendor: u32,
        code: u32,
    },
    /// An answer with neither (malformed for any command that needs one).
    Missing,
}

impl Outcome {
    /// 2xxx (in either AVP) is success; anything else counts as an error.
    pub fn is_success(self) -> bool {
        match self {
            Outcome::Result(c) | Outcome::Experimental { code: c, .. } => (2000..3000).contains(&c),
            Outcome::Missing => false,
        }
    }

    /// The key in summaries: `"2001"`, `"5001:10415"` (experimental, with its vendor, as AVP
    /// keys are written), `"none"`.
    pub fn key(self) -> String {
        match self {
            Outcome::Result(c) => c.to_string(),
            Outcome::Experimental { vendor, code } => format!("{code}:{vendor}"),
            Outcome::Missing => "none".into(),
        }
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            Outcome::Result(c) => result_code::name(c),
            Outcome::Experimental { vendor, code } => result_code::experimental_name(vendor, code),
            Outcome::Missing => None,
        }
    }
}

/// Counters shared by all connections, read once a second by the progress line. Relaxed
/// atomics: uncontended on the default single thread, and a progress line needs no ordering.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub answered: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// One connection's tallies (merged into the run's at the end).
#[derive(Debug)]
pub struct Tally {
    pub sent: u64,
    pub answered: u64,
    pub timeouts: u64,
    /// In flight when the run ended (the connection closed, or the drain gave up).
    pub unanswered: u64,
    /// Answers to no request in flight: after their timeout, or with an unknown hop-by-hop id.
    pub unmatched: u64,
    /// Watchdog requests from the peer that were answered.
    pub dwr_answered: u64,
    /// Answers by outcome, few distinct ones: a small vector beats a map.
    pub outcomes: Vec<(Outcome, u64)>,
    /// Latency in microseconds.
    pub latency: Histogram<u64>,
    /// Latency from the moment each request was written out, in microseconds: the same as
    /// `latency` in concurrency mode; in rate mode without the wait for the timer's tick.
    pub from_send: Histogram<u64>,
    pub last_answer: Option<Instant>,
    /// Session mode (`--then`): sessions opened (main-template requests sent).
    pub sessions: u64,
    /// Session mode: sessions whose every step was answered with success.
    pub sessions_completed: u64,
    /// Session mode: follow-up requests sent.
    pub followups_sent: u64,
    /// Session mode: follow-ups answered with an error (e.g. their bound host is gone).
    pub followup_errors: u64,
    /// Session mode: follow-up errors by outcome.
    pub followup_outcomes: Vec<(Outcome, u64)>,
    /// Session mode: successful follow-up answers from a host other than the one the session
    /// is bound to.
    pub wrong_host: u64,
    /// Session mode: answers by their Origin-Host (few distinct hosts: a small vector).
    pub by_origin: Vec<(Bytes, u64)>,
    /// Error answers by outcome and Origin-Host: who answered each error (behind an agent
    /// the Origin-Host tells a server's own error from the agent's or another server's).
    pub error_origins: ErrorOrigins,
    /// Session mode: the same for the follow-ups' errors.
    pub followup_error_origins: ErrorOrigins,
}

/// Counts by (outcome, Origin-Host); few distinct pairs: a small vector.
pub type ErrorOrigins = Vec<((Outcome, Bytes), u64)>;

/// Adds one to (`outcome`, `host`), allocating only for a pair not seen before.
fn count_error_origin(counts: &mut ErrorOrigins, outcome: Outcome, host: &[u8]) {
    match counts
        .iter_mut()
        .find(|((o, h), _)| *o == outcome && h.as_ref() == host)
    {
        Some((_, n)) => *n += 1,
        None => counts.push(((outcome, Bytes::copy_from_slice(host)), 1)),
    }
}

/// `{"3002": {"node1.test.local": 5}, ...}` (an answer without Origin-Host counts under "").
fn error_origins_json(counts: &ErrorOrigins) -> Json {
    let mut sorted: Vec<_> = counts.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Map::new();
    for ((o, h), n) in sorted {
        let by_host = out
            .entry(o.key())
            .or_insert_with(|| Json::Object(Map::new()));
        if let Json::Object(m) = by_host {
            m.insert(String::from_utf8_lossy(h).into_owned(), json!(n));
        }
    }
    Json::Object(out)
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            sent: 0,
            answered: 0,
            timeouts: 0,
            unanswered: 0,
            unmatched: 0,
            dwr_answered: 0,
            outcomes: Vec::new(),
            latency: new_histogram(),
            from_send: new_histogram(),
            last_answer: None,
            sessions: 0,
            sessions_completed: 0,
            followups_sent: 0,
            followup_errors: 0,
            wrong_host: 0,
            followup_outcomes: Vec::new(),
            by_origin: Vec::new(),
            error_origins: Vec::new(),
            followup_error_origins: Vec::new(),
        }
    }
}

/// The latency at quantile `q`, 0 when nothing was recorded.
fn quantile(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

/// 3 significant digits from 1 us to an hour: ~100 kB per connection.
fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds (low >= 1, high >= 2 * low, sigfig <= 5): this cannot fail, and
    // it depends on no input.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Adds `n` to `key`'s count in a small vector of counts (few distinct keys: beats a map).
fn add_count<K: PartialEq + Clone>(counts: &mut Vec<(K, u64)>, key: &K, n: u64) {
    match counts.iter_mut().find(|(k, _)| k == key) {
        Some((_, m)) => *m += n,
        None => counts.push((key.clone(), n)),
    }
}

impl Tally {
    pub fn record_answer(&mut self, outcome: Outcome, latency: Duration, now: Instant) {
        self.answered += 1;
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.latency.saturating_record(us);
        add_count(&mut self.outcomes, &outcome, 1);
        self.last_answer = Some(now);
    }

    pub fn count_followup_error(&mut self, outcome: Outcome) {
        match self
            .followup_outcomes
            .iter_mut()
            .find(|(o, _)| *o == outcome)
        {
            Some((_, n)) => *n += 1,
            None => self.followup_outcomes.push((outcome, 1)),
        }
    }

    pub fn record_from_send(&mut self, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.from_send.saturating_record(us);
    }

    pub fn count_origin(&mut self, host: &Bytes) {
        add_count(&mut self.by_origin, host, 1);
    }

    /// An error answer (`followup`: to a session's follow-up) came from `host`.
    pub fn count_error_origin(&mut self, outcome: Outcome, host: &[u8], followup: bool) {
        count_error_origin(&mut self.error_origins, outcome, host);
        if followup {
            count_error_origin(&mut self.followup_error_origins, outcome, host);
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.sessions += other.sessions;
        self.sessions_completed += other.sessions_completed;
        self.followups_sent += other.followups_sent;
        self.followup_errors += other.followup_errors;
        self.wrong_host += other.wrong_host;
        for (o, n) in &other.followup_outcomes {
            add_count(&mut self.followup_outcomes, o, *n);
        }
        for (h, n) in &other.by_origin {
            add_count(&mut self.by_origin, h, *n);
        }
        for (k, n) in &other.error_origins {
            add_count(&mut self.error_origins, k, *n);
        }
        for (k, n) in &other.followup_error_origins {
            add_count(&mut self.followup_error_origins, k, *n);
        }
        self.sent += other.sent;
        self.answered += other.answered;
        self.timeouts += other.timeouts;
        self.unanswered += other.unanswered;
        self.unmatched += other.unmatched;
        self.dwr_answered += other.dwr_answered;
        for (o, n) in &other.outcomes {
            add_count(&mut self.outcomes, o, *n);
        }
        // Same bounds on both sides: cannot fail; a failure would only lose latency samples.
        let _ = self.latency.add(&other.latency);
        let _ = self.from_send.add(&other.from_send);
        self.last_answer = self.last_answer.max(other.last_answer);
    }

    pub fn errors(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(o, _)| !o.is_success())
            .map(|(_, n)| n)
            .sum()
    }
}

/// The final report of a run.
#[derive(Debug)]
pub struct Summary {
    pub tally: Tally,
    pub connections: usize,
    /// From the start of the load to the last answer (the throughput's denominator).
    pub active: Duration,
    /// From the start of the load to the end of the run (drain and DPR included).
    pub elapsed: Duration,
    /// Connections that failed or were closed before the run ended, with why.
    pub failures: Vec<String>,
}

impl Summary {
    pub fn answers_per_sec(&self) -> f64 {
        let s = self.active.as_secs_f64();
        if s > 0.0 {
            self.tally.answered as f64 / s
        } else {
            0.0
        }
    }

    fn percentile_us(&self, q: f64) -> u64 {
        quantile(&self.tally.latency, q)
    }

    /// One JSON object (the `--json` output). Latencies in microseconds.
    pub fn to_json(&self) -> Json {
        let t = &self.tally;
        let mut outcomes = t.outcomes.clone();
        outcomes.sort();
        let mut codes = Map::new();
        let mut errors = Map::new();
        for (o, n) in outcomes {
            codes.insert(o.key(), json!(n));
            if !o.is_success() {
                errors.insert(o.key(), json!(n));
            }
        }
        let lat = &t.latency;
        json!({
            "connections": self.connections,
            "sent": t.sent,
            "answered": t.answered,
            "answers_per_sec": (self.answers_per_sec() * 10.0).round() / 10.0,
            "active_s": self.active.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "success": t.answered - t.errors(),
            "errors": t.errors(),
            "result_codes": codes,
            "errors_by_code": errors,
            "errors_by_code_origin_host": error_origins_json(&t.error_origins),
            "timeouts": t.timeouts,
            "unanswered": t.unanswered,
            "unmatched_answers": t.unmatched,
            "dwr_answered": t.dwr_answered,
            "latency_us": {
                "min": if lat.is_empty() { 0 } else { lat.min() },
                "mean": (lat.mean() * 10.0).round() / 10.0,
                "p50": self.percentile_us(0.50),
                "p90": self.percentile_us(0.90),
                "p99": self.percentile_us(0.99),
                "p999": self.percentile_us(0.999),
                "max": lat.max(),
            },
            "latency_from_send_us": {
                "p50": quantile(&t.from_send, 0.50),
                "p90": quantile(&t.from_send, 0.90),
                "p99": quantile(&t.from_send, 0.99),
                "p999": quantile(&t.from_send, 0.999),
                "max": t.from_send.max(),
            },
            "failures": self.failures,
            "sessions": {
                "opened": t.sessions,
                "completed": t.sessions_completed,
                "followups_sent": t.followups_sent,
                "followup_errors": t.followup_errors,
                "wrong_host": t.wrong_host,
                "followup_errors_by_code": t
                    .followup_outcomes
                    .iter()
                    .map(|(o, n)| (o.key(), json!(n)))
                    .collect::<Map<String, Json>>(),
                "followup_errors_by_code_origin_host": error_origins_json(&t.followup_error_origins),
                "answers_by_origin_host": t
                    .by_origin
                    .iter()
                    .map(|(h, n)| (String::from_utf8_lossy(h).into_owned(), json!(n)))
                    .collect::<Map<String, Json>>(),
            },
        })
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let t = &self.tally;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sent {}  answered {}  in {:.3} s  =>  {:.0} answers/s  ({} connection{})",
            t.sent,
            t.answered,
            self.active.as_secs_f64(),
            self.answers_per_sec(),
            self.connections,
            if self.connections == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            s,
            "success {}  errors {}  timeouts {}  unanswered {}  unmatched answers {}  DWR answered {}",
            t.answered - t.errors(),
            t.errors(),
            t.timeouts,
            t.unanswered,
            t.unmatched,
            t.dwr_answered
        );
        let mut outcomes = t.outcomes.clone();
        outcomes.sort();
        let mut origins: Vec<_> = t.error_origins.iter().collect();
        origins.sort_by(|a, b| a.0.cmp(&b.0));
        for (o, n) in outcomes {
            let kind = match o {
                Outcome::Experimental { .. } => "Experimental-Result-Code",
                _ => "Result-Code",
            };
            let _ = writeln!(
                s,
                "  {kind} {:<12} {:<40} {n}",
                o.key(),
                o.name().unwrap_or("")
            );
            for ((_, h), m) in origins.iter().filter(|((e, _), _)| *e == o) {
                let _ = writeln!(s, "    from {:<40} {m}", String::from_utf8_lossy(h));
            }
        }
        let _ = writeln!(
            s,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            ms(self.percentile_us(0.5)),
            ms(self.percentile_us(0.9)),
            ms(self.percentile_us(0.99)),
            ms(self.percentile_us(0.999)),
            ms(t.latency.max()),
            t.latency.mean() / 1000.0
        );
        let _ = writeln!(
            s,
            "  from send: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(quantile(&t.from_send, 0.5)),
            ms(quantile(&t.from_send, 0.9)),
            ms(quantile(&t.from_send, 0.99)),
            ms(quantile(&t.from_send, 0.999)),
            ms(t.from_send.max()),
        );
        if t.sessions > 0 {
            let _ = writeln!(
                s,
                "sessions {}  completed {}  follow-ups {}  follow-up errors {}  wrong host {}",
                t.sessions, t.sessions_completed, t.followups_sent, t.followup_errors, t.wrong_host
            );
            for (h, n) in &t.by_origin {
                let _ = writeln!(s, "  answers from {:<40} {n}", String::from_utf8_lossy(h));
            }
        }
        for f in &self.failures {
            let _ = writeln!(s, "connection failure: {f}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keys_and_success() {
        assert!(Outcome::Result(2001).is_success());
        assert!(!Outcome::Result(5012).is_success());
        assert!(!Outcome::Experimental {
            vendor: 10415,
            code: 5001
        }
        .is_success());
        assert!(Outcome::Experimental {
            vendor: 10415,
            code: 2001
        }
        .is_success());
        assert_eq!(
            Outcome::Experimental {
                vendor: 10415,
                code: 5001
            }
            .key(),
            "5001:10415"
        );
        assert_eq!(Outcome::Missing.key(), "none");
        assert_eq!(
            Outcome::Result(5012).name(),
            Some("DIAMETER_UNABLE_TO_COMPLY")
        );
    }

    #[test]
    fn merge_adds_everything() {
        let t0 = Instant::now();
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.sent = 3;
        b.sent = 2;
        a.record_answer(Outcome::Result(2001), Duration::from_micros(100), t0);
        a.record_answer(Outcome::Result(5012), Duration::from_micros(300), t0);
        b.record_answer(Outcome::Result(2001), Duration::from_micros(200), t0);
        b.timeouts = 1;
        a.count_error_origin(Outcome::Result(5012), b"b.test", false);
        a.count_error_origin(Outcome::Result(3002), b"c.test", true);
        b.count_error_origin(Outcome::Result(3002), b"c.test", false);
        b.count_error_origin(Outcome::Result(3002), b"a.test", false);
        a.merge(&b);
        assert_eq!((a.sent, a.answered, a.timeouts, a.errors()), (5, 3, 1, 1));
        assert_eq!(a.latency.len(), 3);
        let s = Summary {
            tally: a,
            connections: 2,
            active: Duration::from_secs(1),
            elapsed: Duration::from_secs(2),
            failures: vec![],
        };
        let j = s.to_json();
        assert_eq!(j["result_codes"]["2001"], 2);
        assert_eq!(j["errors_by_code"]["5012"], 1);
        assert!(j["errors_by_code"].get("2001").is_none());
        assert_eq!(j["errors_by_code_origin_host"]["5012"]["b.test"], 1);
        assert_eq!(j["errors_by_code_origin_host"]["3002"]["c.test"], 2);
        assert_eq!(j["errors_by_code_origin_host"]["3002"]["a.test"], 1);
        assert_eq!(
            j["sessions"]["followup_errors_by_code_origin_host"]["3002"]["c.test"],
            1
        );
        assert!(j["errors_by_code_origin_host"].get("2001").is_none());
        assert_eq!(j["answers_per_sec"], 3.0);
        let p50 = j["latency_us"]["p50"].as_u64().unwrap();
        assert!((199..=201).contains(&p50), "{p50}");
        assert!(s.to_text().contains("DIAMETER_UNABLE_TO_COMPLY"));
    }
}
