//! Self-relative security descriptors (MS-DTYP 2.4.6), as `nTSecurityDescriptor`
//! carries them: parse, edit the DACL, write back.
//!
//! Pure functions over bytes: every offset and length is bounds-checked, nothing
//! panics on any input (the unit tests feed truncations at every length and random
//! bytes), and what we do not understand is kept verbatim — an ACE of an unknown
//! type, bytes after an ACE's SID — so a descriptor we read, edit and write back
//! loses nothing.
//!
//! Why our own: the crates that parse descriptors on Linux (`sddl`,
//! `windows-sddl`) are read-only or build only fixed descriptors; none writes back an
//! arbitrary DACL with an ACE added while keeping every other ACE byte for byte, and
//! the rest (`windows-acl`, …) call the Windows API. What we need is small.

use uuid::Uuid;

use super::wire::Sid;

/// `SE_DACL_PRESENT`.
pub(crate) const SE_DACL_PRESENT: u16 = 0x0004;
/// `SE_SACL_PRESENT`.
pub(crate) const SE_SACL_PRESENT: u16 = 0x0010;
/// `SE_DACL_PROTECTED`: the DACL does not inherit ACEs from the parent
/// ("inheritance disabled").
pub(crate) const SE_DACL_PROTECTED: u16 = 0x1000;
/// `SE_SELF_RELATIVE`.
pub(crate) const SE_SELF_RELATIVE: u16 = 0x8000;

/// `ACCESS_ALLOWED_ACE_TYPE`.
pub(crate) const ACCESS_ALLOWED: u8 = 0x00;
/// `ACCESS_DENIED_ACE_TYPE`.
pub(crate) const ACCESS_DENIED: u8 = 0x01;
/// `SYSTEM_AUDIT_ACE_TYPE`.
pub(crate) const SYSTEM_AUDIT: u8 = 0x02;
/// `ACCESS_ALLOWED_OBJECT_ACE_TYPE`.
pub(crate) const ACCESS_ALLOWED_OBJECT: u8 = 0x05;
/// `ACCESS_DENIED_OBJECT_ACE_TYPE`.
pub(crate) const ACCESS_DENIED_OBJECT: u8 = 0x06;
/// `SYSTEM_AUDIT_OBJECT_ACE_TYPE`.
pub(crate) const SYSTEM_AUDIT_OBJECT: u8 = 0x07;

/// ACE flags (`OBJECT_INHERIT_ACE`, 0x01, plays no part in AD inheritance).
pub(crate) const CONTAINER_INHERIT_ACE: u8 = 0x02;
pub(crate) const NO_PROPAGATE_INHERIT_ACE: u8 = 0x04;
pub(crate) const INHERIT_ONLY_ACE: u8 = 0x08;
pub(crate) const INHERITED_ACE: u8 = 0x10;

/// Object-ACE flags.
const ACE_OBJECT_TYPE_PRESENT: u32 = 0x1;
const ACE_INHERITED_OBJECT_TYPE_PRESENT: u32 = 0x2;

/// `ACL_REVISION_DS`, needed once the ACL holds object ACEs (`ACL_REVISION` is 2).
pub(crate) const ACL_REVISION_DS: u8 = 4;

/// Why bytes are not a security descriptor we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SdError {
    /// Something points outside the buffer or a length does not add up.
    #[error("malformed security descriptor: {0}")]
    Malformed(&'static str),
    /// The descriptor is not self-relative (absolute descriptors hold pointers).
    #[error("not a self-relative security descriptor")]
    NotSelfRelative,
    /// An ACL, an ACE or the whole descriptor would not fit its 16-bit length.
    #[error("security descriptor too large")]
    TooLarge,
}

