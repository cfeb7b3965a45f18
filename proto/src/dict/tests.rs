use super::*;

#[test]
fn builtin_parses() {
    if let Err(e) = builtin::try_build() {
        panic!("{e}");
    }
}
