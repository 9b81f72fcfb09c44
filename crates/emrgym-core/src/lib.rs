//! The few primitives every EMRGym layer shares and that must behave the same everywhere:
//! the date parser ([`date`]), the seeded random-number generator ([`rng`]), the topological sort ([`graph`]) and locks
//! that recover from poisoning instead of reading as empty ([`sync`]), FHIR string search's
//! normal form, which the server and the grader must share ([`text`]), and the one write
//! type ([`write`]). It depends on nothing
//! of EMRGym.

pub mod date;
pub mod graph;
pub mod rng;
pub mod sync;
pub mod text;
pub mod write;

pub use graph::topological_order;
pub use rng::{Rng, splitmix64};
pub use write::{Write, WriteKind};

/// Lower-case hexadecimal of `bytes` (digests as they are written in manifests, headers and
/// cassettes).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(super::hex(&[]), "");
    }
}