/// A self-relative security descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecurityDescriptor {
    /// Always 1.
    pub(crate) revision: u8,
    /// Resource-manager control bits (`Sbz1`), kept as read.
    pub(crate) rm_control: u8,
    /// The control flags (`SE_…`).
    pub(crate) control: u16,
    pub(crate) owner: Option<Sid>,
    pub(crate) group: Option<Sid>,
    pub(crate) sacl: Option<Acl>,
    pub(crate) dacl: Option<Acl>,
}

/// An access control list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Acl {
    /// `ACL_REVISION` (2) or `ACL_REVISION_DS` (4).
    pub(crate) revision: u8,
    pub(crate) aces: Vec<Ace>,
}

/// An access control entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ace {
    /// `ACCESS_ALLOWED`, `ACCESS_ALLOWED_OBJECT`, …
    pub(crate) ace_type: u8,
    /// Inheritance and audit flags.
    pub(crate) flags: u8,
    pub(crate) body: AceBody,
}

/// What follows an ACE's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AceBody {
    /// Allow, deny, audit: an access mask and a trustee.
    Basic {
        mask: u32,
        sid: Sid,
        /// Bytes between the SID and the end of the ACE (padding), kept.
        trailing: Vec<u8>,
    },
    /// The object variants: the mask applies to one property, property set, extended
    /// right or child class (`object_type`), and is inherited only by objects of one
    /// class (`inherited_object_type`).
    Object {
        mask: u32,
        object_type: Option<Uuid>,
        inherited_object_type: Option<Uuid>,
        sid: Sid,
        trailing: Vec<u8>,
    },
    /// A type we do not interpret (callback, conditional, mandatory label …), or an
    /// object ACE with flag bits we do not know: the bytes after the header, verbatim.
    Opaque(Vec<u8>),
}

impl Ace {
    /// An `ACCESS_ALLOWED_OBJECT` ACE.
    pub(crate) fn allow_object(
        flags: u8,
        mask: u32,
        object_type: Option<Uuid>,
        inherited_object_type: Option<Uuid>,
        sid: Sid,
    ) -> Ace {
        Ace {
            ace_type: ACCESS_ALLOWED_OBJECT,
            flags,
            body: AceBody::Object {
                mask,
                object_type,
                inherited_object_type,
                sid,
                trailing: Vec::new(),
            },
        }
    }

    /// The trustee, for the types we interpret.
    pub(crate) fn sid(&self) -> Option<&Sid> {
        match &self.body {
            AceBody::Basic { sid, .. } | AceBody::Object { sid, .. } => Some(sid),
            AceBody::Opaque(_) => None,
        }
    }

    /// The access mask, for the types we interpret.
    pub(crate) fn mask(&self) -> Option<u32> {
        match &self.body {
            AceBody::Basic { mask, .. } | AceBody::Object { mask, .. } => Some(*mask),
            AceBody::Opaque(_) => None,
        }
    }

    /// `(object_type, inherited_object_type)`; both `None` for a basic ACE.
    pub(crate) fn object_types(&self) -> (Option<Uuid>, Option<Uuid>) {
        match &self.body {
            AceBody::Object {
                object_type,
                inherited_object_type,
                ..
            } => (*object_type, *inherited_object_type),
            _ => (None, None),
        }
    }

    /// Whether this ACE came from a parent (`INHERITED_ACE`).
    pub(crate) fn is_inherited(&self) -> bool {
        self.flags & INHERITED_ACE != 0
    }

