//! Renders definitions for `dmbridge dict`.
