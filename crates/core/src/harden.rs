//! Process hardening every writeback binary applies first: no core dumps. A
//! core file of the control plane, a relay or an agent could hold a password
//! in transit, a private key or a token, so the core size limit is set to 0
//! and the process is marked not dumpable (which also keeps other processes of
//! the same user from attaching to it with ptrace).

/// Turns core dumps off for this process (and the children it starts).
pub fn no_core_dumps() -> Result<(), nix::Error> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_core_file_and_not_dumpable() {
        no_core_dumps().unwrap();
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
