//! Sans-IO Diameter core: everything about Diameter messages that needs no socket and no clock.
