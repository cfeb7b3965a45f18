//! Entry points for the fuzz targets and their corpus replay (`fuzz/worker_harness.rs`):
//! the library's own checks of a script's AVP JSON, reachable from outside the crate without
//! going through the C ABI and a worker attached to a bridge. Not part of the library's API.

pub use crate::avps_check::ScriptJsonError;

/// Runs the check `dm_send_request` (`reply == false`) or `dm_send_reply` (`reply == true`)
/// applies to a script's `avps_json` before anything goes on a ring: the shape (DESIGN §4),
/// and for a reply at most one result AVP (DESIGN §9; without `is_error`). `Err`'s text is the sentence the
/// script would see.
#[doc(hidden)]
pub fn script_json(json: &[u8], reply: bool) -> Result<(), ScriptJsonError> {
    let (_, counts) = crate::check_avps(json)?;
    if reply {
        crate::avps_check::check_reply(counts, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{script_json, ScriptJsonError};

    #[test]
    fn script_json_is_the_library_check() {
        assert!(script_json(b" ", true).is_ok());
        assert!(script_json(br#"[{"Session-Id":"x"}]"#, false).is_ok());
        assert!(script_json(b"{", false).is_err());
        let two = br#"[{"Result-Code":2001},{"Result-Code":2001}]"#;
        assert!(script_json(two, false).is_ok());
        assert!(matches!(
            script_json(two, true),
            Err(ScriptJsonError::ResultCodes(2))
        ));
    }
}