    fn parse(b: &[u8]) -> Result<(Ace, usize), SdError> {
        let header = b
            .get(..4)
            .ok_or(SdError::Malformed("truncated ACE header"))?;
        let (ace_type, flags) = (header[0], header[1]);
        let size = usize::from(u16::from_le_bytes([header[2], header[3]]));
        if size < 4 {
            return Err(SdError::Malformed("ACE shorter than its header"));
        }
        let body = b
            .get(4..size)
            .ok_or(SdError::Malformed("ACE runs past the end of its ACL"))?;
        let body = match ace_type {
            ACCESS_ALLOWED | ACCESS_DENIED | SYSTEM_AUDIT => parse_basic(body),
            ACCESS_ALLOWED_OBJECT | ACCESS_DENIED_OBJECT | SYSTEM_AUDIT_OBJECT => {
                parse_object(body)
            }
            _ => None,
        }
        .unwrap_or_else(|| AceBody::Opaque(body.to_vec()));
        Ok((
            Ace {
                ace_type,
                flags,
                body,
            },
            size,
        ))
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), SdError> {
        let mut body = Vec::new();
        match &self.body {
            AceBody::Basic {
                mask,
                sid,
                trailing,
            } => {
                body.extend_from_slice(&mask.to_le_bytes());
                body.extend_from_slice(&sid.to_bytes());
                body.extend_from_slice(trailing);
            }
            AceBody::Object {
                mask,
                object_type,
                inherited_object_type,
                sid,
                trailing,
            } => {
                let mut present = 0u32;
                if object_type.is_some() {
                    present |= ACE_OBJECT_TYPE_PRESENT;
                }
                if inherited_object_type.is_some() {
                    present |= ACE_INHERITED_OBJECT_TYPE_PRESENT;
                }
                body.extend_from_slice(&mask.to_le_bytes());
                body.extend_from_slice(&present.to_le_bytes());
                for guid in [object_type, inherited_object_type].into_iter().flatten() {
                    body.extend_from_slice(&guid.to_bytes_le());
                }
                body.extend_from_slice(&sid.to_bytes());
                body.extend_from_slice(trailing);
            }
            AceBody::Opaque(bytes) => body.extend_from_slice(bytes),
        }
        let size = u16::try_from(body.len() + 4).map_err(|_| SdError::TooLarge)?;
        out.push(self.ace_type);
        out.push(self.flags);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn parse_basic(body: &[u8]) -> Option<AceBody> {
    let mask = u32_at(body, 0)?;
    let rest = body.get(4..)?;
    let (sid, len) = Sid::parse_prefix(rest)?;
    Some(AceBody::Basic {
        mask,
        sid,
        trailing: rest.get(len..)?.to_vec(),
    })
}

fn parse_object(body: &[u8]) -> Option<AceBody> {
    let mask = u32_at(body, 0)?;
    let present = u32_at(body, 4)?;
    if present & !(ACE_OBJECT_TYPE_PRESENT | ACE_INHERITED_OBJECT_TYPE_PRESENT) != 0 {
        return None;
    }
    let mut at = 8;
    let mut guid = |flag: u32| -> Option<Option<Uuid>> {
        if present & flag == 0 {
            return Some(None);
        }
        let bytes: [u8; 16] = body.get(at..at + 16)?.try_into().ok()?;
        at += 16;
        Some(Some(Uuid::from_bytes_le(bytes)))
    };
    let object_type = guid(ACE_OBJECT_TYPE_PRESENT)?;
    let inherited_object_type = guid(ACE_INHERITED_OBJECT_TYPE_PRESENT)?;
    let rest = body.get(at..)?;
    let (sid, len) = Sid::parse_prefix(rest)?;
    Some(AceBody::Object {
        mask,
        object_type,
        inherited_object_type,
        sid,
        trailing: rest.get(len..)?.to_vec(),
    })
}

impl Acl {
    fn parse(b: &[u8]) -> Result<Acl, SdError> {
        let header = b
            .get(..8)
            .ok_or(SdError::Malformed("truncated ACL header"))?;
        let revision = header[0];
        let size = usize::from(u16::from_le_bytes([header[2], header[3]]));
        let count = u16::from_le_bytes([header[4], header[5]]);
        if size < 8 {
            return Err(SdError::Malformed("ACL shorter than its header"));
        }
        let body = b.get(8..size).ok_or(SdError::Malformed(
            "ACL runs past the end of the descriptor",
        ))?;
        let mut aces = Vec::with_capacity(usize::from(count).min(body.len() / 4));
        let mut at = 0usize;
        for _ in 0..count {
            let rest = body
                .get(at..)
                .ok_or(SdError::Malformed("ACE count exceeds the ACL"))?;
            let (ace, len) = Ace::parse(rest)?;
            aces.push(ace);
            at += len;
        }
        Ok(Acl { revision, aces })
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<(), SdError> {
        let mut body = Vec::new();
        for ace in &self.aces {
            ace.write(&mut body)?;
        }
        let size = u16::try_from(body.len() + 8).map_err(|_| SdError::TooLarge)?;
        let count = u16::try_from(self.aces.len()).map_err(|_| SdError::TooLarge)?;
        out.extend_from_slice(&[self.revision, 0]);
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Insert `ace` after the explicit ACEs and before the inherited ones (the
    /// canonical place for an explicit allow: explicit deny, explicit allow, then
    /// inherited), raising the revision to `ACL_REVISION_DS` for an object ACE.
    pub(crate) fn add_explicit(&mut self, ace: Ace) {
        if matches!(ace.body, AceBody::Object { .. }) {
            self.revision = self.revision.max(ACL_REVISION_DS);
        }
        let at = self
            .aces
            .iter()
            .position(Ace::is_inherited)
            .unwrap_or(self.aces.len());
        self.aces.insert(at, ace);
    }
}

impl SecurityDescriptor {
    /// Parse a self-relative descriptor. An offset of 0 means "absent".
    pub(crate) fn parse(b: &[u8]) -> Result<SecurityDescriptor, SdError> {
        let header = b
            .get(..20)
            .ok_or(SdError::Malformed("shorter than a descriptor header"))?;
        let control = u16::from_le_bytes([header[2], header[3]]);
        if control & SE_SELF_RELATIVE == 0 {
            return Err(SdError::NotSelfRelative);
        }
        let offset = |i: usize| -> Result<Option<&[u8]>, SdError> {
            let at = u32_at(header, i).ok_or(SdError::Malformed("header"))?;
            if at == 0 {
                return Ok(None);
            }
            let at = usize::try_from(at).map_err(|_| SdError::Malformed("offset"))?;
            if at < 20 {
                return Err(SdError::Malformed("offset points into the header"));
            }
            b.get(at..)
                .map(Some)
                .ok_or(SdError::Malformed("offset past the end"))
        };
        let sid = |part: Option<&[u8]>| -> Result<Option<Sid>, SdError> {
            part.map(|p| {
                Sid::parse_prefix(p)
                    .map(|(sid, _)| sid)
                    .ok_or(SdError::Malformed("truncated SID"))
            })
            .transpose()
        };
        let owner = sid(offset(4)?)?;
        let group = sid(offset(8)?)?;
        let sacl = match offset(12)? {
            Some(p) if control & SE_SACL_PRESENT != 0 => Some(Acl::parse(p)?),
            _ => None,
        };
        let dacl = match offset(16)? {
            Some(p) if control & SE_DACL_PRESENT != 0 => Some(Acl::parse(p)?),
            _ => None,
        };
        Ok(SecurityDescriptor {
            revision: header[0],
            rm_control: header[1],
            control,
            owner,
            group,
            sacl,
            dacl,
        })
    }

    /// The self-relative bytes: header, then SACL, DACL, owner and group (the order
    /// Windows uses), each part present only if set.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, SdError> {
        let mut out = vec![0u8; 20];
        out[0] = self.revision;
        out[1] = self.rm_control;
        out[2..4].copy_from_slice(&(self.control | SE_SELF_RELATIVE).to_le_bytes());
        let put = |out: &mut Vec<u8>, slot: usize, start: usize| -> Result<(), SdError> {
            let at = u32::try_from(start).map_err(|_| SdError::TooLarge)?;
            out[slot..slot + 4].copy_from_slice(&at.to_le_bytes());
            Ok(())
        };
        if let Some(sacl) = &self.sacl {
            let start = out.len();
            sacl.write(&mut out)?;
            put(&mut out, 12, start)?;
        }
        if let Some(dacl) = &self.dacl {
            let start = out.len();
            dacl.write(&mut out)?;
            put(&mut out, 16, start)?;
        }
        if let Some(owner) = &self.owner {
            let start = out.len();
            out.extend_from_slice(&owner.to_bytes());
            put(&mut out, 4, start)?;
        }
        if let Some(group) = &self.group {
            let start = out.len();
            out.extend_from_slice(&group.to_bytes());
            put(&mut out, 8, start)?;
        }
        Ok(out)
    }
}

/// Whether a self-relative descriptor has `SE_DACL_PROTECTED` set, from its control
/// field alone; `None` if the bytes are too short to be one.
pub(crate) fn dacl_protected(sd: &[u8]) -> Option<bool> {
    let control = u16::from_le_bytes([*sd.get(2)?, *sd.get(3)?]);
    Some(control & SE_DACL_PROTECTED != 0)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    const ACL_REVISION: u8 = 2;

    fn sid(s: &str) -> Sid {
        Sid::parse_str(s).unwrap()
    }

    fn guid(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    /// A DACL-only descriptor with one of each kind of ACE, built by hand from the
    /// specification (not by `to_bytes`).
    fn sample() -> Vec<u8> {
        let mut aces = Vec::new();
        // ACCESS_ALLOWED, CI, mask 0x000f01ff (full control), S-1-5-18 (SYSTEM).
        aces.extend_from_slice(&[0x00, 0x02, 20, 0]);
        aces.extend_from_slice(&0x000f_01ffu32.to_le_bytes());
        aces.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        // ACCESS_ALLOWED_OBJECT, CI|IO, CONTROL_ACCESS, Reset Password on users,
        // S-1-5-21-1-2-3-1105.
        aces.extend_from_slice(&[0x05, 0x0a, 72, 0]);
        aces.extend_from_slice(&0x100u32.to_le_bytes());
        aces.extend_from_slice(&3u32.to_le_bytes());
        aces.extend_from_slice(&guid("00299570-246d-11d0-a768-00aa006e0529").to_bytes_le());
        aces.extend_from_slice(&guid("bf967aba-0de6-11d0-a285-00aa003049e2").to_bytes_le());
        aces.extend_from_slice(&[1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 1, 0, 0, 0]);
        aces.extend_from_slice(&[2, 0, 0, 0, 3, 0, 0, 0, 0x51, 4, 0, 0]);
        // ACCESS_DENIED_OBJECT, inherited, only an inherited object type, S-1-1-0.
        aces.extend_from_slice(&[0x06, 0x10, 40, 0]);
        aces.extend_from_slice(&0x20u32.to_le_bytes());
        aces.extend_from_slice(&2u32.to_le_bytes());
        aces.extend_from_slice(&guid("bf967aba-0de6-11d0-a285-00aa003049e2").to_bytes_le());
        aces.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        // A callback ACE (0x09) we do not interpret: kept verbatim.
        aces.extend_from_slice(&[0x09, 0x00, 12, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]);
        let mut sd = vec![1, 0];
        sd.extend_from_slice(&(SE_SELF_RELATIVE | SE_DACL_PRESENT | 0x0400).to_le_bytes());
        sd.extend_from_slice(&[0; 12]);
        sd.extend_from_slice(&20u32.to_le_bytes());
        sd.extend_from_slice(&[4, 0]);
        sd.extend_from_slice(&u16::try_from(8 + aces.len()).unwrap().to_le_bytes());
        sd.extend_from_slice(&4u16.to_le_bytes());
        sd.extend_from_slice(&[0, 0]);
        sd.extend_from_slice(&aces);
        sd
    }

    #[test]
    fn a_dacl_only_descriptor_parses_and_round_trips_byte_for_byte() {
        let bytes = sample();
        let sd = SecurityDescriptor::parse(&bytes).unwrap();
        assert_eq!(sd.control & SE_DACL_PROTECTED, 0);
        assert_eq!((sd.owner.as_ref(), sd.group.as_ref()), (None, None));
        assert!(sd.sacl.is_none());
        let dacl = sd.dacl.as_ref().unwrap();
        assert_eq!(dacl.revision, 4);
        assert_eq!(dacl.aces.len(), 4);
        assert_eq!(dacl.aces[0].sid(), Some(&sid("S-1-5-18")));
        assert_eq!(dacl.aces[0].mask(), Some(0x000f_01ff));
        assert_eq!(dacl.aces[1].sid(), Some(&sid("S-1-5-21-1-2-3-1105")));
        assert_eq!(
            dacl.aces[1].object_types(),
            (
                Some(guid("00299570-246d-11d0-a768-00aa006e0529")),
                Some(guid("bf967aba-0de6-11d0-a285-00aa003049e2"))
            )
        );
        assert_eq!(
            dacl.aces[2].object_types(),
            (None, Some(guid("bf967aba-0de6-11d0-a285-00aa003049e2")))
        );
        assert!(dacl.aces[2].is_inherited());
        assert!(matches!(dacl.aces[3].body, AceBody::Opaque(ref b) if b.len() == 8));
        assert_eq!(sd.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn a_full_descriptor_round_trips_through_our_own_layout() {
        let mut sd = SecurityDescriptor::parse(&sample()).unwrap();
        sd.owner = Some(sid("S-1-5-21-1-2-3-512"));
        sd.group = Some(sid("S-1-5-32-544"));
        sd.control |= SE_SACL_PRESENT;
        sd.sacl = Some(Acl {
            revision: ACL_REVISION,
            aces: vec![Ace {
                ace_type: SYSTEM_AUDIT,
                flags: 0x40 | 0x80,
                body: AceBody::Basic {
                    mask: 0x2,
                    sid: sid("S-1-1-0"),
                    trailing: vec![0, 0, 0, 0],
                },
            }],
        });
        let bytes = sd.to_bytes().unwrap();
        let again = SecurityDescriptor::parse(&bytes).unwrap();
        assert_eq!(again, sd);
        assert_eq!(again.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn the_protected_bit_is_read_from_the_control_field() {
        // The start of a DACL-only descriptor Samba returned for a user
        // (AQAEhA... = 01 00 04 84): self-relative, DACL present, auto-inherited.
        assert_eq!(dacl_protected(&[0x01, 0x00, 0x04, 0x84, 0, 0]), Some(false));
        assert_eq!(dacl_protected(&[0x01, 0x00, 0x04, 0x94, 0, 0]), Some(true));
        assert_eq!(dacl_protected(&[0x01, 0x00]), None);
        let mut bytes = sample();
        bytes[3] |= 0x10;
        assert_ne!(
            SecurityDescriptor::parse(&bytes).unwrap().control & SE_DACL_PROTECTED,
            0
        );
    }

    #[test]
    fn explicit_aces_go_before_the_inherited_ones() {
        let mut sd = SecurityDescriptor::parse(&sample()).unwrap();
        let dacl = sd.dacl.as_mut().unwrap();
        dacl.revision = ACL_REVISION;
        let ace = Ace::allow_object(
            CONTAINER_INHERIT_ACE,
            0x100,
            Some(guid("ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501")),
            None,
            sid("S-1-5-21-1-2-3-1105"),
        );
        dacl.add_explicit(ace.clone());
        assert_eq!(dacl.revision, ACL_REVISION_DS);
        assert_eq!(dacl.aces[2], ace);
        assert!(dacl.aces[3].is_inherited());
        let bytes = sd.to_bytes().unwrap();
        assert_eq!(SecurityDescriptor::parse(&bytes).unwrap(), sd);
        // An ACL with no inherited ACE: appended.
        let mut acl = Acl {
            revision: ACL_REVISION,
            aces: vec![],
        };
        acl.add_explicit(ace.clone());
        assert_eq!(acl.aces, vec![ace]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            assert!(SecurityDescriptor::parse(cut).is_err(), "len {len}");
            let _ = dacl_protected(cut);
        }
    }

    #[test]
    fn lengths_and_offsets_that_lie_are_errors() {
        let good = sample();
        let with = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            SecurityDescriptor::parse(&b)
        };
        // Not self-relative.
        assert_eq!(with(3, &[0x00]), Err(SdError::NotSelfRelative));
        // The DACL offset points into the header, past the end, near u32::MAX.
        assert!(with(16, &5u32.to_le_bytes()).is_err());
        assert!(with(16, &10_000u32.to_le_bytes()).is_err());
        assert!(with(16, &u32::MAX.to_le_bytes()).is_err());
        // The ACL size is larger than the buffer, or smaller than its header.
        assert!(with(22, &u16::MAX.to_le_bytes()).is_err());
        assert!(with(22, &4u16.to_le_bytes()).is_err());
        // More ACEs than fit.
        assert!(with(24, &5u16.to_le_bytes()).is_err());
        assert!(with(24, &u16::MAX.to_le_bytes()).is_err());
        // An ACE size of 0 (would loop forever) or past the ACL.
        assert!(with(30, &0u16.to_le_bytes()).is_err());
        assert!(with(30, &500u16.to_le_bytes()).is_err());
        // A SID claiming 255 sub-authorities inside an ACE: kept as opaque, not read
        // past the ACE.
        let sd = with(37, &[255]).unwrap();
        assert!(matches!(sd.dacl.unwrap().aces[0].body, AceBody::Opaque(_)));
        // Fewer ACEs than present: the rest is ignored, the parse is fine.
        let sd = with(24, &1u16.to_le_bytes()).unwrap();
        assert_eq!(sd.dacl.unwrap().aces.len(), 1);
        // An owner offset to a truncated SID.
        let mut b = good.clone();
        let at = u32::try_from(b.len()).unwrap();
        b.extend_from_slice(&[1, 5, 0, 0]);
        b[4..8].copy_from_slice(&at.to_le_bytes());
        assert_eq!(
            SecurityDescriptor::parse(&b),
            Err(SdError::Malformed("truncated SID"))
        );
    }

    #[test]
    fn random_bytes_never_panic_and_what_parses_reserialises_stably() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5d);
        let good = sample();
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 2 == 0 {
                // Mutations of a valid descriptor reach deep into the parser.
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                b.truncate(rng.random_range(0..=b.len()));
                b
            } else {
                let len = rng.random_range(0..200);
                (0..len).map(|_| rng.random()).collect()
            };
            let _ = dacl_protected(&bytes);
            if let Ok(sd) = SecurityDescriptor::parse(&bytes) {
                let out = sd.to_bytes().unwrap();
                let again = SecurityDescriptor::parse(&out).unwrap();
                assert_eq!(again, sd, "input {bytes:02x?}");
                assert_eq!(again.to_bytes().unwrap(), out);
            }
        }
    }

    #[test]
    fn an_acl_too_large_for_its_length_field_is_refused() {
        let ace = Ace {
            ace_type: 0x11,
            flags: 0,
            body: AceBody::Opaque(vec![0; 60_000]),
        };
        let sd = SecurityDescriptor {
            revision: 1,
            rm_control: 0,
            control: SE_DACL_PRESENT,
            owner: None,
            group: None,
            sacl: None,
            dacl: Some(Acl {
                revision: ACL_REVISION,
                aces: vec![ace.clone(), ace],
            }),
        };
        assert_eq!(sd.to_bytes(), Err(SdError::TooLarge));
    }
}
