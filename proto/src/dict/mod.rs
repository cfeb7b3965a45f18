//! Dictionaries: built-in definitions for the base protocol and the IMS applications, plus
//! user files in the OpenSIPS `aaa_diameter` format, with constant-time look-ups.

pub mod model;
pub use model::*;
