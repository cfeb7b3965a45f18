//! Test harness: free ports, child-process guards, and launchers for real Diameter peers.
