//! Validation of received messages against the dictionary, with the RFC 6733 §7.1
//! Result-Code and Failed-AVP an answer must carry. Two implementations, one result:
//!
//! - [`reference`](mod@reference): works straight from the dictionary's ABNFs, one rule at a time, as the
//!   RFC reads. The specification the other is tested against; also the exact error report.
//! - [`compiled`]: the ABNFs compiled once into per-container plans ([`Validator`]) for the hot
//!   path; same result for every message (property tests check it), about half the cost.
//!
//! The reference functions are re-exported here, so `dmproto::validate::validate_with` and
//! `dmproto::validate(...)` keep their paths.
pub mod compiled;
pub mod reference;

pub use compiled::Validator;
pub use reference::*;
