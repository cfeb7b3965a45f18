//! Loops `Message::decode` + `Validator::validate` over the Ro CCR sample N times, for
//! counting instructions with callgrind (repeatable on a loaded machine, unlike wall time):
//!
//! ```text
//! cargo build --release -p dmbridge-proto --example validate_loop
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/validate_loop 100000
//! ```
//!
//! Instructions per message = (total for N) - (total for 0), divided by N.

use std::hint::black_box;

use dmproto::dict::Dictionary;
use dmproto::{samples, Message, Validator};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let validator = Validator::new(Dictionary::builtin());
    let bytes = samples::ro_ccr();
    let mut ok = 0u64;
    for _ in 0..n {
        let Ok(m) = Message::decode(black_box(bytes.clone())) else {
            continue;
        };
        if validator.validate(black_box(&m)).is_ok() {
            ok += 1;
        }
    }
    println!("{ok}/{n} valid");
}
