//! Integration tests of the portal served on loopback as `writeback-portal
//! serve` serves it, with a provider that is never called (the tests stop
//! at the redirect to it) and a control plane that is never dialled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod flood;
mod support;
