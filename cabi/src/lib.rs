//! libdmbridge: the C ABI used by the OpenSIPS and Kamailio modules.
