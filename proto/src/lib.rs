//! Sans-IO Diameter core: everything about Diameter messages that needs no socket and no clock.
pub mod avp_type;
pub use avp_type::AvpType;
pub mod dict;
