//! Judging a candidate password before it is sent to the directory, so a user
//! hears why a password is refused before anything leaves the control plane (its
//! `ValidatePassword` RPC, the reset/change pre-checks, later the portal). Pure
//! logic, no I/O except reading a local breached-password directory:
//!
//! * [`complexity`]: Active Directory's "password must meet complexity
//!   requirements" rule, exactly as Windows and as Samba apply it (they differ),
//!   and the length AD compares with `minPwdLength`;
//! * [`banned`]: banned terms after Microsoft Entra Password Protection's
//!   documented algorithm (normalization, one-edit fuzzy matching, the user's own
//!   name, a score of at least 5), with a built-in list and a tenant's own terms;
//! * [`breached`]: an optional offline check against "Have I Been Pwned" range
//!   files an administrator downloaded; this crate never touches the network.
//!
//! Nothing here logs, and no result carries the password or a part of it.

#![forbid(unsafe_code)]

pub mod banned;
pub mod breached;
pub mod complexity;
