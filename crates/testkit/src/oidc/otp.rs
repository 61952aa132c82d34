//! HOTP (RFC 4226) codes and the base32 (RFC 4648) secrets an authenticator
//! app is given, from the OS's random numbers.

use super::*;

pub(super) fn random_bytes<const N: usize>() -> Result<[u8; N], TestkitError> {
    let mut buf = [0u8; N];
    OsRng.try_fill_bytes(&mut buf).map_err(|e| {
        TestkitError::io("read OS randomness", std::io::Error::other(e.to_string()))
    })?;
    Ok(buf)
}

/// RFC 4226 HOTP, 6 digits, HMAC-SHA1.
pub(super) fn hotp_code(secret: &[u8], counter: u64) -> Result<String, TestkitError> {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret)
        .map_err(|e| TestkitError::InvalidInput(format!("hotp secret: {e}")))?;
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    Ok(format!("{:06}", binary % 1_000_000))
}

/// RFC 4648 base32 without padding (glewlwyd's OTP secret format).
pub(super) fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}
