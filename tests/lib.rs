//! End-to-end tests of writeback live in `it/`: each assembles the control
//! plane, relays and agents in-process with `writeback-testkit` and applies
//! operations to real Samba AD domain controllers.
